import { useCallback, useEffect, useMemo, useRef, useState } from 'react';
import type { Message, RelayClient, RoomSummary, SearchHit } from 'relay-client';

import { BrowseChannels, NewDirectMessage, NewGroup } from './dialogs';
import { roomName } from './format';
import { useStatus } from './hooks';
import { RoomList } from './RoomList';
import { RoomView } from './RoomView';
import { SearchPanel } from './SearchPanel';

/** How often the room list is read again, to pick up rooms others added us to. */
const ROOMS_REFRESH_MS = 10_000;

type DialogName = 'dm' | 'channels' | 'group' | null;

export function Chat({ client }: { client: RelayClient }) {
  const [rooms, setRooms] = useState<RoomSummary[]>([]);
  const [unread, setUnread] = useState<Record<string, number>>({});
  const [openId, setOpenId] = useState<string | null>(() => new URLSearchParams(location.hash.slice(1)).get('room'));
  const [dialog, setDialog] = useState<DialogName>(null);
  const [jump, setJump] = useState<{ roomId: string; messageId: string; seq: number } | null>(null);
  const [loadError, setLoadError] = useState('');
  const openRef = useRef(openId);
  openRef.current = openId;
  const me = client.user!;
  const { status } = useStatus(client);

  // Join every room the user belongs to, so unread counts of rooms not open
  // rise from live events; lastSeq makes the server replay what came after
  // the list was read, so nothing falls between the two.
  const refreshRooms = useCallback(async (fresh = false) => {
    try {
      const list = await client.api.rooms();
      setLoadError('');
      setRooms(list);
      setUnread((old) => {
        const next: Record<string, number> = {};
        for (const r of list) {
          // The server's count is the truth when it is not behind us.
          const live = client.lastSeq(r.id);
          next[r.id] = r.id === openRef.current ? 0 : live !== undefined && r.lastSeq !== undefined && live > r.lastSeq ? (old[r.id] ?? r.unreadCount) : r.unreadCount;
        }
        return next;
      });
      const ids = new Set(list.map((r) => r.id));
      for (const r of list) {
        const opts: { lastSeq?: number } = {};
        if (typeof r.lastSeq === 'number' && r.lastSeq >= -1) opts.lastSeq = r.lastSeq;
        if (!client.joinedRooms().includes(r.id)) void client.join(r.id, opts);
      }
      for (const id of client.joinedRooms()) if (!ids.has(id)) client.leave(id);
      for (const r of list) {
        const peerId = peerOf(r);
        if (peerId && (!client.presence(peerId) || fresh)) client.loadUserPresence(peerId).catch(() => {});
      }
    } catch (err) {
      setLoadError((err as Error).message);
    }
  }, [client]);

  useEffect(() => {
    client.connect();
    void refreshRooms();
    const t = setInterval(() => void refreshRooms(), ROOMS_REFRESH_MS);
    const offs = [
      client.on('status', (s) => {
        // Pushes sent while we were away are not repeated: read presence again.
        if (s.status === 'open') void refreshRooms(true);
      }),
      client.on('message', (m: Message) => {
        if (m.userId === me.id) return;
        if (m.roomId === openRef.current && document.visibilityState === 'visible') return;
        setUnread((u) => ({ ...u, [m.roomId]: (u[m.roomId] ?? 0) + 1 }));
      }),
      client.on('message_read', (r) => {
        // Read on another device of ours: the count there is the truth.
        if (r.userId === me.id && r.roomId !== openRef.current) void refreshRooms();
      }),
      client.on('room_lost', (e) => {
        setRooms((rs) => rs.filter((r) => r.id !== e.roomId));
        if (openRef.current === e.roomId) setOpenId(null);
      }),
    ];
    return () => {
      clearInterval(t);
      offs.forEach((off) => off());
    };
  }, [client, me.id, refreshRooms]);

  useEffect(() => {
    const h = openId ? `#room=${encodeURIComponent(openId)}` : '';
    if (location.hash !== h) history.replaceState(null, '', h || location.pathname);
  }, [openId]);

  const open = useCallback((roomId: string) => {
    setOpenId(roomId);
    setUnread((u) => ({ ...u, [roomId]: 0 }));
  }, []);

  const openRoom = useCallback(
    async (room: { id: string }) => {
      await refreshRooms();
      open(room.id);
    },
    [open, refreshRooms],
  );

  const current = useMemo(() => rooms.find((r) => r.id === openId) ?? null, [rooms, openId]);

  function jumpTo(hit: SearchHit) {
    open(hit.roomId);
    setJump({ roomId: hit.roomId, messageId: hit.id, seq: hit.seq });
  }

  return (
    <div className="chat">
      <header className="topbar">
        <span className="brand">Relay</span>
        <SearchPanel client={client} rooms={rooms} onJump={jumpTo} />
        <span className="me">
          Signed in as <strong>{me.username}</strong>
        </span>
        <button type="button" onClick={() => void client.signOut()}>
          Sign out
        </button>
      </header>
      <ConnectionBanner status={status} onRetry={() => client.connect()} />
      {loadError && (
        <p role="alert" className="error banner">
          Could not load your rooms: {loadError}
        </p>
      )}
      <div className="layout">
        <aside className="sidebar">
          <div className="actions">
            <button type="button" onClick={() => setDialog('dm')}>
              New direct message
            </button>
            <button type="button" onClick={() => setDialog('channels')}>
              Browse channels
            </button>
            <button type="button" onClick={() => setDialog('group')}>
              New group
            </button>
          </div>
          <RoomList client={client} rooms={rooms} unread={unread} openId={openId} onOpen={open} />
        </aside>
        <main className="main">
          {current ? (
            <RoomView
              key={current.id}
              client={client}
              room={current}
              jump={jump?.roomId === current.id ? jump : null}
              onJumped={() => setJump(null)}
              onRoomChanged={() => void refreshRooms()}
              onLeft={() => {
                setOpenId(null);
                void refreshRooms();
              }}
            />
          ) : (
            <section className="empty" aria-label="No room open">
              <h2>{rooms.length ? 'Pick a room' : 'Welcome to Relay'}</h2>
              <p>Start a direct message, create a group, or browse the public channels.</p>
            </section>
          )}
        </main>
      </div>
      {dialog === 'dm' && <NewDirectMessage client={client} onClose={() => setDialog(null)} onOpen={openRoom} />}
      {dialog === 'channels' && <BrowseChannels client={client} onClose={() => setDialog(null)} onOpen={openRoom} />}
      {dialog === 'group' && <NewGroup client={client} onClose={() => setDialog(null)} onOpen={openRoom} />}
      <title>{titleFor(current, unread)}</title>
    </div>
  );
}

function titleFor(current: RoomSummary | null, unread: Record<string, number>): string {
  const total = Object.values(unread).reduce((a, b) => a + b, 0);
  return `${total ? `(${total}) ` : ''}${current ? `${roomName(current)} · ` : ''}Relay`;
}

export function peerOf(r: RoomSummary): string | undefined {
  if (r.type !== 'direct' || !r.peer) return undefined;
  const p = r.peer as { userId?: string; id?: string };
  return p.userId ?? p.id;
}

/** How long the connection must be down before the banner shows (a token renewal reconnects in milliseconds). */
const BANNER_DELAY_MS = 1000;

function ConnectionBanner({ status, onRetry }: { status: string; onRetry: () => void }) {
  const [late, setLate] = useState(false);
  const down = status === 'reconnecting';
  useEffect(() => {
    if (!down) {
      setLate(false);
      return;
    }
    const t = setTimeout(() => setLate(true), BANNER_DELAY_MS);
    return () => clearTimeout(t);
  }, [down]);
  if (down && late) {
    return (
      <div role="status" className="banner reconnecting">
        Connection lost. Reconnecting… Messages you send now go out once it is back.
      </div>
    );
  }
  if (status === 'stopped') {
    return (
      <div role="alert" className="banner stopped">
        Disconnected.{' '}
        <button type="button" onClick={onRetry}>
          Reconnect
        </button>
      </div>
    );
  }
  return <div role="status" className="banner-placeholder" />;
}
