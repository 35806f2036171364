// Access and refresh tokens: kept in a TokenStore, refreshed before they
// expire and when the server says 401, one refresh at a time (also across
// browser tabs, through the Web Locks API where it exists), because a
// refresh token is spent by its first use and reusing it revokes the
// session.

import { RelayError, errorFromBody } from './errors.js';
import type { AuthResponse, Session } from './types.js';

/** Where the session lives between page loads. */
export interface TokenStore {
  load(): Session | null;
  save(s: Session): void;
  clear(): void;
}

/** Keeps the session in memory only (the default; Node.js, tests). */
export class MemoryTokenStore implements TokenStore {
  private s: Session | null = null;
  constructor(initial?: Session | null) {
    this.s = initial ?? null;
  }
  load(): Session | null {
    return this.s;
  }
  save(s: Session): void {
    this.s = s;
  }
  clear(): void {
    this.s = null;
  }
}

/**
 * Keeps the session in a Web Storage (localStorage by default) under key, so
 * a reload stays signed in and tabs share one session.
 */
export class StorageTokenStore implements TokenStore {
  constructor(
    private readonly storage: Storage = globalThis.localStorage,
    private readonly key = 'relay.session',
  ) {}
  load(): Session | null {
    const raw = this.storage.getItem(this.key);
    if (!raw) return null;
    try {
      const s = JSON.parse(raw) as Session;
      return s && typeof s.token === 'string' && s.user ? s : null;
    } catch {
      return null;
    }
  }
  save(s: Session): void {
    this.storage.setItem(this.key, JSON.stringify(s));
  }
  clear(): void {
    this.storage.removeItem(this.key);
  }
}

/** How long before expiry an access token is refreshed ahead of time (at most a quarter of its life). */
export const REFRESH_MARGIN_MS = 60_000;

/** Whether a session's access token is still usable for a while (see REFRESH_MARGIN_MS). */
export function tokenFresh(s: Session | null, now = Date.now(), marginMs = REFRESH_MARGIN_MS): boolean {
  if (!s) return false;
  const exp = Date.parse(s.expiresAt);
  if (!Number.isFinite(exp)) return true;
  // Short-lived tokens (minutes or less) are refreshed a quarter of their
  // life ahead, not a fixed minute, which could be all of it.
  const margin = s.obtainedAt ? Math.min(marginMs, (exp - s.obtainedAt) / 4) : marginMs;
  return exp - margin > now;
}

export type Fetch = typeof globalThis.fetch;

interface LockManagerLike {
  request<T>(name: string, cb: () => Promise<T>): Promise<T>;
}

/**
 * Auth owns the session: sign-in/up, refresh and sign-out. Listeners hear
 * of every new session and of the end of one (null).
 */
export class Auth {
  private inflight: Promise<Session> | null = null;
  private listeners = new Set<(s: Session | null) => void>();

  constructor(
    private readonly baseUrl: string,
    private readonly store: TokenStore,
    private readonly fetchFn: Fetch,
  ) {}

  get session(): Session | null {
    return this.store.load();
  }

  onChange(fn: (s: Session | null) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  async signUp(input: { username: string; email: string; password: string; displayName?: string }): Promise<Session> {
    return this.adopt(await this.post('/api/auth/register', input));
  }

  async signIn(login: string, password: string): Promise<Session> {
    return this.adopt(await this.post('/api/auth/login', { login, password }));
  }

  /** Revokes the refresh token on the server (best effort) and forgets the session. */
  async signOut(): Promise<void> {
    const s = this.store.load();
    this.store.clear();
    this.notify(null);
    if (s?.refreshToken) {
      try {
        await this.fetchFn(this.baseUrl + '/api/auth/logout', {
          method: 'POST',
          headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${s.token}` },
          body: JSON.stringify({ refreshToken: s.refreshToken }),
        });
      } catch {
        // Offline: the refresh token expires by itself; it is gone here.
      }
    }
  }

  /**
   * A usable access token: the stored one while fresh, else a refreshed one.
   * Throws RelayError UNAUTHORIZED (and ends the session) when the session
   * cannot be renewed.
   */
  async accessToken(force = false): Promise<string> {
    const s = this.store.load();
    if (!s) throw new RelayError('UNAUTHORIZED', 'not signed in', 401);
    if (!force && tokenFresh(s)) return s.token;
    return (await this.refresh(s.token)).token;
  }

  /**
   * Refreshes the session once for everyone waiting. staleToken is the
   * access token the caller found wanting: when the store already holds
   * another (a refresh by another tab or call), that one is used.
   */
  refresh(staleToken?: string): Promise<Session> {
    if (!this.inflight) {
      this.inflight = this.withLock(() => this.doRefresh(staleToken)).finally(() => {
        this.inflight = null;
      });
    }
    return this.inflight;
  }

  private async doRefresh(staleToken?: string): Promise<Session> {
    const s = this.store.load();
    if (!s) throw new RelayError('UNAUTHORIZED', 'not signed in', 401);
    if (staleToken && s.token !== staleToken && tokenFresh(s)) return s;
    if (!s.refreshToken) {
      this.end();
      throw new RelayError('UNAUTHORIZED', 'session expired; sign in again', 401);
    }
    let res: AuthResponse;
    try {
      res = await this.post('/api/auth/refresh', { refreshToken: s.refreshToken });
    } catch (err) {
      if (err instanceof RelayError && (err.status === 401 || err.code === 'UNAUTHORIZED')) this.end();
      throw err;
    }
    return this.adopt(res);
  }

  private end(): void {
    this.store.clear();
    this.notify(null);
  }

  private adopt(res: AuthResponse): Session {
    const s: Session = { user: res.user, token: res.token, expiresAt: res.expiresAt, obtainedAt: Date.now() };
    if (res.refreshToken) s.refreshToken = res.refreshToken;
    if (res.refreshExpiresAt) s.refreshExpiresAt = res.refreshExpiresAt;
    this.store.save(s);
    this.notify(s);
    return s;
  }

  private notify(s: Session | null): void {
    for (const fn of [...this.listeners]) fn(s);
  }

  private async withLock<T>(fn: () => Promise<T>): Promise<T> {
    const locks = (globalThis.navigator as { locks?: LockManagerLike } | undefined)?.locks;
    return locks ? locks.request('relay.refresh', fn) : fn();
  }

  private async post(path: string, body: unknown): Promise<AuthResponse> {
    let res: Response;
    try {
      res = await this.fetchFn(this.baseUrl + path, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
      });
    } catch (err) {
      throw new RelayError('UNAVAILABLE', `network error: ${(err as Error).message}`);
    }
    const data = await readJSON(res);
    if (!res.ok) throw errorFromBody(res.status, data);
    return data as AuthResponse;
  }
}

export async function readJSON(res: Response): Promise<unknown> {
  const text = await res.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

/**
 * A session from a bare access token (no refresh token), e.g. one a server
 * handed to the page. The user's id and name come from the token's claims
 * (sub, username), read without verification: the server verifies.
 */
export function sessionFromToken(token: string): Session {
  const part = token.split('.')[1];
  let claims: { sub?: unknown; username?: unknown; exp?: unknown } = {};
  if (part) {
    try {
      const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
      claims = JSON.parse(decodeBase64(b64 + '='.repeat((4 - (b64.length % 4)) % 4)));
    } catch {
      claims = {};
    }
  }
  const exp = typeof claims.exp === 'number' ? new Date(claims.exp * 1000) : new Date(Date.now() + 3600_000);
  return {
    user: { id: String(claims.sub ?? ''), username: String(claims.username ?? ''), email: '' },
    token,
    expiresAt: exp.toISOString(),
  };
}

function decodeBase64(b64: string): string {
  const bin = atob(b64);
  const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
  return new TextDecoder().decode(bytes);
}
