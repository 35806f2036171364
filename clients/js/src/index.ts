// relay-client: the TypeScript client of Relay's native WebSocket protocol
// and REST API. No framework dependency; the React hook is in
// relay-client/react.

export { RelayClient, deriveWsUrl, newClientMsgId } from './client.js';
export type {
  ClientEvents,
  ConnectionStatus,
  RelayClientOptions,
  SendOptions,
  StatusEvent,
  WebSocketCtor,
  WebSocketLike,
} from './client.js';
export { Auth, MemoryTokenStore, StorageTokenStore, sessionFromToken, tokenFresh } from './auth.js';
export type { TokenStore } from './auth.js';
export { Api } from './rest.js';
export type { ProgressFn } from './rest.js';
export { RelayError, isRetriable } from './errors.js';
export { backoffDelay, closeAction, reconnectDelay } from './backoff.js';
export type { BackoffOptions, CloseAction } from './backoff.js';
export { SeqCursor } from './cursor.js';
export type { Verdict } from './cursor.js';
export { Timeline } from './timeline.js';
export type { PendingMessage, TimelineItem } from './timeline.js';
export { TypingNotifier } from './typing.js';
export { TokenBucket } from './ratelimit.js';
export { safeHref, linkify } from './text.js';
export type { TextPart } from './text.js';
export * from './types.js';
