import type { RelayClient } from 'relay-client';

import { lastSeen } from './format';
import { usePresence, useTick } from './hooks';

/** A dot for online/offline, with the state as its accessible name. */
export function PresenceDot({ client, userId }: { client: RelayClient; userId: string }) {
  const p = usePresence(client, userId);
  const online = p?.status === 'online';
  const label = online ? 'online' : p ? `offline, ${lastSeen(p.lastSeen)}` : 'presence unknown';
  return <span className={`dot ${online ? 'online' : 'offline'}`} role="img" aria-label={label} title={label} />;
}

/** "online" or "last seen 5 minutes ago". */
export function PresenceText({ client, userId }: { client: RelayClient; userId: string }) {
  useTick(30_000);
  const p = usePresence(client, userId);
  if (!p) return null;
  return <span className="presence-text">{p.status === 'online' ? 'online' : lastSeen(p.lastSeen)}</span>;
}
