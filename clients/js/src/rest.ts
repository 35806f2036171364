// The REST API (services/api/httpapi/openapi.json) with the session's
// access token; a 401 refreshes the token once and retries.

import { readJSON, type Auth, type Fetch } from './auth.js';
import { RelayError, errorFromBody } from './errors.js';
import type {
  ChannelPage,
  HistoryPage,
  Member,
  PrivateUser,
  Role,
  Room,
  RoomPresence,
  RoomSummary,
  RoomType,
  SearchPage,
  Upload,
  UserHit,
  PresenceUpdate,
} from './types.js';

/** Upload progress: bytes sent of total. */
export type ProgressFn = (sent: number, total: number) => void;

export class Api {
  constructor(
    private readonly baseUrl: string,
    private readonly auth: Auth,
    private readonly fetchFn: Fetch,
  ) {}

  /** Sends a request with the access token; JSON in, JSON out. */
  async request<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
    const res = await this.send(method, path, body, signal);
    const data = await readJSON(res);
    if (!res.ok) throw errorFromBody(res.status, data);
    return data as T;
  }

  private async send(method: string, path: string, body: unknown, signal: AbortSignal | undefined): Promise<Response> {
    const go = async (token: string) => {
      const headers: Record<string, string> = { Authorization: `Bearer ${token}` };
      const init: RequestInit = { method, headers };
      if (signal) init.signal = signal;
      if (body !== undefined) {
        headers['Content-Type'] = 'application/json';
        init.body = JSON.stringify(body);
      }
      try {
        return await this.fetchFn(this.baseUrl + path, init);
      } catch (err) {
        if ((err as Error).name === 'AbortError') throw err;
        throw new RelayError('UNAVAILABLE', `network error: ${(err as Error).message}`);
      }
    };
    const token = await this.auth.accessToken();
    const res = await go(token);
    if (res.status !== 401) return res;
    // The token expired early or was revoked: one refresh, one retry.
    const fresh = await this.auth.refresh(token);
    return go(fresh.token);
  }

  /** Fetches bytes (an upload) with the token, as a Blob; for object URLs in browsers. */
  async blob(path: string, signal?: AbortSignal): Promise<Blob> {
    const res = await this.send('GET', path, undefined, signal);
    if (!res.ok) throw errorFromBody(res.status, await readJSON(res));
    return res.blob();
  }

  me(): Promise<PrivateUser> {
    return this.request('GET', '/api/me');
  }

  updateMe(patch: { displayName?: string }): Promise<PrivateUser> {
    return this.request('PATCH', '/api/me', patch);
  }

  async rooms(): Promise<RoomSummary[]> {
    return (await this.request<{ rooms: RoomSummary[] }>('GET', '/api/rooms')).rooms;
  }

  room(id: string): Promise<Room> {
    return this.request('GET', `/api/rooms/${enc(id)}`);
  }

  createRoom(input: { type: RoomType; name?: string; memberIds?: string[] }): Promise<Room> {
    return this.request('POST', '/api/rooms', input);
  }

  /** The direct room with a user (created on first use; the same room afterwards). */
  directRoom(userId: string): Promise<Room> {
    return this.createRoom({ type: 'direct', memberIds: [userId] });
  }

  updateRoom(id: string, patch: { name?: string; isActive?: boolean }): Promise<Room> {
    return this.request('PATCH', `/api/rooms/${enc(id)}`, patch);
  }

  joinRoom(id: string): Promise<Room> {
    return this.request('POST', `/api/rooms/${enc(id)}/join`);
  }

  async leaveRoom(id: string): Promise<void> {
    await this.request('POST', `/api/rooms/${enc(id)}/leave`);
  }

  async members(roomId: string): Promise<Member[]> {
    return (await this.request<{ members: Member[] }>('GET', `/api/rooms/${enc(roomId)}/members`)).members;
  }

  addMember(roomId: string, userId: string): Promise<Member> {
    return this.request('POST', `/api/rooms/${enc(roomId)}/members`, { userId });
  }

  updateMember(roomId: string, userId: string, patch: { role?: Role; isMuted?: boolean }): Promise<Member> {
    return this.request('PATCH', `/api/rooms/${enc(roomId)}/members/${enc(userId)}`, patch);
  }

  async removeMember(roomId: string, userId: string): Promise<void> {
    await this.request('DELETE', `/api/rooms/${enc(roomId)}/members/${enc(userId)}`);
  }

  /** A history page: the newest without a cursor, older with before, newer with after. */
  history(roomId: string, q: { before?: number; after?: number; limit?: number } = {}, signal?: AbortSignal): Promise<HistoryPage> {
    return this.request('GET', `/api/rooms/${enc(roomId)}/messages${query(q)}`, undefined, signal);
  }

  roomPresence(roomId: string): Promise<RoomPresence> {
    return this.request('GET', `/api/rooms/${enc(roomId)}/presence`);
  }

  userPresence(userId: string): Promise<PresenceUpdate> {
    return this.request('GET', `/api/users/${enc(userId)}/presence`);
  }

  async searchUsers(q: string, limit = 20): Promise<UserHit[]> {
    return (await this.request<{ users: UserHit[] }>('GET', `/api/users${query({ q, limit })}`)).users;
  }

  channels(q: { q?: string; limit?: number; cursor?: string } = {}): Promise<ChannelPage> {
    return this.request('GET', `/api/channels${query(q)}`);
  }

  search(q: { q: string; roomId?: string; limit?: number; cursor?: string }): Promise<SearchPage> {
    return this.request('GET', `/api/search${query(q)}`);
  }

  /**
   * Uploads a file to a room (multipart, one part "file"). In browsers the
   * upload reports progress through XMLHttpRequest (fetch cannot); elsewhere
   * it uses fetch and reports once at the end.
   */
  async upload(roomId: string, file: Blob, name: string, onProgress?: ProgressFn, signal?: AbortSignal): Promise<Upload> {
    const path = `/api/rooms/${enc(roomId)}/uploads`;
    const form = () => {
      const f = new FormData();
      f.append('file', file, name);
      return f;
    };
    const once = async (token: string): Promise<{ status: number; body: unknown }> => {
      if (typeof XMLHttpRequest !== 'undefined') return xhrUpload(this.baseUrl + path, token, form(), onProgress, signal);
      let res: Response;
      try {
        const init: RequestInit = { method: 'POST', headers: { Authorization: `Bearer ${token}` }, body: form() };
        if (signal) init.signal = signal;
        res = await this.fetchFn(this.baseUrl + path, init);
      } catch (err) {
        throw new RelayError('UNAVAILABLE', `network error: ${(err as Error).message}`);
      }
      const body = await readJSON(res);
      if (res.ok) onProgress?.(file.size, file.size);
      return { status: res.status, body };
    };
    const token = await this.auth.accessToken();
    let r = await once(token);
    if (r.status === 401) r = await once((await this.auth.refresh(token)).token);
    if (r.status < 200 || r.status >= 300) throw errorFromBody(r.status, r.body);
    return r.body as Upload;
  }
}

function xhrUpload(url: string, token: string, body: FormData, onProgress: ProgressFn | undefined, signal: AbortSignal | undefined): Promise<{ status: number; body: unknown }> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', url);
    xhr.setRequestHeader('Authorization', `Bearer ${token}`);
    xhr.responseType = 'text';
    if (onProgress) xhr.upload.onprogress = (e) => onProgress(e.loaded, e.lengthComputable ? e.total : 0);
    xhr.onload = () => {
      let parsed: unknown = null;
      try {
        parsed = xhr.responseText ? JSON.parse(xhr.responseText) : null;
      } catch {
        parsed = null;
      }
      resolve({ status: xhr.status, body: parsed });
    };
    xhr.onerror = () => reject(new RelayError('UNAVAILABLE', 'network error during upload'));
    xhr.onabort = () => reject(new DOMException('upload aborted', 'AbortError'));
    signal?.addEventListener('abort', () => xhr.abort(), { once: true });
    xhr.send(body);
  });
}

function enc(s: string): string {
  return encodeURIComponent(s);
}

function query(q: Record<string, string | number | undefined>): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(q)) if (v !== undefined && v !== '') p.set(k, String(v));
  const s = p.toString();
  return s ? `?${s}` : '';
}
