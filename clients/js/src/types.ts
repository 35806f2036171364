// Wire types of Relay's native WebSocket protocol (docs/protocol.md) and the
// REST API (services/api/httpapi/openapi.json). All ids are strings; seq
// values are integers (a room log's Kafka offsets: increasing, not
// contiguous).

/** A user or room id: a positive decimal integer as a string. */
export type Id = string;

/** Error codes shared by REST error bodies and WebSocket `error` frames. */
export type ErrorCode =
  | 'BAD_REQUEST'
  | 'UNKNOWN_EVENT'
  | 'TOO_LARGE'
  | 'UNAUTHORIZED'
  | 'FORBIDDEN'
  | 'NOT_FOUND'
  | 'CONFLICT'
  | 'RATE_LIMITED'
  | 'SERVER_FULL'
  | 'UNAVAILABLE'
  | 'INTERNAL'
  | 'UNSUPPORTED_MEDIA_TYPE'
  | (string & {});

export type MessageType = 'text' | 'image' | 'file';
export type RoomType = 'direct' | 'group' | 'channel';
export type Role = 'admin' | 'member';

export interface PublicUser {
  id: Id;
  username: string;
  displayName?: string;
  avatarUrl?: string;
  isOnline?: boolean;
  lastSeen?: string | null;
  createdAt?: string;
}

export interface PrivateUser extends PublicUser {
  email: string;
}

/** Response of register, login and refresh. */
export interface AuthResponse {
  user: PrivateUser;
  token: string;
  expiresAt: string;
  refreshToken?: string;
  refreshExpiresAt?: string;
}

/** What a TokenStore keeps between page loads. */
export interface Session {
  user: PrivateUser;
  token: string;
  expiresAt: string;
  /** When this client got the token (ms since the epoch): paces refreshes of short-lived tokens. */
  obtainedAt?: number;
  refreshToken?: string;
  refreshExpiresAt?: string;
}

/** Metadata of an image or file message (the upload's description). */
export interface FileMetadata {
  uploadId: string;
  url: string;
  name: string;
  size: number;
  contentType: string;
  width?: number;
  height?: number;
}

/** A chat message as pushed (`message`) or read from history. */
export interface Message {
  id: string;
  roomId: Id;
  userId: Id;
  username: string;
  content?: string;
  type: MessageType;
  metadata?: Record<string, unknown>;
  clientMsgId?: string;
  seq: number;
  prevSeq?: number;
  createdAt: string;
  isEdited?: boolean;
  editedAt?: string | null;
  isDeleted?: boolean;
  deletedAt?: string | null;
}

export interface MessageEdited {
  roomId: Id;
  messageId: string;
  userId: Id;
  content: string;
  editedAt: string;
  seq: number;
  prevSeq?: number;
}

export interface MessageDeleted {
  roomId: Id;
  messageId: string;
  userId: Id;
  deletedAt: string;
  seq: number;
  prevSeq?: number;
}

export interface MessageRead {
  roomId: Id;
  userId: Id;
  readSeq: number;
  messageId?: string;
  seq: number;
  prevSeq?: number;
}

export interface UserJoined {
  roomId: Id;
  userId: Id;
  username: string;
  seq: number;
  prevSeq?: number;
}

export interface UserLeft {
  roomId: Id;
  userId: Id;
  seq: number;
  prevSeq?: number;
}

export interface Typing {
  roomId: Id;
  userId: Id;
  username: string;
  typing: boolean;
}

export interface PresenceUpdate {
  userId: Id;
  status: 'online' | 'offline';
  lastSeen: string | null;
}

export type ResyncReason =
  | 'persister_behind'
  | 'unavailable'
  | 'replay_limit'
  | 'history_trimmed'
  | 'overflow'
  | (string & {});

export interface ResyncRequired {
  roomId: Id;
  fromSeq: number;
  reason: ResyncReason;
  retryAfterMs?: number;
}

/** Pushes that belong to a room's log: they carry seq (and maybe prevSeq). */
export interface LogEvents {
  message: Message;
  message_edited: MessageEdited;
  message_deleted: MessageDeleted;
  message_read: MessageRead;
  user_joined: UserJoined;
  user_left: UserLeft;
}

export type LogEventName = keyof LogEvents;
export const LOG_EVENTS: readonly LogEventName[] = [
  'message',
  'message_edited',
  'message_deleted',
  'message_read',
  'user_joined',
  'user_left',
];

/** Every push the server sends (frames without ref). */
export interface ServerPushes extends LogEvents {
  typing: Typing;
  presence_update: PresenceUpdate;
  resync_required: ResyncRequired;
  error: { code: ErrorCode; message: string };
}

export interface JoinAck {
  roomId: Id;
  lastSeq: number | null;
}

export interface SendAck {
  id: string;
  roomId: Id;
  seq: number;
  clientMsgId?: string;
  createdAt: string;
}

export interface MessageAck {
  messageId: string;
  seq: number;
}

export interface ReadAck {
  seq: number;
}

/** A frame on the wire, either direction. */
export interface Frame {
  event: string;
  data?: unknown;
  ref?: string;
}

export interface Member {
  userId: Id;
  username: string;
  displayName?: string;
  avatarUrl?: string;
  isOnline?: boolean;
  role: Role;
  lastReadSeq: number;
  isMuted?: boolean;
  joinedAt?: string;
}

export interface Room {
  id: Id;
  name: string;
  type: RoomType;
  createdBy?: Id;
  createdAt?: string;
  memberCount?: number;
  myRole?: Role | null;
  isActive?: boolean;
  members?: Member[];
}

/** An entry of GET /api/rooms. */
export interface RoomSummary extends Room {
  lastMessage?: Message | null;
  unreadCount: number;
  lastReadSeq: number;
  /** Newest event seq of the room's log; -1 (or absent on older servers) when none. */
  lastSeq?: number;
  isMuted?: boolean;
  role?: Role;
  peer?: Member | { id?: Id; userId?: Id; username: string };
}

export interface HistoryPage {
  messages: Message[];
  hasMore: boolean;
  nextBefore: number | null;
  nextAfter: number | null;
}

export interface SearchHit extends Message {
  rank: number;
}

export interface SearchPage {
  results: SearchHit[];
  nextCursor: string | null;
}

export interface ChannelEntry {
  id: Id;
  name: string;
  type: 'channel';
  memberCount: number;
  joined: boolean;
}

export interface ChannelPage {
  channels: ChannelEntry[];
  nextCursor?: string | null;
}

export interface UserHit {
  id: Id;
  username: string;
  displayName?: string;
}

export interface MemberPresence {
  userId: Id;
  username: string;
  status: 'online' | 'offline';
  lastSeen: string | null;
}

export interface RoomPresence {
  roomId: Id;
  online: MemberPresence[];
  typing: { userId: Id; username: string }[];
}

export interface Upload {
  id: string;
  roomId: Id;
  name: string;
  size: number;
  contentType: string;
  url: string;
}
