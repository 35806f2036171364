import { useEffect, useState } from 'react';
import type { RelayClient, Session } from 'relay-client';
import { RelayProvider } from 'relay-client/react';

import { AuthScreen } from './AuthScreen';
import { Chat } from './Chat';

export function App({ client }: { client: RelayClient }) {
  const [session, setSession] = useState<Session | null>(client.auth.session);
  useEffect(() => client.on('session', setSession), [client]);
  // Only whether someone is signed in (and who) changes the screen, not each refresh.
  const userId = session?.user.id;
  if (!userId) return <AuthScreen client={client} />;
  return (
    <RelayProvider client={client}>
      <Chat key={userId} client={client} />
    </RelayProvider>
  );
}
