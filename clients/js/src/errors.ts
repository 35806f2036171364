import type { ErrorCode } from './types.js';

/**
 * An error the server reported (a REST error body or a WebSocket `error`
 * frame), or one the client raises with the same shape. `status` is the
 * HTTP status for REST errors and 0 otherwise.
 */
export class RelayError extends Error {
  readonly code: ErrorCode;
  readonly status: number;

  constructor(code: ErrorCode, message: string, status = 0) {
    super(message);
    this.name = 'RelayError';
    this.code = code;
    this.status = status;
  }
}

/** Codes after which the same request may succeed later (protocol.md, Error codes). */
const RETRIABLE = new Set<string>(['CONFLICT', 'RATE_LIMITED', 'SERVER_FULL', 'UNAVAILABLE', 'INTERNAL']);

/** Whether a send that failed with code should be retried with the same clientMsgId. */
export function isRetriable(code: ErrorCode): boolean {
  return RETRIABLE.has(code);
}

/** Reads a REST error body ({"error":{"code","message"}}); anything else becomes a generic error. */
export function errorFromBody(status: number, body: unknown): RelayError {
  const e = (body as { error?: { code?: unknown; message?: unknown } } | null)?.error;
  if (e && typeof e.code === 'string') {
    return new RelayError(e.code, typeof e.message === 'string' ? e.message : e.code, status);
  }
  const code = status === 401 ? 'UNAUTHORIZED' : status === 404 ? 'NOT_FOUND' : status >= 500 ? 'UNAVAILABLE' : 'BAD_REQUEST';
  return new RelayError(code, `HTTP ${status}`, status);
}
