import { useEffect, useState, type FormEvent } from 'react';
import type { ChannelEntry, RelayClient, Room, UserHit } from 'relay-client';

import { Dialog } from './Dialog';
import { useDebounced } from './hooks';

interface OpenProps {
  client: RelayClient;
  onClose(): void;
  onOpen(room: Room): void | Promise<void>;
}

/** Users whose name starts with what was typed (not the caller). */
export function usePeopleSearch(client: RelayClient, q: string): { users: UserHit[]; error: string; busy: boolean } {
  const term = useDebounced(q.trim(), 200);
  const [state, set] = useState<{ users: UserHit[]; error: string; busy: boolean }>({ users: [], error: '', busy: false });
  useEffect(() => {
    if (!term) {
      set({ users: [], error: '', busy: false });
      return;
    }
    let live = true;
    set((s) => ({ ...s, busy: true }));
    client.api.searchUsers(term, 20).then(
      (users) => live && set({ users: users.filter((u) => u.id !== client.user?.id), error: '', busy: false }),
      (err: Error) => live && set({ users: [], error: err.message, busy: false }),
    );
    return () => {
      live = false;
    };
  }, [client, term]);
  return state;
}

export function NewDirectMessage({ client, onClose, onOpen }: OpenProps) {
  const [q, setQ] = useState('');
  const [error, setError] = useState('');
  const { users, error: searchError, busy } = usePeopleSearch(client, q);
  async function start(u: UserHit) {
    try {
      const room = await client.api.directRoom(u.id);
      onClose();
      await onOpen(room);
    } catch (err) {
      setError((err as Error).message);
    }
  }
  return (
    <Dialog title="New direct message" onClose={onClose}>
      <input type="search" aria-label="Find people" placeholder="Find people by username" autoFocus value={q} onChange={(e) => setQ(e.target.value)} />
      <ul aria-label="People" className="picker" aria-busy={busy}>
        {users.map((u) => (
          <li key={u.id}>
            <button type="button" onClick={() => void start(u)}>
              {u.username}
              {u.displayName && u.displayName !== u.username && <span className="muted"> {u.displayName}</span>}
            </button>
          </li>
        ))}
      </ul>
      {q.trim() && !busy && !users.length && !searchError && <p className="muted">Nobody found.</p>}
      {(error || searchError) && <p role="alert" className="error">{error || searchError}</p>}
    </Dialog>
  );
}

export function BrowseChannels({ client, onClose, onOpen }: OpenProps) {
  const [q, setQ] = useState('');
  const term = useDebounced(q.trim(), 200);
  const [channels, setChannels] = useState<ChannelEntry[]>([]);
  const [cursor, setCursor] = useState<string | null>(null);
  const [error, setError] = useState('');
  const [name, setName] = useState('');

  useEffect(() => {
    let live = true;
    client.api.channels({ q: term, limit: 50 }).then(
      (p) => {
        if (!live) return;
        setChannels(p.channels);
        setCursor(p.nextCursor ?? null);
      },
      (err: Error) => live && setError(err.message),
    );
    return () => {
      live = false;
    };
  }, [client, term]);

  async function more() {
    if (!cursor) return;
    try {
      const p = await client.api.channels({ q: term, limit: 50, cursor });
      setChannels((c) => [...c, ...p.channels]);
      setCursor(p.nextCursor ?? null);
    } catch (err) {
      setError((err as Error).message);
    }
  }

  async function join(c: ChannelEntry) {
    try {
      const room = c.joined ? await client.api.room(c.id) : await client.api.joinRoom(c.id);
      onClose();
      await onOpen(room);
    } catch (err) {
      setError((err as Error).message);
    }
  }

  async function create(e: FormEvent) {
    e.preventDefault();
    try {
      const room = await client.api.createRoom({ type: 'channel', name: name.trim() });
      onClose();
      await onOpen(room);
    } catch (err) {
      setError((err as Error).message);
    }
  }

  return (
    <Dialog title="Browse channels" onClose={onClose}>
      <input type="search" aria-label="Filter channels" placeholder="Filter channels" value={q} onChange={(e) => setQ(e.target.value)} />
      <ul aria-label="Channels" className="picker">
        {channels.map((c) => (
          <li key={c.id}>
            <span className="channel-name">#{c.name}</span>
            <span className="muted">
              {c.memberCount} member{c.memberCount === 1 ? '' : 's'}
            </span>
            <button type="button" onClick={() => void join(c)} aria-label={`${c.joined ? 'Open' : 'Join'} ${c.name}`}>
              {c.joined ? 'Open' : 'Join'}
            </button>
          </li>
        ))}
      </ul>
      {!channels.length && <p className="muted">No channels{term ? ' match' : ' yet'}.</p>}
      {cursor && (
        <button type="button" onClick={() => void more()}>
          More channels
        </button>
      )}
      <form onSubmit={create} className="inline-form">
        <label>
          Channel name
          <input value={name} required maxLength={100} onChange={(e) => setName(e.target.value)} />
        </label>
        <button type="submit">Create channel</button>
      </form>
      {error && <p role="alert" className="error">{error}</p>}
    </Dialog>
  );
}

export function NewGroup({ client, onClose, onOpen }: OpenProps) {
  const [name, setName] = useState('');
  const [q, setQ] = useState('');
  const [picked, setPicked] = useState<UserHit[]>([]);
  const [error, setError] = useState('');
  const { users } = usePeopleSearch(client, q);

  async function create(e: FormEvent) {
    e.preventDefault();
    try {
      const room = await client.api.createRoom({ type: 'group', name: name.trim(), memberIds: picked.map((u) => u.id) });
      onClose();
      await onOpen(room);
    } catch (err) {
      setError((err as Error).message);
    }
  }

  return (
    <Dialog title="New group" onClose={onClose}>
      <form onSubmit={create}>
        <label>
          Group name
          <input value={name} required maxLength={100} onChange={(e) => setName(e.target.value)} />
        </label>
        <input type="search" aria-label="Find people" placeholder="Add people by username" value={q} onChange={(e) => setQ(e.target.value)} />
        <ul aria-label="People" className="picker">
          {users
            .filter((u) => !picked.some((p) => p.id === u.id))
            .map((u) => (
              <li key={u.id}>
                <span>{u.username}</span>
                <button type="button" aria-label={`Add ${u.username}`} onClick={() => setPicked((p) => [...p, u])}>
                  Add
                </button>
              </li>
            ))}
        </ul>
        {picked.length > 0 && (
          <ul aria-label="Members to add" className="chips">
            {picked.map((u) => (
              <li key={u.id}>
                {u.username}
                <button type="button" aria-label={`Remove ${u.username}`} onClick={() => setPicked((p) => p.filter((x) => x.id !== u.id))}>
                  ×
                </button>
              </li>
            ))}
          </ul>
        )}
        <button type="submit">Create group</button>
      </form>
      {error && <p role="alert" className="error">{error}</p>}
    </Dialog>
  );
}
