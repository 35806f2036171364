// Reconnect policy of docs/protocol.md (Reconnecting, Close codes), kept
// pure so it can be tested without a socket.

/** What to do after the connection closed with a given code. */
export type CloseAction =
  /** reconnect at once, with up to 1 s of jitter (the server restarted) */
  | 'reconnect-now'
  /** reconnect after a full-jitter backoff delay */
  | 'backoff'
  /** get a new access token first, then reconnect */
  | 'reauth'
  /** do not reconnect: the client closed, or the server refuses for good */
  | 'stop';

/**
 * Maps a WebSocket close code to the action protocol.md prescribes:
 * 1012 (restart) reconnects now; 4001 (token expired) re-authenticates;
 * 1008 (policy) and 1003 (unsupported data) stop, since retrying the same
 * thing cannot help; 1000 stops when the client itself closed; every other
 * code (1006 network, 1011, 1013, 4000 slow consumer, 1002 and 1009
 * protocol violations, 1001 going away) backs off and reconnects.
 */
export function closeAction(code: number, closedByClient: boolean): CloseAction {
  if (closedByClient) return 'stop';
  switch (code) {
    case 1012:
      return 'reconnect-now';
    case 4001:
      return 'reauth';
    case 1003:
    case 1008:
      return 'stop';
    default:
      return 'backoff';
  }
}

/** Backoff settings; zero values take the protocol's defaults. */
export interface BackoffOptions {
  /** first delay ceiling; default 500 ms */
  baseMs?: number;
  /** largest delay ceiling; default 30 s */
  maxMs?: number;
  /** jitter ceiling after a 1012 restart; default 1 s */
  restartJitterMs?: number;
}

/**
 * Full-jitter exponential backoff: a uniform random delay in
 * [0, min(max, base × 2^attempt)). random is injectable for tests.
 */
export function backoffDelay(attempt: number, opts: BackoffOptions = {}, random: () => number = Math.random): number {
  const base = opts.baseMs || 500;
  const max = opts.maxMs || 30_000;
  const ceiling = Math.min(max, base * 2 ** Math.min(Math.max(attempt, 0), 30));
  return Math.floor(random() * ceiling);
}

/** Delay before reconnecting for an action (and attempt count). */
export function reconnectDelay(action: CloseAction, attempt: number, opts: BackoffOptions = {}, random: () => number = Math.random): number {
  if (action === 'reconnect-now') return Math.floor(random() * (opts.restartJitterMs || 1000));
  if (action === 'reauth') return 0;
  return backoffDelay(attempt, opts, random);
}
