// Several gateways behind the local proxy (tools/cmd/devproxy): long-polling
// sessions are a series of requests that must reach the instance holding
// them; the proxy pins a client by its relay_gw cookie (browsers keep it),
// else by its address. Clients pinned to different gateways chat.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { io } from 'socket.io-client';
import { register, createRoom, emit } from './lib.mjs';

const PROXY = process.env.RELAY_PROXY_URL;
const open = [];
after(() => { for (const s of open) s.close(); });

// cookiesPerGateway returns n relay_gw cookie values, alternating between
// the first two gateways the proxy routes them to (it names the gateway in
// X-Relay-Upstream).
async function cookiesPerGateway(n) {
  const by = new Map();
  for (let tries = 0; tries < 200; tries++) {
    const cookie = randomBytes(8).toString('hex');
    const res = await fetch(`${PROXY}/socket.io/?EIO=4&transport=polling`, { headers: { cookie: `relay_gw=${cookie}` } });
    await res.text();
    const upstream = res.headers.get('x-relay-upstream');
    if (!by.has(upstream)) by.set(upstream, []);
    by.get(upstream).push(cookie);
    const lists = [...by.values()];
    if (lists.length >= 2 && lists[0].length >= n / 2 && lists[1].length >= n / 2) {
      return Array.from({ length: n }, (_, i) => lists[i % 2][Math.floor(i / 2)]);
    }
  }
  throw new Error(`the proxy did not spread cookies over two gateways: ${JSON.stringify([...by.keys()])}`);
}

test('polling-only sessions through the sticky proxy, on both gateways, chat with each other', { skip: !PROXY && 'RELAY_PROXY_URL not set' }, async () => {
  const users = [];
  for (let i = 0; i < 6; i++) users.push(await register(`p${i}`));
  const roomId = await createRoom(users[0], users.slice(1));
  const cookies = await cookiesPerGateway(users.length);
  const sockets = [];
  for (const [i, u] of users.entries()) {
    // A cookie of its own per client, as each browser would have; half of
    // them lead to each gateway.
    const socket = io(PROXY, {
      auth: { token: u.token },
      transports: ['polling'],
      extraHeaders: { cookie: `relay_gw=${cookies[i]}` },
    });
    open.push(socket);
    await new Promise((resolve, reject) => { socket.once('connect', resolve); socket.once('connect_error', reject); });
    await emit(socket, 'join_room', { roomId });
    sockets.push(socket);
  }
  const received = sockets.map(() => new Set());
  sockets.forEach((s, i) => s.on('message', (m) => received[i].add(m.id)));
  const ids = [];
  for (const s of sockets) ids.push((await emit(s, 'send_message', { roomId, content: 'through the proxy' })).id);
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline && !received.every((r) => ids.every((id) => r.has(id)))) {
    await new Promise((r) => setTimeout(r, 50));
  }
  received.forEach((r, i) => assert.deepEqual(ids.filter((id) => !r.has(id)), [], `client ${i} missed messages`));
  // Still polling: no request of these sessions reached the wrong instance.
  for (const s of sockets) assert.equal(s.io.engine.transport.name, 'polling');
});
