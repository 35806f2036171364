// RelayClient: one signed-in user's connection to Relay. It owns the
// session (Auth), the REST API (Api) and one WebSocket that it keeps open:
// reconnecting with full-jitter backoff as the close code says, rejoining
// every room with the last seq it has (the server replays what was missed),
// repairing gaps it notices from prevSeq, and resending unacked messages
// with the same clientMsgId until the server stores them once.

import { Auth, MemoryTokenStore, type Fetch, type TokenStore } from './auth.js';
import { closeAction, reconnectDelay, type BackoffOptions, type CloseAction } from './backoff.js';
import { SeqCursor } from './cursor.js';
import { Emitter } from './emitter.js';
import { RelayError, isRetriable } from './errors.js';
import { TokenBucket } from './ratelimit.js';
import { Api } from './rest.js';
import { Timeline } from './timeline.js';
import { TypingNotifier } from './typing.js';
import {
  LOG_EVENTS,
  type Frame,
  type JoinAck,
  type LogEventName,
  type LogEvents,
  type Message,
  type MessageAck,
  type MessageType,
  type PresenceUpdate,
  type PrivateUser,
  type ReadAck,
  type ResyncRequired,
  type SendAck,
  type Session,
  type Typing,
} from './types.js';

/** The connection's state, for a status line or a reconnect banner. */
export type ConnectionStatus =
  /** not asked to connect (or signed out) */
  | 'idle'
  /** opening the first connection */
  | 'connecting'
  | 'open'
  /** the connection dropped; a new one is on its way (see delayMs) */
  | 'reconnecting'
  /** the server refused for good (see the error event); connect() tries again */
  | 'stopped';

export interface StatusEvent {
  status: ConnectionStatus;
  /** reconnect attempts since the last stable connection */
  attempt: number;
  /** for reconnecting: the wait before the next attempt */
  delayMs?: number;
  /** the close code that ended the last connection */
  closeCode?: number;
}

export interface ClientEvents extends LogEvents {
  status: StatusEvent;
  typing: Typing;
  presence_update: PresenceUpdate;
  resync_required: ResyncRequired;
  /** a room's timeline changed (messages, edits, pending sends) */
  timeline: { roomId: string };
  /** the room was (re)joined on the connection */
  joined: { roomId: string; lastSeq: number | null };
  /** the server refused a room for good (no longer a member, or gone) */
  room_lost: { roomId: string; error: RelayError };
  /** a send was refused for good; retry() sends it again */
  send_failed: { roomId: string; clientMsgId: string; error: RelayError };
  /** errors not tied to a call: error frames without ref, refused joins, auth failures */
  error: RelayError;
  /** signed in, refreshed, or signed out (null) */
  session: Session | null;
}

export interface RelayClientOptions {
  /** Origin of the API, e.g. "http://localhost:3000"; empty means the page's own origin. */
  baseUrl?: string;
  /** WebSocket URL; by default derived from baseUrl (or the page's origin) + "/ws". */
  wsUrl?: string;
  /** Where the session is kept; default in memory. Browsers: new StorageTokenStore(). */
  tokenStore?: TokenStore;
  /** fetch implementation; default globalThis.fetch. */
  fetch?: Fetch;
  /** WebSocket constructor; default globalThis.WebSocket. */
  WebSocket?: WebSocketCtor;
  /** Reconnect backoff; zero values take protocol.md's (0.5 s base, 30 s cap, 1 s after a restart). */
  backoff?: BackoffOptions;
  /** Application ping interval (browsers cannot see protocol pings); default 30 s. */
  pingIntervalMs?: number;
  /** A ping unanswered this long means the connection is dead; default 10 s. */
  pingTimeoutMs?: number;
  /** A connection up this long resets the backoff; default 30 s. */
  stableAfterMs?: number;
  /** History page size; default 50. */
  pageSize?: number;
  /** Outgoing frames per second and burst; default 15 and 40 (the server allows 20 and 50). */
  frameRate?: { perSec: number; burst: number };
}

export type WebSocketCtor = new (url: string) => WebSocketLike;

/** The part of the WebSocket API the client uses (browsers' and Node.js's both fit). */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export interface SendOptions {
  type?: MessageType;
  metadata?: Record<string, unknown>;
  /** Idempotency key; generated when not given. */
  clientMsgId?: string;
}

interface Call {
  resolve(data: unknown): void;
  reject(err: RelayError): void;
  /** runs synchronously when the ack is read, before later frames (resolve runs a microtask later) */
  onAck?: (data: unknown) => void;
}

interface OutboxEntry {
  roomId: string;
  clientMsgId: string;
  data: Record<string, unknown>;
  attempts: number;
  ref?: string;
  retryTimer?: ReturnType<typeof setTimeout>;
  waiters: { resolve(m: Message): void; reject(e: RelayError): void }[];
}

interface Typist {
  username: string;
  timer: ReturnType<typeof setTimeout>;
}

const OPEN = 1;
const CONNECTION_LOST = 'connection closed before the reply';
const NOT_CONNECTED = 'not connected';

/** Whether a call failed because the connection was not there (not a refusal by the server). */
function isConnectionLoss(e: RelayError): boolean {
  return e.code === 'UNAVAILABLE' && (e.message === CONNECTION_LOST || e.message === NOT_CONNECTED);
}
/** A typist whose stop we never got is dropped after this (the server's TTL is 5 s). */
const TYPIST_TTL_MS = 7000;

export class RelayClient extends Emitter<ClientEvents> {
  /** The REST API with this client's session. */
  readonly api: Api;
  /** The session: sign-in, sign-up, refresh, sign-out. */
  readonly auth: Auth;

  private readonly opts: Required<Pick<RelayClientOptions, 'pingIntervalMs' | 'pingTimeoutMs' | 'stableAfterMs' | 'pageSize'>> & RelayClientOptions;
  private readonly WS: WebSocketCtor;
  private readonly wsUrl: string;

  private ws: WebSocketLike | null = null;
  private wanted = false;
  private closingByClient = false;
  private statusValue: StatusEvent = { status: 'idle', attempt: 0 };
  private attempt = 0;
  private preOpenFailures = 0;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private stableTimer: ReturnType<typeof setTimeout> | undefined;
  private pingTimer: ReturnType<typeof setInterval> | undefined;
  private refs = 0;
  private calls = new Map<string, Call>();
  private queue: string[] = [];
  private queueTimer: ReturnType<typeof setTimeout> | undefined;
  private bucket: TokenBucket;

  private rooms = new Set<string>();
  private joinWaiters = new Map<string, { resolve(a: JoinAck): void; reject(e: RelayError): void }[]>();
  private cursors = new Map<string, SeqCursor>();
  private timelines = new Map<string, Timeline>();
  private loading = new Map<string, Promise<boolean>>();
  private outbox = new Map<string, OutboxEntry>();
  private readers = new Map<string, Map<string, number>>();
  private myRead = new Map<string, number>();
  private typists = new Map<string, Map<string, Typist>>();
  private presenceMap = new Map<string, PresenceUpdate>();
  private presencePushes = 0;
  private presencePushedAt = new Map<string, number>();
  private typingOut: TypingNotifier;
  private unsubscribeAuth: () => void;
  private onOnline = () => {
    // The network is back: skip the rest of the backoff.
    if (this.wanted && this.reconnectTimer !== undefined) {
      clearTimeout(this.reconnectTimer);
      this.reconnectTimer = undefined;
      void this.open();
    }
  };

  constructor(options: RelayClientOptions = {}) {
    super();
    this.opts = {
      pingIntervalMs: 30_000,
      pingTimeoutMs: 10_000,
      stableAfterMs: 30_000,
      pageSize: 50,
      ...options,
    };
    const fetchFn = options.fetch ?? globalThis.fetch.bind(globalThis);
    const base = (options.baseUrl ?? '').replace(/\/+$/, '');
    this.auth = new Auth(base, options.tokenStore ?? new MemoryTokenStore(), fetchFn);
    this.api = new Api(base, this.auth, fetchFn);
    const WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketCtor }).WebSocket;
    if (!WS) throw new Error('relay-client: no WebSocket implementation (pass options.WebSocket)');
    this.WS = WS;
    this.wsUrl = options.wsUrl ?? deriveWsUrl(base);
    const rate = options.frameRate ?? { perSec: 15, burst: 40 };
    this.bucket = new TokenBucket(rate.perSec, rate.burst);
    this.typingOut = new TypingNotifier((event, roomId) => {
      // Typing is best effort: a refused or lost one just lapses.
      this.call(event, { roomId }).catch(() => {});
    });
    this.unsubscribeAuth = this.auth.onChange((s) => {
      this.emit('session', s);
      if (!s) this.stop('idle');
    });
    (globalThis as { addEventListener?: (t: string, f: () => void) => void }).addEventListener?.('online', this.onOnline);
  }

  // ----------------------------------------------------------- session

  /** The signed-in user, or null. */
  get user(): PrivateUser | null {
    return this.auth.session?.user ?? null;
  }

  signIn(login: string, password: string): Promise<Session> {
    return this.auth.signIn(login, password);
  }

  signUp(input: { username: string; email: string; password: string; displayName?: string }): Promise<Session> {
    return this.auth.signUp(input);
  }

  /** Closes the connection, revokes the refresh token and forgets everything of this user. */
  async signOut(): Promise<void> {
    this.stop('idle');
    this.reset();
    await this.auth.signOut();
  }

  // -------------------------------------------------------- connection

  get status(): StatusEvent {
    return this.statusValue;
  }

  /** Opens the WebSocket and keeps it open until disconnect() or sign-out. */
  connect(): void {
    if (this.wanted && this.statusValue.status !== 'stopped') return;
    this.wanted = true;
    this.attempt = 0;
    this.setStatus({ status: 'connecting', attempt: 0 });
    void this.open();
  }

  /** Closes the WebSocket and stops reconnecting. Rooms, timelines and unsent messages are kept for connect(). */
  disconnect(): void {
    this.stop('idle');
  }

  /** disconnect(), and drops every listener (e.g. when a component unmounts). */
  close(): void {
    this.stop('idle');
    this.unsubscribeAuth();
    (globalThis as { removeEventListener?: (t: string, f: () => void) => void }).removeEventListener?.('online', this.onOnline);
  }

  private stop(status: 'idle' | 'stopped', closeCode?: number): void {
    this.wanted = false;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    const ws = this.ws;
    if (ws) {
      this.closingByClient = true;
      this.detach(ws);
      try {
        ws.close(1000, 'client closed');
      } catch {
        // already closed
      }
      this.connectionLost();
    }
    const ev: StatusEvent = { status, attempt: this.attempt };
    if (closeCode !== undefined) ev.closeCode = closeCode;
    this.setStatus(ev);
  }

  private reset(): void {
    for (const e of this.outbox.values()) clearTimeout(e.retryTimer);
    this.outbox.clear();
    this.rooms.clear();
    this.cursors.clear();
    this.timelines.clear();
    this.readers.clear();
    this.myRead.clear();
    this.presenceMap.clear();
    this.clearTypists();
  }

  private setStatus(s: StatusEvent): void {
    this.statusValue = s;
    this.emit('status', s);
  }

  private async open(): Promise<void> {
    this.reconnectTimer = undefined;
    if (!this.wanted) return;
    let token: string;
    try {
      token = await this.auth.accessToken();
    } catch (err) {
      const e = asRelayError(err);
      if (e.code === 'UNAUTHORIZED') {
        this.emit('error', e);
        this.stop('stopped');
        return;
      }
      this.scheduleReconnect('backoff');
      return;
    }
    if (!this.wanted) return;
    const sep = this.wsUrl.includes('?') ? '&' : '?';
    let ws: WebSocketLike;
    try {
      ws = new this.WS(`${this.wsUrl}${sep}token=${encodeURIComponent(token)}`);
    } catch (err) {
      this.emit('error', new RelayError('BAD_REQUEST', `cannot open ${this.wsUrl}: ${(err as Error).message}`));
      this.stop('stopped');
      return;
    }
    this.ws = ws;
    this.closingByClient = false;
    let opened = false;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      opened = true;
      this.preOpenFailures = 0;
      this.bucket.reset();
      this.setStatus({ status: 'open', attempt: this.attempt });
      clearTimeout(this.stableTimer);
      this.stableTimer = setTimeout(() => {
        this.attempt = 0;
      }, this.opts.stableAfterMs);
      this.startPing(ws);
      for (const roomId of this.rooms) this.sendJoin(roomId);
      for (const entry of this.outbox.values()) if (entry.retryTimer === undefined) this.transmit(entry);
    };
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      this.onFrame(ev.data);
    };
    ws.onerror = () => {
      // Browsers follow an error with a close event, which decides. Some
      // implementations (Node.js 20's) do not after a failed handshake, so
      // one is made up when none came.
      setTimeout(() => {
        if (this.ws === ws && ws.onclose) ws.onclose({ code: 1006, reason: 'connection failed' });
      }, opened ? 1000 : 0);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      try {
        if (!opened) ws.close();
      } catch {
        // not open: nothing to close
      }
      this.detach(ws);
      this.connectionLost();
      const action = closeAction(ev.code, this.closingByClient);
      if (!opened) {
        // A refused upgrade shows as 1006 in browsers: the token may be bad.
        // A REST call tells (401 refreshes, a failed refresh signs out).
        this.preOpenFailures++;
        if (this.preOpenFailures >= 2) this.api.me().catch(() => {});
      }
      if (action === 'stop') {
        this.emit('error', new RelayError('FORBIDDEN', `connection closed by the server (${ev.code} ${ev.reason})`));
        this.stop('stopped', ev.code);
        return;
      }
      this.scheduleReconnect(action, ev.code);
    };
  }

  private scheduleReconnect(action: CloseAction, closeCode?: number): void {
    if (!this.wanted) return;
    if (action === 'reauth') {
      const stale = this.auth.session?.token;
      this.setStatus({ status: 'reconnecting', attempt: this.attempt, delayMs: 0, ...(closeCode !== undefined ? { closeCode } : {}) });
      this.auth.refresh(stale).then(
        () => void this.open(),
        (err) => {
          const e = asRelayError(err);
          if (e.code === 'UNAUTHORIZED') {
            this.emit('error', e);
            this.stop('stopped', closeCode);
          } else {
            this.scheduleReconnect('backoff', closeCode);
          }
        },
      );
      return;
    }
    const delayMs = reconnectDelay(action, this.attempt, this.opts.backoff);
    if (action === 'backoff') this.attempt++;
    const ev: StatusEvent = { status: 'reconnecting', attempt: this.attempt, delayMs };
    if (closeCode !== undefined) ev.closeCode = closeCode;
    this.setStatus(ev);
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => void this.open(), delayMs);
  }

  private detach(ws: WebSocketLike): void {
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
    if (this.ws === ws) this.ws = null;
  }

  /** Everything tied to the old connection ends with it. */
  private connectionLost(): void {
    clearInterval(this.pingTimer);
    clearTimeout(this.stableTimer);
    clearTimeout(this.queueTimer);
    this.queueTimer = undefined;
    this.queue = [];
    const lost = new RelayError('UNAVAILABLE', CONNECTION_LOST);
    const calls = [...this.calls.values()];
    this.calls.clear();
    for (const c of calls) c.reject(lost);
    // Sends stay in the outbox and go again on the next connection.
    for (const e of this.outbox.values()) delete e.ref;
    this.typingOut.reset();
    this.clearTypists();
  }

  private startPing(ws: WebSocketLike): void {
    clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => {
      const timeout = setTimeout(() => {
        if (this.ws !== ws) return;
        // Silent connection: treat as a network failure.
        this.detach(ws);
        try {
          ws.close(4100, 'ping timeout');
        } catch {
          // ignore
        }
        this.connectionLost();
        this.scheduleReconnect('backoff', 1006);
      }, this.opts.pingTimeoutMs);
      this.call('ping', {}).then(
        () => clearTimeout(timeout),
        () => clearTimeout(timeout),
      );
    }, this.opts.pingIntervalMs);
  }

  // ------------------------------------------------------------ frames

  /** Sends a frame with a ref and resolves with the ack's data (rejects with the error frame's). */
  call<T = unknown>(event: string, data: Record<string, unknown>): Promise<T> {
    return this.callRef<T>(event, data).promise;
  }

  private callRef<T>(event: string, data: Record<string, unknown>, onAck?: (data: T) => void): { ref: string; promise: Promise<T> } {
    const ws = this.ws;
    const ref = `r${++this.refs}`;
    if (!ws || ws.readyState !== OPEN) return { ref, promise: Promise.reject(new RelayError('UNAVAILABLE', NOT_CONNECTED)) };
    const promise = new Promise<T>((resolve, reject) => {
      const call: Call = { resolve: resolve as (d: unknown) => void, reject };
      if (onAck) call.onAck = onAck as (d: unknown) => void;
      this.calls.set(ref, call);
      this.write({ event, data, ref });
    });
    return { ref, promise };
  }

  private write(frame: Frame): void {
    this.queue.push(JSON.stringify(frame));
    this.drain();
  }

  private drain(): void {
    if (this.queueTimer !== undefined) return;
    while (this.queue.length) {
      const ws = this.ws;
      if (!ws || ws.readyState !== OPEN) {
        this.queue = [];
        return;
      }
      const wait = this.bucket.take();
      if (wait > 0) {
        this.queueTimer = setTimeout(() => {
          this.queueTimer = undefined;
          this.drain();
        }, wait);
        return;
      }
      ws.send(this.queue.shift()!);
    }
  }

  private onFrame(raw: unknown): void {
    if (typeof raw !== 'string') return;
    let f: Frame;
    try {
      f = JSON.parse(raw) as Frame;
    } catch {
      return;
    }
    if (!f || typeof f.event !== 'string') return;
    if (typeof f.ref === 'string') {
      const c = this.calls.get(f.ref);
      if (c) {
        this.calls.delete(f.ref);
        if (f.event === 'error') {
          const d = (f.data ?? {}) as { code?: string; message?: string };
          c.reject(new RelayError(d.code ?? 'INTERNAL', d.message ?? 'error'));
        } else {
          c.onAck?.(f.data ?? {});
          c.resolve(f.data ?? {});
        }
      }
      return;
    }
    const d = (f.data ?? {}) as Record<string, unknown>;
    if ((LOG_EVENTS as readonly string[]).includes(f.event)) {
      this.onLogEvent(f.event as LogEventName, d);
      return;
    }
    switch (f.event) {
      case 'typing':
        this.onTyping(d as unknown as Typing);
        return;
      case 'presence_update':
        this.setPresence(d as unknown as PresenceUpdate);
        return;
      case 'resync_required':
        this.onResync(d as unknown as ResyncRequired);
        return;
      case 'error':
        this.emit('error', new RelayError(String(d.code ?? 'INTERNAL'), String(d.message ?? 'error')));
        return;
      default:
      // Newer servers may push events this client does not know: ignore.
    }
  }

  private onLogEvent(name: LogEventName, d: Record<string, unknown>): void {
    const roomId = d.roomId;
    const seq = d.seq;
    if (typeof roomId !== 'string' || typeof seq !== 'number') return;
    const cursor = this.cursors.get(roomId);
    if (!cursor) return; // a room left meanwhile
    const prev = typeof d.prevSeq === 'number' ? d.prevSeq : undefined;
    const verdict = cursor.accept(seq, prev);
    switch (verdict) {
      case 'duplicate':
      case 'hold':
        return;
      case 'gap':
        // Missed events: rejoin with the last seq; the replay includes this one.
        this.sendJoin(roomId);
        return;
      case 'rebase': {
        const from = cursor.rebaseFrom;
        this.apply(name, d);
        if (from !== undefined) void this.fillFromRest(roomId, from);
        return;
      }
      case 'apply':
        this.apply(name, d);
    }
  }

  private apply(name: LogEventName, d: Record<string, unknown>): void {
    const roomId = d.roomId as string;
    switch (name) {
      case 'message': {
        const m = d as unknown as Message;
        this.timeline(roomId).upsert(m);
        if (m.clientMsgId && m.userId === this.user?.id) this.settle(m.clientMsgId, m);
        this.emit('timeline', { roomId });
        break;
      }
      case 'message_edited':
        this.timeline(roomId).applyEdit(d as unknown as LogEvents['message_edited']);
        this.emit('timeline', { roomId });
        break;
      case 'message_deleted':
        this.timeline(roomId).applyDelete(d as unknown as LogEvents['message_deleted']);
        this.emit('timeline', { roomId });
        break;
      case 'message_read': {
        const r = d as unknown as LogEvents['message_read'];
        const map = this.readersOf(roomId);
        if ((map.get(r.userId) ?? -1) < r.readSeq) map.set(r.userId, r.readSeq);
        if (r.userId === this.user?.id && (this.myRead.get(roomId) ?? -1) < r.readSeq) this.myRead.set(roomId, r.readSeq);
        break;
      }
      default:
        break;
    }
    this.emit(name, d as never);
  }

  // ------------------------------------------------------------- rooms

  /**
   * Receives a room's events on the connection, now and after every
   * reconnect. lastSeq (the newest seq you have, e.g. from GET /api/rooms;
   * -1 for everything) makes the server replay what came after it; without
   * it live events start at the join. Resolves with the ack once the room is
   * joined (on the next connection when not connected); rejects when the
   * server refuses the room.
   */
  join(roomId: string, opts: { lastSeq?: number } = {}): Promise<JoinAck> {
    this.rooms.add(roomId);
    if (!this.cursors.has(roomId)) this.cursors.set(roomId, new SeqCursor(opts.lastSeq));
    const joined = new Promise<JoinAck>((resolve, reject) => {
      const list = this.joinWaiters.get(roomId) ?? [];
      list.push({ resolve, reject });
      this.joinWaiters.set(roomId, list);
    });
    joined.catch(() => {}); // also reported as room_lost
    // Not connected: the join goes out (and resolves) on the next connection.
    if (this.ws?.readyState === OPEN) void this.sendJoin(roomId);
    return joined;
  }

  /** Stops receiving a room on the connection (membership does not change). */
  leave(roomId: string): void {
    this.rooms.delete(roomId);
    this.cursors.delete(roomId);
    this.typingOut.reset(roomId);
    const waiters = this.joinWaiters.get(roomId) ?? [];
    this.joinWaiters.delete(roomId);
    for (const w of waiters) w.reject(new RelayError('BAD_REQUEST', 'left before the join completed'));
    this.call('leave_room', { roomId }).catch(() => {});
  }

  /** Rooms joined (or to be joined on connect). */
  joinedRooms(): string[] {
    return [...this.rooms];
  }

  /** The seq of the newest event of a room this client has applied. */
  lastSeq(roomId: string): number | undefined {
    return this.cursors.get(roomId)?.last;
  }

  private sendJoin(roomId: string): Promise<JoinAck | null> {
    const cursor = this.cursors.get(roomId);
    if (!cursor) return Promise.resolve(null);
    const sent = cursor.last;
    cursor.startRepair();
    const data: Record<string, unknown> = { roomId };
    if (sent !== undefined) data.lastSeq = sent;
    // The cursor must leave its repair state before the replay that
    // follows the ack is read, so this runs synchronously with the ack.
    const onAck = (ack: JoinAck) => {
      if (this.cursors.get(roomId) !== cursor) return;
      cursor.joined(ack.lastSeq, sent);
      const waiters = this.joinWaiters.get(roomId) ?? [];
      this.joinWaiters.delete(roomId);
      for (const w of waiters) w.resolve(ack);
      this.emit('joined', { roomId, lastSeq: ack.lastSeq });
    };
    return this.callRef<JoinAck>('join_room', data, onAck).promise.then(
      (ack) => ack,
      (err) => {
        const e = asRelayError(err);
        if (this.cursors.get(roomId) !== cursor) return null;
        if (isConnectionLoss(e)) return null; // rejoined on open
        if (isRetriable(e.code)) {
          setTimeout(() => {
            if (this.cursors.get(roomId) === cursor && this.ws?.readyState === OPEN) void this.sendJoin(roomId);
          }, 1000);
          return null;
        }
        this.rooms.delete(roomId);
        this.cursors.delete(roomId);
        const waiters = this.joinWaiters.get(roomId) ?? [];
        this.joinWaiters.delete(roomId);
        for (const w of waiters) w.reject(e);
        this.emit('room_lost', { roomId, error: e });
        return null;
      },
    );
  }

  private onResync(r: ResyncRequired): void {
    const cursor = this.cursors.get(r.roomId);
    if (!cursor) return;
    this.emit('resync_required', r);
    if (r.retryAfterMs !== undefined && r.retryAfterMs > 0) {
      cursor.resync(r.fromSeq, true);
      setTimeout(() => {
        if (this.cursors.get(r.roomId) === cursor) void this.sendJoin(r.roomId);
      }, r.retryAfterMs);
      return;
    }
    cursor.resync(r.fromSeq, false);
    void this.fillFromRest(r.roomId, r.fromSeq);
  }

  /** Reads the messages after seq `after` over REST, all pages, into the timeline. */
  private async fillFromRest(roomId: string, after: number): Promise<void> {
    let cursor = after;
    for (let page = 0, failures = 0; page < 100; ) {
      try {
        const p = await this.api.history(roomId, { after: cursor, limit: 200 });
        this.timeline(roomId).mergePage(p.messages);
        this.emit('timeline', { roomId });
        if (!p.hasMore || p.nextAfter === null) return;
        cursor = p.nextAfter;
        page++;
      } catch (err) {
        if (++failures > 5) {
          this.emit('error', asRelayError(err));
          return;
        }
        await sleep(500 * failures);
      }
    }
  }

  // ---------------------------------------------------------- timeline

  /** The room's messages (created empty on first use; live events fill it). */
  timeline(roomId: string): Timeline {
    let t = this.timelines.get(roomId);
    if (!t) {
      t = new Timeline();
      this.timelines.set(roomId, t);
    }
    return t;
  }

  /** Loads the newest history page of a room into its timeline (merged with what live events brought). */
  loadLatest(roomId: string): Promise<boolean> {
    return this.load(roomId, undefined);
  }

  /** Loads the page before the oldest message held; resolves whether even older ones exist. */
  loadOlder(roomId: string): Promise<boolean> {
    const t = this.timeline(roomId);
    if (!t.loaded) return this.loadLatest(roomId);
    if (!t.hasMoreOlder) return Promise.resolve(false);
    return this.load(roomId, t.oldestSeq);
  }

  private load(roomId: string, before: number | undefined): Promise<boolean> {
    const key = `${roomId}:${before ?? 'latest'}`;
    const inflight = this.loading.get(key);
    if (inflight) return inflight;
    const p = (async () => {
      const q: { before?: number; limit: number } = { limit: this.opts.pageSize };
      if (before !== undefined) q.before = before;
      const page = await this.api.history(roomId, q);
      const t = this.timeline(roomId);
      t.mergePage(page.messages, { older: true, hasMore: page.hasMore });
      this.emit('timeline', { roomId });
      return page.hasMore;
    })().finally(() => this.loading.delete(key));
    this.loading.set(key, p);
    return p;
  }

  // ------------------------------------------------------------- sends

  /**
   * Sends a message. It shows in the room's timeline at once as pending,
   * goes out now or on the next connection, and is resent with the same
   * clientMsgId until the server stores it (once). Resolves with the stored
   * message; rejects when the server refuses it for good (the pending entry
   * then shows failed; retry() sends it again).
   */
  send(roomId: string, content: string, opts: SendOptions = {}): { clientMsgId: string; stored: Promise<Message> } {
    const clientMsgId = opts.clientMsgId ?? newClientMsgId();
    const data: Record<string, unknown> = { roomId, content, clientMsgId };
    if (opts.type) data.type = opts.type;
    if (opts.metadata) data.metadata = opts.metadata;
    const me = this.user;
    const pending = {
      clientMsgId,
      roomId,
      userId: me?.id ?? '',
      username: me?.username ?? '',
      content,
      type: opts.type ?? 'text',
      createdAt: new Date().toISOString(),
      state: 'sending' as const,
      ...(opts.metadata ? { metadata: opts.metadata } : {}),
    };
    this.timeline(roomId).addPending(pending);
    this.emit('timeline', { roomId });
    // The server ends our typing on an acked send from this connection.
    this.typingOut.reset(roomId);
    const stored = this.enqueue({ roomId, clientMsgId, data, attempts: 0, waiters: [] });
    stored.catch(() => {}); // callers may ignore it; the failure is also an event
    return { clientMsgId, stored };
  }

  /** Sends a failed (or still pending) message again, with its clientMsgId. */
  retry(roomId: string, clientMsgId: string): Promise<Message> {
    const existing = this.outbox.get(clientMsgId);
    if (existing) {
      clearTimeout(existing.retryTimer);
      delete existing.retryTimer;
      if (existing.ref === undefined) this.transmit(existing);
      return new Promise((resolve, reject) => existing.waiters.push({ resolve, reject }));
    }
    const t = this.timeline(roomId);
    const p = t.getPending(clientMsgId);
    if (!p) return Promise.reject(new RelayError('NOT_FOUND', 'no such pending message'));
    t.updatePending(clientMsgId, { state: 'sending' });
    this.emit('timeline', { roomId });
    const data: Record<string, unknown> = { roomId, content: p.content, clientMsgId, type: p.type };
    if (p.metadata) data.metadata = p.metadata;
    return this.enqueue({ roomId, clientMsgId, data, attempts: 0, waiters: [] });
  }

  /** Gives up a pending or failed message: it leaves the timeline (a copy already stored stays stored). */
  discard(roomId: string, clientMsgId: string): void {
    const e = this.outbox.get(clientMsgId);
    if (e) {
      clearTimeout(e.retryTimer);
      this.outbox.delete(clientMsgId);
      for (const w of e.waiters) w.reject(new RelayError('BAD_REQUEST', 'discarded'));
    }
    this.timeline(roomId).removePending(clientMsgId);
    this.emit('timeline', { roomId });
  }

  /** Messages sent and not yet stored (all rooms). */
  unsent(): { roomId: string; clientMsgId: string }[] {
    return [...this.outbox.values()].map((e) => ({ roomId: e.roomId, clientMsgId: e.clientMsgId }));
  }

  private enqueue(entry: OutboxEntry): Promise<Message> {
    this.outbox.set(entry.clientMsgId, entry);
    const p = new Promise<Message>((resolve, reject) => entry.waiters.push({ resolve, reject }));
    this.transmit(entry);
    return p;
  }

  private transmit(entry: OutboxEntry): void {
    delete entry.retryTimer;
    if (this.ws?.readyState !== OPEN || this.outbox.get(entry.clientMsgId) !== entry) return;
    entry.attempts++;
    const { ref, promise: p } = this.callRef<SendAck>('send_message', entry.data);
    entry.ref = ref;
    p.then(
      (ack) => {
        const me = this.user;
        const m: Message = {
          id: ack.id,
          roomId: ack.roomId,
          userId: me?.id ?? '',
          username: me?.username ?? '',
          content: entry.data.content as string,
          type: (entry.data.type as MessageType | undefined) ?? 'text',
          clientMsgId: entry.clientMsgId,
          seq: ack.seq,
          createdAt: ack.createdAt,
        };
        if (entry.data.metadata) m.metadata = entry.data.metadata as Record<string, unknown>;
        const t = this.timeline(entry.roomId);
        // The push may have brought it already (with later edits applied).
        if (!t.get(m.id)) t.upsert(m);
        else t.removePending(entry.clientMsgId);
        this.emit('timeline', { roomId: entry.roomId });
        this.settle(entry.clientMsgId, t.get(m.id) ?? m);
      },
      (err) => {
        const e = asRelayError(err);
        if (entry.ref !== ref && entry.ref !== undefined) return; // superseded by a resend
        delete entry.ref;
        if (this.outbox.get(entry.clientMsgId) !== entry) return;
        if (isConnectionLoss(e)) return; // resent on open
        if (isRetriable(e.code)) {
          const delay = Math.min(10_000, 500 * 2 ** Math.min(entry.attempts, 5)) * (0.5 + Math.random() / 2);
          entry.retryTimer = setTimeout(() => this.transmit(entry), delay);
          return;
        }
        this.outbox.delete(entry.clientMsgId);
        this.timeline(entry.roomId).updatePending(entry.clientMsgId, { state: 'failed', error: { code: e.code, message: e.message } });
        this.emit('timeline', { roomId: entry.roomId });
        this.emit('send_failed', { roomId: entry.roomId, clientMsgId: entry.clientMsgId, error: e });
        for (const w of entry.waiters) w.reject(e);
      },
    );
  }

  private settle(clientMsgId: string, m: Message): void {
    const e = this.outbox.get(clientMsgId);
    if (!e) return;
    clearTimeout(e.retryTimer);
    this.outbox.delete(clientMsgId);
    for (const w of e.waiters) w.resolve(m);
  }

  /** Edits one of your messages. */
  edit(roomId: string, messageId: string, content: string): Promise<MessageAck> {
    return this.call<MessageAck>('edit_message', { roomId, messageId, content });
  }

  /** Deletes a message (yours, or any as a room admin). */
  delete(roomId: string, messageId: string): Promise<MessageAck> {
    return this.call<MessageAck>('delete_message', { roomId, messageId });
  }

  /** Records that you read the room up to seq (only forwards; repeats are not sent). */
  async markRead(roomId: string, seq: number): Promise<void> {
    if ((this.myRead.get(roomId) ?? -1) >= seq) return;
    this.myRead.set(roomId, seq);
    try {
      await this.call<ReadAck>('mark_read', { roomId, seq });
    } catch (err) {
      // Not recorded: let a later call try again.
      if ((this.myRead.get(roomId) ?? -1) === seq) this.myRead.delete(roomId);
      throw err;
    }
  }

  /** Your read position in a room, as far as this client knows. */
  readSeq(roomId: string): number | undefined {
    return this.myRead.get(roomId);
  }

  /** Sets the read positions known from REST (members' lastReadSeq); later receipts only move them forward. */
  setReaders(roomId: string, positions: { userId: string; lastReadSeq: number }[]): void {
    const map = this.readersOf(roomId);
    for (const p of positions) {
      if ((map.get(p.userId) ?? -1) < p.lastReadSeq) map.set(p.userId, p.lastReadSeq);
      if (p.userId === this.user?.id && (this.myRead.get(roomId) ?? -1) < p.lastReadSeq) this.myRead.set(roomId, p.lastReadSeq);
    }
  }

  /** Who has read a room up to which seq (read receipts). */
  readPositions(roomId: string): ReadonlyMap<string, number> {
    return this.readersOf(roomId);
  }

  private readersOf(roomId: string): Map<string, number> {
    let m = this.readers.get(roomId);
    if (!m) {
      m = new Map();
      this.readers.set(roomId, m);
    }
    return m;
  }

  // ------------------------------------------------- typing & presence

  /** Call on each keystroke in a room's composer: sends typing_start and renews it while typing continues. */
  startTyping(roomId: string): void {
    this.typingOut.keystroke(roomId);
  }

  /** The user stopped typing (cleared the input, left the room). */
  stopTyping(roomId: string): void {
    this.typingOut.stop(roomId);
  }

  /** Others typing in a room now. */
  typingUsers(roomId: string): { userId: string; username: string }[] {
    const m = this.typists.get(roomId);
    return m ? [...m].map(([userId, t]) => ({ userId, username: t.username })) : [];
  }

  /** A user's presence as last pushed or loaded. */
  presence(userId: string): PresenceUpdate | undefined {
    return this.presenceMap.get(userId);
  }

  /** Loads the presence of a room's members and who types there (after joining or reconnecting). */
  async loadPresence(roomId: string): Promise<void> {
    const before = this.presencePushes;
    const p = await this.api.roomPresence(roomId);
    for (const m of p.online) {
      // A push that arrived while the request was out is newer than its answer.
      if ((this.presencePushedAt.get(m.userId) ?? 0) > before) continue;
      this.setPresence({ userId: m.userId, status: m.status, lastSeen: m.lastSeen }, false);
    }
    for (const t of p.typing) {
      if (t.userId !== this.user?.id) this.onTyping({ roomId, userId: t.userId, username: t.username, typing: true });
    }
  }

  /** Loads one user's presence over REST (e.g. a direct room's peer). */
  async loadUserPresence(userId: string): Promise<PresenceUpdate | undefined> {
    const before = this.presencePushes;
    const p = await this.api.userPresence(userId);
    if ((this.presencePushedAt.get(userId) ?? 0) <= before) this.setPresence(p, false);
    return this.presenceMap.get(userId);
  }

  private setPresence(p: PresenceUpdate, pushed = true): void {
    if (pushed) this.presencePushedAt.set(p.userId, ++this.presencePushes);
    this.presenceMap.set(p.userId, p);
    this.emit('presence_update', p);
  }

  private onTyping(t: Typing): void {
    if (t.userId === this.user?.id) return;
    let m = this.typists.get(t.roomId);
    if (!m) {
      m = new Map();
      this.typists.set(t.roomId, m);
    }
    const old = m.get(t.userId);
    if (old) clearTimeout(old.timer);
    if (t.typing) {
      // Safety net: a stop lost with a connection must not leave a typist forever.
      const timer = setTimeout(() => {
        if (m!.get(t.userId)?.timer === timer) {
          m!.delete(t.userId);
          this.emit('typing', { ...t, typing: false });
        }
      }, TYPIST_TTL_MS);
      m.set(t.userId, { username: t.username, timer });
    } else {
      m.delete(t.userId);
    }
    this.emit('typing', t);
  }

  private clearTypists(): void {
    for (const [roomId, m] of this.typists) {
      for (const [userId, t] of m) {
        clearTimeout(t.timer);
        this.emit('typing', { roomId, userId, username: t.username, typing: false });
      }
    }
    this.typists.clear();
  }
}

function asRelayError(err: unknown): RelayError {
  if (err instanceof RelayError) return err;
  return new RelayError('INTERNAL', err instanceof Error ? err.message : String(err));
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The gateway URL for an API origin: http(s)://host → ws(s)://host/ws; empty → the page's origin. */
export function deriveWsUrl(baseUrl: string): string {
  if (baseUrl) return baseUrl.replace(/^http/, 'ws') + '/ws';
  const loc = (globalThis as { location?: { protocol: string; host: string } }).location;
  if (!loc) throw new Error('relay-client: baseUrl or wsUrl is required outside a browser');
  return `${loc.protocol === 'https:' ? 'wss:' : 'ws:'}//${loc.host}/ws`;
}

/** A fresh idempotency key (a UUID: 36 visible ASCII characters). */
export function newClientMsgId(): string {
  const c = globalThis.crypto;
  if (c?.randomUUID) return c.randomUUID();
  const b = new Uint8Array(16);
  c.getRandomValues(b);
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
}
