// A socket.io-client user and a native /ws user chat in one room, each on
// another gateway instance: both protocols share the hub and the fan-out.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { GATEWAYS, register, createRoom, connect, emit, nativeClient } from './lib.mjs';

const closers = [];
after(() => { for (const c of closers) c(); });

test('socket.io-client and native WebSocket users chat with each other', async () => {
  const sioUser = await register('sio');
  const wsUser = await register('native');
  const roomId = await createRoom(sioUser, [wsUser]);

  const n = await nativeClient(GATEWAYS[GATEWAYS.length - 1], wsUser.token);
  closers.push(() => n.close());
  const s = await connect(GATEWAYS[0], sioUser.token);
  closers.push(() => s.socket.close());

  const nj = await n.request('join_room', { roomId });
  assert.equal(nj.event, 'ack');
  const sj = await emit(s.socket, 'join_room', { roomId });
  assert.equal(sj.roomId, roomId);

  // Socket.IO → native.
  const ack = await emit(s.socket, 'send_message', { roomId, content: 'hi from socket.io' });
  const atNative = await n.next('message', (m) => m.id === ack.id);
  assert.equal(atNative.content, 'hi from socket.io');
  assert.equal(atNative.userId, sioUser.id);

  // Native → Socket.IO, with the same payload the native client sees.
  const reply = await n.request('send_message', { roomId, content: 'hi from /ws' });
  assert.equal(reply.event, 'ack');
  const atSio = await s.events.next('message', (m) => m.id === reply.data.id);
  const echoed = await n.next('message', (m) => m.id === reply.data.id);
  assert.deepEqual(atSio, echoed);

  // Typing both ways.
  await n.request('typing_start', { roomId });
  const t1 = await s.events.next('typing', (d) => d.userId === wsUser.id);
  assert.equal(t1.typing, true);
  await emit(s.socket, 'typing_start', { roomId });
  const t2 = await n.next('typing', (d) => d.userId === sioUser.id);
  assert.equal(t2.typing, true);

  // Errors look alike: native error data = Socket.IO ack {error}.
  const nativeErr = await n.request('send_message', { roomId, content: '' });
  const sioErr = await emit(s.socket, 'send_message', { roomId, content: '' });
  assert.equal(nativeErr.event, 'error');
  assert.deepEqual(sioErr, { error: nativeErr.data });
});
