// The seed's client example, with socket.io-client 4 against the gateway's
// /socket.io/ endpoint: connect with auth, join, send, receive, typing,
// presence, edit/delete/read, errors, disconnect and reconnect with
// recovery. Once with the default transports (long-polling, then the
// upgrade to WebSocket) and once with transports: ['websocket'].
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { GATEWAYS, register, createRoom, connect, emit, disconnected, mintToken } from './lib.mjs';

const open = new Set();
after(() => { for (const s of open) s.close(); });

async function client(gateway, user, opts) {
  const c = await connect(gateway, user.token, opts);
  open.add(c.socket);
  return c;
}

for (const [label, opts] of [
  ['default transports (polling, then upgrade)', {}],
  ["transports: ['websocket']", { transports: ['websocket'] }],
]) {
  describe(`seed client flow, ${label}`, () => {
    test('connect, join, send, receive, typing, presence, edit, delete, read, reconnect', async () => {
      const alice = await register('alice');
      const bob = await register('bob');
      const roomId = await createRoom(alice, [bob]);

      // bob on one gateway, alice on the other: the room meets across instances.
      const b = await client(GATEWAYS[GATEWAYS.length - 1], bob, opts);
      const a = await client(GATEWAYS[0], alice, opts);
      if (!opts.transports) {
        // socket.io-client starts with polling and upgrades by itself.
        await new Promise((resolve) => {
          if (a.socket.io.engine.transport.name === 'websocket') return resolve();
          a.socket.io.engine.once('upgrade', resolve);
        });
        assert.equal(a.socket.io.engine.transport.name, 'websocket');
      } else {
        assert.equal(a.socket.io.engine.transport.name, 'websocket');
      }

      // Presence: bob sees alice come online (they share a room).
      const online = await b.events.next('presence_update', (d) => d.userId === alice.id && d.status === 'online');
      assert.equal(typeof online.lastSeen, 'string');

      const joinA = await emit(a.socket, 'join_room', { roomId });
      assert.equal(joinA.roomId, roomId);
      assert.ok('lastSeq' in joinA);
      await emit(b.socket, 'join_room', { roomId });

      // Typing reaches bob, not alice.
      assert.deepEqual(await emit(a.socket, 'typing_start', { roomId }), {});
      const typing = await b.events.next('typing', (d) => d.userId === alice.id);
      assert.deepEqual({ ...typing }, { roomId, userId: alice.id, username: alice.username, typing: true });
      a.socket.emit('typing_stop', { roomId }); // no callback: no ack expected
      await b.events.next('typing', (d) => d.userId === alice.id && d.typing === false);

      // Send with an ack callback: the native ack payload.
      const ack = await emit(a.socket, 'send_message', { roomId, content: 'Hello, world!', clientMsgId: 'sio-1' });
      assert.match(ack.id, /^[0-9a-f-]{36}$/);
      assert.equal(ack.roomId, roomId);
      assert.equal(ack.clientMsgId, 'sio-1');
      assert.equal(typeof ack.seq, 'number');
      const got = await b.events.next('message', (m) => m.id === ack.id);
      assert.equal(got.content, 'Hello, world!');
      assert.equal(got.userId, alice.id);
      assert.equal(got.username, alice.username);
      assert.equal(got.seq, ack.seq);
      // The sender receives its own message too.
      await a.events.next('message', (m) => m.id === ack.id);

      // The same clientMsgId again returns the first ack.
      const again = await emit(a.socket, 'send_message', { roomId, content: 'Hello, world!', clientMsgId: 'sio-1' });
      assert.deepEqual(again, ack);

      // Without a callback (as the seed's clients mostly send): delivered all the same.
      a.socket.emit('send_message', { roomId, content: 'fire and forget' });
      const ff = await b.events.next('message', (m) => m.content === 'fire and forget');

      // Edit, delete, read receipts.
      const edit = await emit(a.socket, 'edit_message', { roomId, messageId: ack.id, content: 'Hello (edited)' });
      assert.equal(edit.messageId, ack.id);
      const edited = await b.events.next('message_edited', (d) => d.messageId === ack.id);
      assert.equal(edited.content, 'Hello (edited)');
      await emit(a.socket, 'delete_message', { roomId, messageId: ack.id });
      await b.events.next('message_deleted', (d) => d.messageId === ack.id);
      await emit(b.socket, 'mark_read', { roomId, seq: ff.seq });
      const read = await a.events.next('message_read', (d) => d.userId === bob.id);
      assert.equal(read.readSeq, ff.seq);

      // Errors: with a callback, the ack carries {error: {code, message}} ...
      const forbidden = await emit(a.socket, 'send_message', { roomId: '999999999', content: 'x' });
      assert.equal(forbidden.error.code, 'NOT_FOUND');
      assert.equal(typeof forbidden.error.message, 'string');
      const unknown = await emit(a.socket, 'no_such_event', {});
      assert.equal(unknown.error.code, 'UNKNOWN_EVENT');
      const bad = await emit(a.socket, 'send_message', { roomId, content: '   ' });
      assert.equal(bad.error.code, 'BAD_REQUEST');
      // ... without one, an `error` event.
      a.socket.emit('send_message', { roomId: 42 });
      const errEvent = await a.events.next('error');
      assert.equal(errEvent.code, 'BAD_REQUEST');
      assert.match(errEvent.message, /roomId/);
      assert.ok(a.socket.connected, 'errors leave the socket connected');

      // Disconnect bob; alice sees him go offline and keeps talking.
      const bobLast = Math.max(...b.events.log
        .filter((e) => e.data && e.data.roomId === roomId && typeof e.data.seq === 'number')
        .map((e) => e.data.seq));
      b.socket.disconnect();
      await a.events.next('presence_update', (d) => d.userId === bob.id && d.status === 'offline');
      const missed1 = await emit(a.socket, 'send_message', { roomId, content: 'while you were away 1' });
      const missed2 = await emit(a.socket, 'send_message', { roomId, content: 'while you were away 2' });

      // Reconnect and recover with lastSeq: the missed events come, in order.
      b.socket.connect();
      await new Promise((resolve) => b.socket.once('connect', resolve));
      await a.events.next('presence_update', (d) => d.userId === bob.id && d.status === 'online');
      const rejoin = await emit(b.socket, 'join_room', { roomId, lastSeq: bobLast });
      // (Its lastSeq is the last one the delivery worker published, which
      // may still trail the acks: not asserted.)
      assert.equal(rejoin.roomId, roomId);
      const r1 = await b.events.next('message', (m) => m.id === missed1.id);
      const r2 = await b.events.next('message', (m) => m.id === missed2.id);
      assert.ok(r1.seq < r2.seq);
      const order = b.events.log.filter((e) => e.event === 'message' && e.data.roomId === roomId).map((e) => e.data.seq);
      assert.deepEqual(order, [...order].sort((x, y) => x - y), 'events of a room arrive in seq order');

      a.socket.disconnect();
      b.socket.disconnect();
    });
  });
}

describe('recovery after a dropped transport', () => {
  test('socket.io-client reconnects by itself and a rejoin with lastSeq replays what was missed', async () => {
    const alice = await register('alice');
    const bob = await register('bob');
    const roomId = await createRoom(alice, [bob]);
    const a = await client(GATEWAYS[0], alice, { transports: ['websocket'] });
    const b = await client(GATEWAYS[0], bob, { transports: ['websocket'] });

    // The documented recovery snippet (docs/protocol.md#socketio).
    const lastSeq = new Map();
    for (const ev of ['message', 'message_edited', 'message_deleted', 'message_read', 'user_joined', 'user_left']) {
      b.socket.on(ev, (d) => { if (d.seq > (lastSeq.get(d.roomId) ?? -1)) lastSeq.set(d.roomId, d.seq); });
    }
    const joins = [];
    b.socket.on('connect', () => {
      b.socket.emit('join_room', { roomId, lastSeq: lastSeq.get(roomId) }, (ack) => joins.push(ack));
    });

    await emit(a.socket, 'join_room', { roomId });
    await emit(b.socket, 'join_room', { roomId });
    const first = await emit(a.socket, 'send_message', { roomId, content: 'before the drop' });
    await b.events.next('message', (m) => m.id === first.id);

    // Drop bob's TCP connection (as a network failure would): socket.io-client
    // reconnects with backoff on its own.
    const reason = disconnected(b.socket);
    b.socket.io.engine.transport.ws.terminate();
    assert.equal(await reason, 'transport close');
    const lost = await emit(a.socket, 'send_message', { roomId, content: 'sent during the drop' });
    await new Promise((resolve) => b.socket.once('connect', resolve));
    const replayed = await b.events.next('message', (m) => m.id === lost.id);
    assert.equal(replayed.content, 'sent during the drop');
    assert.equal(joins.length, 1);
    assert.equal(joins[0].roomId, roomId);
    // Nothing twice: the first message is not replayed.
    assert.equal(b.events.log.filter((e) => e.event === 'message' && e.data.id === first.id).length, 1);
  });
});

describe('errors at connect', () => {
  for (const [label, auth, message] of [
    ['a bad token', { token: 'not-a-jwt' }, 'invalid token'],
    ['no token', {}, 'missing token'],
    ['a token that is not a string', { token: 42 }, 'auth.token must be a string'],
  ]) {
    test(`${label} gets CONNECT_ERROR (connect_error with data.code UNAUTHORIZED) and no session`, async () => {
      for (const transports of [undefined, ['websocket']]) {
        const { io } = await import('socket.io-client');
        const socket = io(GATEWAYS[0], { auth, transports, reconnectionDelay: 100 });
        const err = await new Promise((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error('no connect_error')), 10_000);
          socket.once('connect', () => reject(new Error('connected with a bad token')));
          socket.once('connect_error', (e) => { clearTimeout(timer); resolve(e); });
        });
        assert.equal(err.message, message);
        assert.equal(err.data.code, 'UNAUTHORIZED');
        // A refused socket does not retry by itself (as with the seed's middleware).
        assert.equal(socket.active, false);
        assert.equal(socket.connected, false);
        socket.close();
      }
    });
  }

  test('a namespace other than the main one is refused', async () => {
    const alice = await register('alice');
    const { io } = await import('socket.io-client');
    const socket = io(`${GATEWAYS[0]}/admin`, { auth: { token: alice.token }, transports: ['websocket'] });
    const err = await new Promise((resolve, reject) => {
      socket.once('connect', () => reject(new Error('connected to /admin')));
      socket.once('connect_error', resolve);
    });
    assert.equal(err.message, 'Invalid namespace');
    socket.close();
  });
});

describe('token expiry', () => {
  for (const [label, opts] of [['polling', { transports: ['polling'] }], ['websocket', { transports: ['websocket'] }]]) {
    test(`an expiring token ends the socket with an error event and a server disconnect (${label})`, async () => {
      const alice = await register('alice');
      const a = await client(GATEWAYS[0], { token: mintToken(alice, 2) }, opts);
      const reason = disconnected(a.socket, 15_000);
      const err = await a.events.next('error', () => true, 15_000);
      assert.deepEqual(err, { code: 'UNAUTHORIZED', message: 'token expired' });
      assert.equal(await reason, 'io server disconnect');
      // Not retried by itself: the client must bring a new token.
      assert.equal(a.socket.active, false);
      a.socket.auth.token = alice.token;
      a.socket.connect();
      await new Promise((resolve) => a.socket.once('connect', resolve));
      a.socket.disconnect();
    });
  }
});

describe('binary data', () => {
  for (const [label, opts] of [['polling', { transports: ['polling'] }], ['websocket', { transports: ['websocket'] }]]) {
    test(`binary attachments are refused with BAD_REQUEST over ${label}; the socket stays usable`, async () => {
      const alice = await register('alice');
      const roomId = await createRoom(alice, []);
      const a = await client(GATEWAYS[0], alice, opts);
      const withAck = await emit(a.socket, 'send_message', { roomId, content: 'x', file: Buffer.from([1, 2, 3]) });
      assert.equal(withAck.error.code, 'BAD_REQUEST');
      assert.match(withAck.error.message, /binary/);
      a.socket.emit('send_message', Buffer.from('raw bytes'));
      const errEvent = await a.events.next('error');
      assert.equal(errEvent.code, 'BAD_REQUEST');
      // The attachments were skipped, not taken for packets.
      await emit(a.socket, 'join_room', { roomId });
      const ok = await emit(a.socket, 'send_message', { roomId, content: 'still here' });
      assert.equal(typeof ok.seq, 'number');
      a.socket.disconnect();
    });
  }
});
