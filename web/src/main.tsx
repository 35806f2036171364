import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { RelayClient, StorageTokenStore } from 'relay-client';

import { App } from './App';
import './styles.css';

// One client (one WebSocket) for the page; the session is kept in
// localStorage so a reload stays signed in and tabs share it (refreshes are
// serialised across tabs by the client).
const client = new RelayClient({ tokenStore: new StorageTokenStore(localStorage, 'relay.session') });

createRoot(document.getElementById('root')!).render(
  <StrictMode>
    <App client={client} />
  </StrictMode>,
);
