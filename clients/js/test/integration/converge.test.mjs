// relay-client against a real stack (started by tests/browser's Go test:
// two gateways behind the devproxy, whose address is RELAY_PROXY_URL). Run
// with `make test-web`; needs node --experimental-websocket on Node.js 20.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';

import { RelayClient } from '../../dist/index.js';

const proxy = process.env.RELAY_PROXY_URL;
const control = process.env.RELAY_CONTROL_URL;
if (!proxy || !control) throw new Error('RELAY_PROXY_URL and RELAY_CONTROL_URL are set by tests/browser (make test-web)');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(cond, what, ms = 30_000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(50);
  }
}

async function order(action, name) {
  const res = await fetch(`${control}/${action}?name=${encodeURIComponent(name)}`, { method: 'POST' });
  const body = await res.json();
  if (!res.ok) throw new Error(`control ${action} ${name}: ${body.error}`);
  return body.name;
}

async function newUser(prefix) {
  const c = new RelayClient({ baseUrl: proxy, backoff: { baseMs: 100, maxMs: 1000 } });
  const name = `${prefix}${randomBytes(4).toString('hex')}`;
  await c.signUp({ username: name, email: `${name}@example.test`, password: 'correct horse battery' });
  return c;
}

/** The stored messages of a room as the client shows them. */
const shown = (c, roomId) => c.timeline(roomId).items();

describe('relay-client against the real stack', () => {
  let alice, bob, roomId;

  before(async () => {
    alice = await newUser('alice');
    bob = await newUser('bob');
    const room = await alice.api.createRoom({ type: 'group', name: 'convergence', memberIds: [bob.user.id] });
    roomId = room.id;
    for (const c of [alice, bob]) {
      c.connect();
      const ack = await c.join(roomId);
      assert.equal(ack.roomId, roomId);
    }
  });

  after(() => {
    alice?.close();
    bob?.close();
  });

  it('converges after a gateway is killed mid-conversation: same messages, same order, no gap, no duplicate', async () => {
    const statuses = { alice: [], bob: [] };
    alice.on('status', (s) => statuses.alice.push(s.status));
    bob.on('status', (s) => statuses.bob.push(s.status));
    const sends = [];
    const say = (c, who, i) => sends.push(c.send(roomId, `${who} ${i}`).stored);

    for (let i = 0; i < 10; i++) {
      say(alice, 'alice', i);
      say(bob, 'bob', i);
      await sleep(20);
    }
    // Both clients are on the gateway the devproxy prefers for this host.
    const killed = await order('kill', 'preferred-gateway');
    // Keep talking while the connections are down: these wait in the outbox.
    for (let i = 10; i < 20; i++) {
      say(alice, 'alice', i);
      say(bob, 'bob', i);
      await sleep(20);
    }
    await until(() => alice.status.status === 'open' && bob.status.status === 'open', 'both reconnected');
    for (let i = 20; i < 25; i++) {
      say(alice, 'alice', i);
      say(bob, 'bob', i);
    }
    const stored = await Promise.all(sends);
    assert.equal(new Set(stored.map((m) => m.id)).size, 50, 'every send stored once');

    await until(() => shown(alice, roomId).filter((m) => !m.pending).length >= 50 && shown(bob, roomId).filter((m) => !m.pending).length >= 50, 'all 50 messages on both sides');
    await sleep(300); // anything extra (a duplicate) would arrive now
    const a = shown(alice, roomId);
    const b = shown(bob, roomId);
    assert.ok(!a.some((m) => m.pending) && !b.some((m) => m.pending), 'nothing left pending');
    assert.deepEqual(a.map((m) => m.id), b.map((m) => m.id), 'same messages in the same order');
    assert.equal(a.length, 50, 'no duplicate');
    for (let i = 1; i < a.length; i++) assert.ok(a[i].seq > a[i - 1].seq, 'seq order');
    // No gap: the server's history holds exactly these.
    const history = await alice.api.history(roomId, { after: -1, limit: 200 });
    assert.deepEqual(a.map((m) => m.id), history.messages.map((m) => m.id), 'the timeline is the stored history');
    for (const who of ['alice', 'bob']) {
      const texts = a.filter((m) => m.content.startsWith(who + ' ')).map((m) => Number(m.content.split(' ')[1]));
      assert.deepEqual([...texts].sort((x, y) => x - y), [...Array(25).keys()], `${who}'s 25 messages`);
    }
    assert.ok(statuses.alice.includes('reconnecting') && statuses.bob.includes('reconnecting'), `both saw the drop (${killed})`);
    assert.equal(alice.lastSeq(roomId), bob.lastSeq(roomId), 'both at the same position of the log');
  });

  it('resumes with lastSeq: events sent while a client was away arrive once, in order', async () => {
    const before = shown(bob, roomId).length;
    bob.disconnect();
    const ids = [];
    for (let i = 0; i < 5; i++) ids.push((await alice.send(roomId, `while away ${i}`).stored).id);
    const edited = ids[1];
    await alice.edit(roomId, edited, 'while away 1 (edited)');
    await alice.delete(roomId, ids[2]);
    bob.connect();
    await until(() => shown(bob, roomId).length === before + 5, 'the replay');
    await until(() => bob.timeline(roomId).get(ids[2])?.isDeleted, 'the deletion');
    const tail = shown(bob, roomId).slice(-5);
    assert.deepEqual(tail.map((m) => m.id), ids);
    assert.equal(bob.timeline(roomId).get(edited).content, 'while away 1 (edited)');
    assert.equal(bob.timeline(roomId).get(ids[2]).content, undefined);
  });

  it('shows typing to the other user and ends it on send', async () => {
    const seen = [];
    const off = bob.on('typing', (t) => t.roomId === roomId && seen.push(t.typing));
    alice.startTyping(roomId);
    await until(() => bob.typingUsers(roomId).some((u) => u.userId === alice.user.id), 'bob sees alice typing');
    await alice.send(roomId, 'done typing').stored;
    await until(() => bob.typingUsers(roomId).length === 0, 'typing ended by the send');
    off();
    assert.deepEqual(seen, [true, false]);
  });

  it('records read receipts', async () => {
    const last = alice.timeline(roomId).newestSeq;
    await bob.markRead(roomId, last);
    await until(() => alice.readPositions(roomId).get(bob.user.id) === last, 'alice sees bob read up to the last message');
  });

  it('refuses a send to a room the user is not in, and reports it', async () => {
    const other = await alice.api.createRoom({ type: 'group', name: 'private' });
    const failed = new Promise((resolve) => bob.on('send_failed', resolve));
    const { stored } = bob.send(other.id, 'let me in');
    await assert.rejects(stored, (e) => e.code === 'FORBIDDEN');
    assert.equal((await failed).error.code, 'FORBIDDEN');
    assert.equal(bob.timeline(other.id).items()[0].state, 'failed');
  });
});
