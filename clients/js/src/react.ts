// relay-client/react: the seed's useChat(roomId) hook on RelayClient, with
// what the seed's lacked: a token, resume after reconnects, errors, and the
// state of sends.
//
//   const chat = useChat(roomId, { token });          // its own connection
//   <RelayProvider client={client}> ... useChat(roomId)  // a shared one

import { createContext, createElement, useCallback, useContext, useEffect, useMemo, useRef, useState, useSyncExternalStore, type ReactNode } from 'react';

import { MemoryTokenStore, sessionFromToken } from './auth.js';
import { RelayClient, type ConnectionStatus, type RelayClientOptions, type SendOptions } from './client.js';
import type { RelayError } from './errors.js';
import type { TimelineItem } from './timeline.js';

const RelayContext = createContext<RelayClient | null>(null);

/** Makes client the one useChat uses below it (one connection for the whole app). */
export function RelayProvider(props: { client: RelayClient; children?: ReactNode }) {
  return createElement(RelayContext.Provider, { value: props.client }, props.children);
}

/** The client of the nearest RelayProvider, or null. */
export function useRelayClient(): RelayClient | null {
  return useContext(RelayContext);
}

export interface UseChatOptions extends Pick<RelayClientOptions, 'baseUrl' | 'wsUrl' | 'WebSocket' | 'fetch'> {
  /** Use this client instead of the RelayProvider's. */
  client?: RelayClient;
  /** With no client: an access token; the hook opens its own connection with it. */
  token?: string;
  /** Resume from this seq on the first join (the server replays what came after it). */
  lastSeq?: number;
  /** Load the newest history page when the room opens; default true. */
  history?: boolean;
}

export interface UseChat {
  /** Stored messages in seq order, then your pending sends. */
  messages: readonly TimelineItem[];
  /** Usernames of the others typing now (the seed's shape). */
  typing: string[];
  /** The others typing now, with ids. */
  typingUsers: { userId: string; username: string }[];
  /** Sends a message; returns its clientMsgId (the pending entry's key). */
  sendMessage(content: string, opts?: SendOptions): string;
  /** The same as sendMessage. */
  send(content: string, opts?: SendOptions): string;
  /** Call on each keystroke; renews typing while it continues and stops after a pause. */
  startTyping(): void;
  stopTyping(): void;
  /** Sends a failed message again (same clientMsgId). */
  retry(clientMsgId: string): void;
  edit(messageId: string, content: string): Promise<unknown>;
  remove(messageId: string): Promise<unknown>;
  /** Marks the room read up to seq (default: the newest message). */
  markRead(seq?: number): void;
  /** Loads an older history page; resolves whether more exist. */
  loadOlder(): Promise<boolean>;
  hasMoreOlder: boolean;
  /** The connection's state ('open', 'reconnecting', ...). */
  status: ConnectionStatus;
  /** The newest error (a refused send, a lost room, a failed load); null when none. */
  error: RelayError | Error | null;
  /** The client, for everything else (presence, receipts, REST). */
  client: RelayClient | null;
}

/**
 * Joins roomId for as long as the component is mounted and returns its
 * messages, typing users and actions. It resumes by itself after reconnects
 * (rejoin with the last seq) and never shows a message twice.
 */
export function useChat(roomId: string, opts: UseChatOptions = {}): UseChat {
  const shared = useContext(RelayContext);
  const { token, baseUrl, wsUrl } = opts;
  const WS = opts.WebSocket;
  const fetchFn = opts.fetch;
  const own = useMemo(() => {
    if (opts.client || shared || !token) return null;
    const o: RelayClientOptions = { tokenStore: new MemoryTokenStore(sessionFromToken(token)) };
    if (baseUrl !== undefined) o.baseUrl = baseUrl;
    if (wsUrl !== undefined) o.wsUrl = wsUrl;
    if (WS) o.WebSocket = WS;
    if (fetchFn) o.fetch = fetchFn;
    return new RelayClient(o);
  }, [opts.client, shared, token, baseUrl, wsUrl, WS, fetchFn]);
  const client = opts.client ?? shared ?? own;

  useEffect(() => {
    if (!own) return;
    own.connect();
    return () => own.close();
  }, [own]);

  const [error, setError] = useState<RelayError | Error | null>(null);
  const lastSeqRef = useRef(opts.lastSeq);
  lastSeqRef.current = opts.lastSeq;
  const wantHistory = opts.history !== false;

  useEffect(() => {
    if (!client || !roomId) return;
    setError(null);
    const joinOpts: { lastSeq?: number } = {};
    if (lastSeqRef.current !== undefined) joinOpts.lastSeq = lastSeqRef.current;
    void client.join(roomId, joinOpts);
    if (wantHistory && !client.timeline(roomId).loaded) client.loadLatest(roomId).catch(setError);
    const offs = [
      client.on('send_failed', (e) => e.roomId === roomId && setError(e.error)),
      client.on('room_lost', (e) => e.roomId === roomId && setError(e.error)),
    ];
    return () => {
      for (const off of offs) off();
      client.stopTyping(roomId);
    };
  }, [client, roomId, wantHistory]);

  const subscribe = useCallback(
    (notify: () => void) => {
      if (!client) return () => {};
      const offs = [
        client.on('timeline', (e) => e.roomId === roomId && notify()),
        client.on('typing', (e) => e.roomId === roomId && notify()),
        client.on('status', notify),
      ];
      return () => offs.forEach((off) => off());
    },
    [client, roomId],
  );
  // Snapshots must be stable between changes: the timeline's items() is
  // cached per version; typing and status are keyed by a string.
  const messages = useSyncExternalStore(subscribe, () => (client && roomId ? client.timeline(roomId).items() : EMPTY));
  const typingKey = useSyncExternalStore(subscribe, () => (client && roomId ? JSON.stringify(client.typingUsers(roomId)) : '[]'));
  const status = useSyncExternalStore(subscribe, () => client?.status.status ?? 'idle');
  const typingUsers = useMemo(() => JSON.parse(typingKey) as { userId: string; username: string }[], [typingKey]);
  const hasMoreOlder = client && roomId ? client.timeline(roomId).hasMoreOlder : false;

  const sendMessage = useCallback(
    (content: string, sendOpts?: SendOptions) => {
      if (!client) throw new Error('useChat: no client (pass a token, a client, or use RelayProvider)');
      return client.send(roomId, content, sendOpts).clientMsgId;
    },
    [client, roomId],
  );

  return {
    messages,
    typing: typingUsers.map((t) => t.username),
    typingUsers,
    sendMessage,
    send: sendMessage,
    startTyping: useCallback(() => client?.startTyping(roomId), [client, roomId]),
    stopTyping: useCallback(() => client?.stopTyping(roomId), [client, roomId]),
    retry: useCallback((id: string) => void client?.retry(roomId, id).catch(() => {}), [client, roomId]),
    edit: useCallback((id: string, content: string) => (client ? client.edit(roomId, id, content) : Promise.reject(new Error('no client'))), [client, roomId]),
    remove: useCallback((id: string) => (client ? client.delete(roomId, id) : Promise.reject(new Error('no client'))), [client, roomId]),
    markRead: useCallback(
      (seq?: number) => {
        if (!client) return;
        const s = seq ?? client.timeline(roomId).newestSeq;
        if (s !== undefined) client.markRead(roomId, s).catch(() => {});
      },
      [client, roomId],
    ),
    loadOlder: useCallback(() => (client ? client.loadOlder(roomId) : Promise.resolve(false)), [client, roomId]),
    hasMoreOlder,
    status,
    error,
    client,
  };
}

const EMPTY: readonly TimelineItem[] = [];
