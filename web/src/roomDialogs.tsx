import { useState, type FormEvent } from 'react';
import type { Member, RelayClient, RoomSummary } from 'relay-client';

import { Dialog } from './Dialog';
import { usePeopleSearch } from './dialogs';
import { roomName } from './format';
import { PresenceDot } from './Presence';

interface MembersProps {
  client: RelayClient;
  room: RoomSummary;
  members: Member[];
  isAdmin: boolean;
  onClose(): void;
  onChanged(): void;
  onLeft(): void;
}

export function MembersDialog({ client, room, members, isAdmin, onClose, onChanged, onLeft }: MembersProps) {
  const [q, setQ] = useState('');
  const [error, setError] = useState('');
  const { users } = usePeopleSearch(client, q);
  const me = client.user!;
  const mine = members.find((m) => m.userId === me.id);

  async function act(fn: () => Promise<unknown>) {
    try {
      await fn();
      setError('');
      onChanged();
    } catch (err) {
      setError((err as Error).message);
    }
  }

  return (
    <Dialog title={`Members of ${roomName(room)}`} onClose={onClose}>
      <ul aria-label="Members" className="members">
        {members.map((m) => (
          <li key={m.userId}>
            <PresenceDot client={client} userId={m.userId} />
            <span className="member-name">{m.username}</span>
            <span className="tag">{m.role}</span>
            {isAdmin && m.userId !== me.id && (
              <>
                <button type="button" aria-label={`${m.role === 'admin' ? 'Make member' : 'Make admin'}: ${m.username}`} onClick={() => void act(() => client.api.updateMember(room.id, m.userId, { role: m.role === 'admin' ? 'member' : 'admin' }))}>
                  {m.role === 'admin' ? 'Make member' : 'Make admin'}
                </button>
                <button type="button" aria-label={`Remove ${m.username}`} onClick={() => void act(() => client.api.removeMember(room.id, m.userId))}>
                  Remove
                </button>
              </>
            )}
          </li>
        ))}
      </ul>
      {isAdmin && (
        <>
          <input type="search" aria-label="Add people" placeholder="Add people by username" value={q} onChange={(e) => setQ(e.target.value)} />
          <ul aria-label="People" className="picker">
            {users
              .filter((u) => !members.some((m) => m.userId === u.id))
              .map((u) => (
                <li key={u.id}>
                  <span>{u.username}</span>
                  <button type="button" aria-label={`Add ${u.username}`} onClick={() => void act(() => client.api.addMember(room.id, u.id))}>
                    Add
                  </button>
                </li>
              ))}
          </ul>
        </>
      )}
      <div className="row">
        {mine && (
          <button type="button" onClick={() => void act(() => client.api.updateMember(room.id, me.id, { isMuted: !room.isMuted }))}>
            {room.isMuted ? 'Unmute room' : 'Mute room'}
          </button>
        )}
        <button
          type="button"
          className="danger"
          onClick={() =>
            void act(async () => {
              await client.api.leaveRoom(room.id);
              client.leave(room.id);
              onClose();
              onLeft();
            })
          }
        >
          Leave room
        </button>
      </div>
      {error && <p role="alert" className="error">{error}</p>}
    </Dialog>
  );
}

export function RoomSettings({ client, room, onClose, onChanged }: { client: RelayClient; room: RoomSummary; onClose(): void; onChanged(): void }) {
  const [name, setName] = useState(room.name);
  const [error, setError] = useState('');
  const archived = room.isActive === false;

  async function act(fn: () => Promise<unknown>) {
    try {
      await fn();
      setError('');
      onChanged();
      onClose();
    } catch (err) {
      setError((err as Error).message);
    }
  }

  return (
    <Dialog title="Room settings" onClose={onClose}>
      <form
        className="inline-form"
        onSubmit={(e: FormEvent) => {
          e.preventDefault();
          void act(() => client.api.updateRoom(room.id, { name: name.trim() }));
        }}
      >
        <label>
          Room name
          <input value={name} required maxLength={100} onChange={(e) => setName(e.target.value)} />
        </label>
        <button type="submit">Rename</button>
      </form>
      <button type="button" className={archived ? '' : 'danger'} onClick={() => void act(() => client.api.updateRoom(room.id, { isActive: archived }))}>
        {archived ? 'Unarchive room' : 'Archive room'}
      </button>
      {error && <p role="alert" className="error">{error}</p>}
    </Dialog>
  );
}
