import { useCallback, useEffect, useLayoutEffect, useMemo, useReducer, useRef, useState } from 'react';
import type { Member, RelayClient, RoomSummary } from 'relay-client';
import { useChat } from 'relay-client/react';

import { peerOf } from './Chat';
import { Composer } from './Composer';
import { roomName } from './format';
import { useStatus } from './hooks';
import { MessageItem } from './MessageItem';
import { PresenceDot, PresenceText } from './Presence';
import { MembersDialog, RoomSettings } from './roomDialogs';

interface Props {
  client: RelayClient;
  room: RoomSummary;
  jump: { messageId: string; seq: number } | null;
  onJumped(): void;
  onRoomChanged(): void;
  onLeft(): void;
}

/** Pixels from the bottom within which the view follows new messages. */
const STICK_PX = 80;
/** Pixels from the top at which older history is loaded. */
const LOAD_PX = 200;

export function RoomView({ client, room, jump, onJumped, onRoomChanged, onLeft }: Props) {
  const chat = useChat(room.id);
  const me = client.user!;
  const { status } = useStatus(client);
  const [members, setMembers] = useState<Member[]>([]);
  const [, bumpReads] = useReducer((x: number) => x + 1, 0);
  const [dialog, setDialog] = useState<'members' | 'settings' | null>(null);
  const [highlight, setHighlight] = useState<string | null>(null);
  const [loadingOlder, setLoadingOlder] = useState(false);
  const listRef = useRef<HTMLUListElement>(null);
  const atBottom = useRef(true);
  const restore = useRef<{ height: number; top: number } | null>(null);
  const isAdmin = (room.myRole ?? room.role) === 'admin';
  const archived = room.isActive === false;
  const peer = peerOf(room);
  const name = roomName(room);

  const loadMembers = useCallback(async () => {
    try {
      const ms = await client.api.members(room.id);
      setMembers(ms);
      client.setReaders(room.id, ms);
      bumpReads();
    } catch {
      // Shown as no receipts; the next event or reopen tries again.
    }
  }, [client, room.id]);

  useEffect(() => {
    void loadMembers();
    const offs = [
      client.on('message_read', (r) => r.roomId === room.id && bumpReads()),
      client.on('user_joined', (e) => e.roomId === room.id && void loadMembers()),
      client.on('user_left', (e) => e.roomId === room.id && void loadMembers()),
    ];
    return () => offs.forEach((off) => off());
  }, [client, room.id, loadMembers]);

  // Presence and typists of the room: now, and again after each reconnect
  // (pushes sent while away are not repeated).
  useEffect(() => {
    if (status === 'open') client.loadPresence(room.id).catch(() => {});
  }, [client, room.id, status]);

  // Read up to the newest message while it is on screen.
  const newestSeq = useMemo(() => {
    for (let i = chat.messages.length - 1; i >= 0; i--) {
      const m = chat.messages[i]!;
      if (!m.pending) return m.seq;
    }
    return undefined;
  }, [chat.messages]);
  const markRead = chat.markRead;
  const markIfVisible = useCallback(() => {
    if (newestSeq !== undefined && atBottom.current && document.visibilityState === 'visible' && document.hasFocus()) markRead(newestSeq);
  }, [newestSeq, markRead]);
  useEffect(() => {
    markIfVisible();
    const onVis = () => markIfVisible();
    document.addEventListener('visibilitychange', onVis);
    window.addEventListener('focus', onVis);
    return () => {
      document.removeEventListener('visibilitychange', onVis);
      window.removeEventListener('focus', onVis);
    };
  }, [markIfVisible]);

  // Scrolling: follow new messages when at the bottom; keep the position
  // when older ones are added above.
  useLayoutEffect(() => {
    const el = listRef.current;
    if (!el) return;
    if (restore.current) {
      el.scrollTop = restore.current.top + (el.scrollHeight - restore.current.height);
      restore.current = null;
    } else if (atBottom.current && !jump) {
      el.scrollTop = el.scrollHeight;
    }
  }, [chat.messages, jump]);

  const loadOlder = useCallback(async () => {
    const el = listRef.current;
    if (!el || loadingOlder || !chat.hasMoreOlder) return;
    setLoadingOlder(true);
    restore.current = { height: el.scrollHeight, top: el.scrollTop };
    try {
      await chat.loadOlder();
    } catch {
      restore.current = null;
    } finally {
      setLoadingOlder(false);
    }
  }, [chat, loadingOlder]);

  function onScroll() {
    const el = listRef.current!;
    atBottom.current = el.scrollHeight - el.scrollTop - el.clientHeight < STICK_PX;
    if (el.scrollTop < LOAD_PX) void loadOlder();
    markIfVisible();
  }

  // Fill the view: a first page shorter than the screen cannot be scrolled up.
  useEffect(() => {
    const el = listRef.current;
    if (el && chat.hasMoreOlder && el.scrollHeight <= el.clientHeight && chat.messages.length > 0) void loadOlder();
  }, [chat.hasMoreOlder, chat.messages.length, loadOlder]);

  // Jump to a search hit: page back until it is loaded, then show it.
  useEffect(() => {
    if (!jump) return;
    let live = true;
    (async () => {
      const t = client.timeline(room.id);
      for (let i = 0; i < 40 && live && !t.get(jump.messageId); i++) {
        if (!t.loaded) await client.loadLatest(room.id);
        else if (!t.hasMoreOlder || (t.oldestSeq !== undefined && t.oldestSeq <= jump.seq)) break;
        else await client.loadOlder(room.id);
      }
      if (!live) return;
      requestAnimationFrame(() => {
        const el = document.getElementById(`msg-${jump.messageId}`);
        if (el) {
          atBottom.current = false;
          el.scrollIntoView({ block: 'center' });
          el.focus({ preventScroll: true });
          setHighlight(jump.messageId);
          setTimeout(() => setHighlight((h) => (h === jump.messageId ? null : h)), 4000);
        }
        onJumped();
      });
    })().catch(() => onJumped());
    return () => {
      live = false;
    };
  }, [client, room.id, jump, onJumped]);

  // Read receipts: each other member is shown under the newest message of
  // someone else that their read position has reached (recomputed on each
  // render: receipts re-render through bumpReads).
  const readBy = (() => {
    const out = new Map<string, string[]>();
    const stored = chat.messages.filter((m) => !m.pending);
    for (const [userId, seq] of client.readPositions(room.id)) {
      if (userId === me.id) continue;
      let at: string | undefined;
      for (const m of stored) {
        if (m.pending || m.seq > seq) break;
        if (m.userId !== userId && !m.isDeleted) at = m.id;
      }
      if (!at) continue;
      const who = members.find((x) => x.userId === userId)?.username ?? `user ${userId}`;
      out.set(at, [...(out.get(at) ?? []), who]);
    }
    return out;
  })();

  const typing = chat.typing;

  return (
    <section className="room-view" aria-labelledby="room-title">
      <header className="room-header">
        <h1 id="room-title">
          {peer && <PresenceDot client={client} userId={peer} />} {room.type === 'channel' ? `#${name}` : name}
        </h1>
        {peer ? <PresenceText client={client} userId={peer} /> : <span className="muted">{members.length || room.memberCount || 0} members</span>}
        {archived && <span className="tag">archived</span>}
        <span className="spacer" />
        {room.type !== 'direct' && (
          <button type="button" onClick={() => setDialog('members')}>
            Members
          </button>
        )}
        {room.type !== 'direct' && isAdmin && (
          <button type="button" onClick={() => setDialog('settings')}>
            Room settings
          </button>
        )}
      </header>
      <ul className="messages" aria-label="Messages" ref={listRef} onScroll={onScroll} tabIndex={0}>
        {chat.hasMoreOlder && (
          <li className="older" aria-hidden={loadingOlder ? undefined : true}>
            <button type="button" tabIndex={-1} onClick={() => void loadOlder()} disabled={loadingOlder}>
              {loadingOlder ? 'Loading older messages…' : 'Load older messages'}
            </button>
          </li>
        )}
        {!chat.hasMoreOlder && chat.messages.length > 0 && <li className="start muted">This is the start of {name}.</li>}
        {chat.messages.map((m) => (
          <MessageItem
            key={m.pending ? `p:${m.clientMsgId}` : m.id}
            client={client}
            item={m}
            mine={m.userId === me.id}
            canDelete={isAdmin && room.type !== 'direct'}
            readBy={m.pending ? NONE : (readBy.get(m.id) ?? NONE)}
            highlighted={!m.pending && highlight === m.id}
            onEdit={chat.edit}
            onDelete={chat.remove}
            onRetry={chat.retry}
            onDiscard={(id) => client.discard(room.id, id)}
          />
        ))}
      </ul>
      <p className="typing" aria-live="polite">
        {typing.length === 1 ? `${typing[0]} is typing…` : typing.length > 1 ? `${typing.join(', ')} are typing…` : ''}
      </p>
      {chat.error && (
        <p role="alert" className="error">
          {chat.error.message}
        </p>
      )}
      <Composer
        client={client}
        roomId={room.id}
        disabled={archived}
        send={(content, opts) => {
          atBottom.current = true;
          chat.sendMessage(content, opts);
        }}
        startTyping={chat.startTyping}
        stopTyping={chat.stopTyping}
      />
      {dialog === 'members' && (
        <MembersDialog
          client={client}
          room={room}
          members={members}
          isAdmin={isAdmin}
          onClose={() => setDialog(null)}
          onChanged={() => {
            void loadMembers();
            onRoomChanged();
          }}
          onLeft={onLeft}
        />
      )}
      {dialog === 'settings' && <RoomSettings client={client} room={room} onClose={() => setDialog(null)} onChanged={onRoomChanged} />}
    </section>
  );
}

const NONE: string[] = [];
