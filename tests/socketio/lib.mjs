// Helpers of the Socket.IO tests: REST setup through the api, socket.io-client
// and native (/ws) clients, and waiting for events with a timeout.
import { createHmac, randomBytes } from 'node:crypto';
import { io } from 'socket.io-client';
import WebSocket from 'ws';

export const API = process.env.RELAY_API_URL || 'http://127.0.0.1:8080';
export const GATEWAYS = (process.env.RELAY_GATEWAY_URLS || 'http://127.0.0.1:8090').split(',');

// How long any single expected event may take.
export const WAIT_MS = 10_000;

export async function api(method, path, { token, body } = {}) {
  const res = await fetch(API + path, {
    method,
    headers: {
      'content-type': 'application/json',
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  const json = text ? JSON.parse(text) : null;
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return json;
}

// register creates a user with a unique name and returns {id, username, token}.
export async function register(prefix) {
  const username = `${prefix}_${randomBytes(4).toString('hex')}`;
  const r = await api('POST', '/api/auth/register', {
    body: { username, email: `${username}@example.test`, password: 'correct horse battery' },
  });
  return { id: r.user.id, username, token: r.token };
}

// createRoom makes a group room of owner with the other members.
export async function createRoom(owner, members, type = 'group') {
  const r = await api('POST', '/api/rooms', {
    token: owner.token,
    body: { name: `room-${randomBytes(3).toString('hex')}`, type, memberIds: members.map((m) => m.id) },
  });
  return r.id;
}

// connect opens a socket.io-client socket to a gateway and resolves once it
// is connected (rejects on connect_error). opts go to io().
export function connect(gateway, token, opts = {}) {
  const socket = io(gateway, { auth: { token }, reconnection: true, reconnectionDelay: 100, ...opts });
  const events = recorder(socket);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('connect timed out')), WAIT_MS);
    socket.once('connect', () => { clearTimeout(timer); resolve({ socket, events }); });
    socket.once('connect_error', (err) => { clearTimeout(timer); socket.close(); reject(err); });
  });
}

// recorder keeps every event a socket receives, so tests can wait for one
// that may already have arrived.
function recorder(socket) {
  const log = [];
  const waiters = new Set();
  socket.onAny((event, data) => {
    log.push({ event, data });
    for (const w of waiters) w();
  });
  return {
    log,
    // next resolves with the data of the first event named `event` matching
    // pred that was not taken before.
    next(event, pred = () => true, ms = WAIT_MS) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const i = log.findIndex((e) => !e.taken && e.event === event && pred(e.data));
          if (i < 0) return false;
          log[i].taken = true;
          waiters.delete(check);
          clearTimeout(timer);
          resolve(log[i].data);
          return true;
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`no ${event} event within ${ms} ms; got ${JSON.stringify(log.map((e) => e.event))}`));
        }, ms);
        if (!check()) waiters.add(check);
      });
    },
  };
}

// emit sends an event with an acknowledgement callback and resolves with the
// ack payload.
export function emit(socket, event, data, ms = WAIT_MS) {
  return socket.timeout(ms).emitWithAck(event, data);
}

// nativeClient opens a native /ws connection (docs/protocol.md) with
// request/ack by ref and a recorder of pushes.
export function nativeClient(gateway, token) {
  const ws = new WebSocket(`${gateway.replace(/^http/, 'ws')}/ws?token=${encodeURIComponent(token)}`);
  const pending = new Map();
  const pushes = [];
  const waiters = new Set();
  let ref = 0;
  ws.on('message', (raw) => {
    const f = JSON.parse(raw.toString());
    if (f.ref && pending.has(f.ref)) {
      const { resolve } = pending.get(f.ref);
      pending.delete(f.ref);
      resolve(f);
      return;
    }
    pushes.push(f);
    for (const w of waiters) w();
  });
  const client = {
    ws,
    request(event, data) {
      const r = `n${++ref}`;
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no reply to ${event}`)), WAIT_MS);
        pending.set(r, { resolve: (f) => { clearTimeout(timer); resolve(f); } });
        ws.send(JSON.stringify({ event, data, ref: r }));
      });
    },
    next(event, pred = () => true, ms = WAIT_MS) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const i = pushes.findIndex((f) => !f.taken && f.event === event && pred(f.data));
          if (i < 0) return false;
          pushes[i].taken = true;
          waiters.delete(check);
          clearTimeout(timer);
          resolve(pushes[i].data);
          return true;
        };
        const timer = setTimeout(() => { waiters.delete(check); reject(new Error(`native: no ${event} within ${ms} ms`)); }, ms);
        if (!check()) waiters.add(check);
      });
    },
    close() { ws.close(); },
  };
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve(client));
    ws.once('error', reject);
  });
}

// disconnected resolves with the reason of the socket's next disconnect.
export function disconnected(socket, ms = WAIT_MS) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no disconnect')), ms);
    socket.once('disconnect', (reason) => { clearTimeout(timer); resolve(reason); });
  });
}

// mintToken signs a token like the api's (HS256, issuer relay) for user,
// expiring in ttlSeconds; it needs the stack's JWT secret.
export function mintToken(user, ttlSeconds) {
  const secret = process.env.RELAY_JWT_SECRET;
  if (!secret) throw new Error('RELAY_JWT_SECRET is not set');
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  const head = b64({ alg: 'HS256', typ: 'JWT' });
  const body = b64({ username: user.username, iss: 'relay', sub: user.id, iat: now, exp: now + ttlSeconds });
  const sig = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}
