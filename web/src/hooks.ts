import { useEffect, useReducer, useState } from 'react';
import type { ConnectionStatus, PresenceUpdate, RelayClient } from 'relay-client';

/** The connection's status, live. */
export function useStatus(client: RelayClient): { status: ConnectionStatus; delayMs?: number } {
  const [s, set] = useState(client.status);
  useEffect(() => client.on('status', set), [client]);
  return s;
}

/** A user's presence, live (undefined until known). */
export function usePresence(client: RelayClient, userId: string | undefined): PresenceUpdate | undefined {
  const [, bump] = useReducer((x: number) => x + 1, 0);
  useEffect(() => {
    if (!userId) return;
    return client.on('presence_update', (p) => p.userId === userId && bump());
  }, [client, userId]);
  return userId ? client.presence(userId) : undefined;
}

/** Re-renders every ms (for "last seen 3 minutes ago"). */
export function useTick(ms: number): void {
  const [, bump] = useReducer((x: number) => x + 1, 0);
  useEffect(() => {
    const t = setInterval(bump, ms);
    return () => clearInterval(t);
  }, [ms]);
}

/** Runs fn, debounced, whenever value changes. */
export function useDebounced<T>(value: T, ms: number): T {
  const [v, set] = useState(value);
  useEffect(() => {
    const t = setTimeout(() => set(value), ms);
    return () => clearTimeout(t);
  }, [value, ms]);
  return v;
}
