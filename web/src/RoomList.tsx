import type { RelayClient, RoomSummary } from 'relay-client';

import { peerOf } from './Chat';
import { roomName } from './format';
import { PresenceDot } from './Presence';

interface Props {
  client: RelayClient;
  rooms: RoomSummary[];
  unread: Record<string, number>;
  openId: string | null;
  onOpen(roomId: string): void;
}

const GROUPS: { type: RoomSummary['type']; label: string }[] = [
  { type: 'channel', label: 'Channels' },
  { type: 'group', label: 'Groups' },
  { type: 'direct', label: 'Direct messages' },
];

export function RoomList({ client, rooms, unread, openId, onOpen }: Props) {
  return (
    <nav aria-label="Rooms" className="rooms">
      {rooms.length === 0 && <p className="muted">No rooms yet.</p>}
      {GROUPS.map(({ type, label }) => {
        const list = rooms.filter((r) => r.type === type);
        if (!list.length) return null;
        return (
          <section key={type} aria-label={label}>
            <h2>{label}</h2>
            <ul>
              {list.map((r) => {
                const n = unread[r.id] ?? 0;
                const name = roomName(r);
                const peer = peerOf(r);
                return (
                  <li key={r.id}>
                    <a
                      href={`#room=${encodeURIComponent(r.id)}`}
                      aria-current={r.id === openId ? 'page' : undefined}
                      className={`room${n ? ' has-unread' : ''}${r.isActive === false ? ' archived' : ''}`}
                      onClick={(e) => {
                        e.preventDefault();
                        onOpen(r.id);
                      }}
                    >
                      {peer && <PresenceDot client={client} userId={peer} />}
                      <span className="room-name">{name}</span>
                      {r.isActive === false && <span className="tag">archived</span>}
                      {n > 0 && (
                        <span className="badge" aria-label={`${n} unread`}>
                          {n > 99 ? '99+' : n}
                        </span>
                      )}
                    </a>
                  </li>
                );
              })}
            </ul>
          </section>
        );
      })}
    </nav>
  );
}
