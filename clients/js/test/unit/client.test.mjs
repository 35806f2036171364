// RelayClient's connection logic against a scripted in-memory WebSocket:
// resends across reconnects, rejoin with lastSeq, gap repair, re-auth on
// 4001, and no reconnect after a refusal for good. (The same behaviour
// against the real servers is in test/integration.)
import assert from 'node:assert/strict';
import { beforeEach, describe, it } from 'node:test';

import { MemoryTokenStore, RelayClient } from '../../dist/index.js';

class FakeWS {
  static all = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
    FakeWS.all.push(this);
  }
  send(s) {
    this.sent.push(JSON.parse(s));
  }
  close() {
    this.readyState = 3;
  }
  // server side
  open() {
    this.readyState = 1;
    this.onopen?.({});
  }
  push(frame) {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
  reply(event, data) {
    const f = this.sent.findLast((x) => x.event === event);
    assert.ok(f, `no ${event} sent`);
    this.push({ event: 'ack', ref: f.ref, data });
    return f;
  }
  drop(code = 1006) {
    this.readyState = 3;
    this.onclose?.({ code, reason: '' });
  }
}

const tick = (ms = 5) => new Promise((r) => setTimeout(r, ms));
async function until(cond, what) {
  for (let i = 0; i < 200; i++) {
    if (cond()) return;
    await tick(5);
  }
  assert.fail(`timed out waiting for ${what}`);
}

function newClient(fetchFn) {
  const session = {
    user: { id: '7', username: 'alice', email: 'a@x.test' },
    token: 'tok1',
    expiresAt: new Date(Date.now() + 3600_000).toISOString(),
    refreshToken: 'r1',
  };
  return new RelayClient({
    baseUrl: 'http://relay.test',
    tokenStore: new MemoryTokenStore(session),
    WebSocket: FakeWS,
    fetch: fetchFn ?? (async () => new Response('{}', { status: 500 })),
    backoff: { baseMs: 1, maxMs: 2, restartJitterMs: 1 },
    frameRate: { perSec: 1000, burst: 1000 },
  });
}

beforeEach(() => {
  FakeWS.all = [];
});

describe('RelayClient', () => {
  it('resends an unacked message with the same clientMsgId after a reconnect, and rejoins with lastSeq', async () => {
    const c = newClient();
    c.connect();
    await until(() => FakeWS.all.length === 1, 'first socket');
    assert.equal(FakeWS.all[0].url, 'ws://relay.test/ws?token=tok1');
    c.join('5', { lastSeq: 3 });
    const { clientMsgId, stored } = c.send('5', 'hello');
    assert.equal(c.timeline('5').items()[0].pending, true);
    const ws1 = FakeWS.all[0];
    ws1.open();
    await until(() => ws1.sent.length === 2, 'join and send');
    assert.deepEqual(ws1.sent.map((f) => f.event), ['join_room', 'send_message']);
    assert.equal(ws1.sent[0].data.lastSeq, 3);
    ws1.reply('join_room', { roomId: '5', lastSeq: 3 });
    ws1.drop(1006);
    await until(() => FakeWS.all.length === 2, 'reconnect');
    const ws2 = FakeWS.all[1];
    ws2.open();
    await until(() => ws2.sent.length === 2, 'rejoin and resend');
    assert.equal(ws2.sent[1].data.clientMsgId, clientMsgId, 'same idempotency key');
    ws2.reply('join_room', { roomId: '5', lastSeq: 4 });
    ws2.push({ event: 'message', data: { id: 'm4', roomId: '5', userId: '7', username: 'alice', content: 'hello', type: 'text', clientMsgId, seq: 4, prevSeq: 3, createdAt: 'now' } });
    ws2.reply('send_message', { id: 'm4', roomId: '5', seq: 4, clientMsgId, createdAt: 'now' });
    const m = await stored;
    assert.equal(m.id, 'm4');
    assert.deepEqual(c.timeline('5').items().map((i) => [i.pending, i.seq]), [[false, 4]], 'once, not pending');
    assert.equal(c.lastSeq('5'), 4);
    c.close();
  });

  it('repairs a gap by rejoining with the last seq and applies the replay in order', async () => {
    const c = newClient();
    c.connect();
    await until(() => FakeWS.all.length === 1, 'socket');
    const ws = FakeWS.all[0];
    ws.open();
    c.join('5', { lastSeq: 10 });
    await until(() => ws.sent.length === 1, 'join');
    ws.reply('join_room', { roomId: '5', lastSeq: 10 });
    await tick();
    const m = (seq, prevSeq) => ({ event: 'message', data: { id: `m${seq}`, roomId: '5', userId: '8', username: 'bob', content: 'x', type: 'text', seq, prevSeq, createdAt: 'now' } });
    ws.push(m(14, 12));
    await until(() => ws.sent.length === 2, 'rejoin');
    assert.deepEqual(ws.sent[1].data, { roomId: '5', lastSeq: 10 });
    ws.push(m(15, 14)); // held until the rejoin is acked
    ws.reply('join_room', { roomId: '5', lastSeq: 15 });
    await tick();
    ws.push(m(12, 10));
    ws.push(m(14, 12));
    ws.push(m(15, 14));
    assert.deepEqual(c.timeline('5').list().map((x) => x.seq), [12, 14, 15]);
    c.close();
  });

  it('refreshes the token after 4001 and reconnects with the new one', async () => {
    const calls = [];
    const c = newClient(async (url, init) => {
      calls.push([url, JSON.parse(init.body)]);
      return new Response(
        JSON.stringify({ user: { id: '7', username: 'alice', email: 'a@x.test' }, token: 'tok2', expiresAt: new Date(Date.now() + 3600_000).toISOString(), refreshToken: 'r2' }),
        { status: 200 },
      );
    });
    c.connect();
    await until(() => FakeWS.all.length === 1, 'socket');
    FakeWS.all[0].open();
    FakeWS.all[0].drop(4001);
    await until(() => FakeWS.all.length === 2, 'reconnect');
    assert.deepEqual(calls, [['http://relay.test/api/auth/refresh', { refreshToken: 'r1' }]]);
    assert.match(FakeWS.all[1].url, /token=tok2$/);
    assert.equal(c.auth.session.refreshToken, 'r2');
    c.close();
  });

  it('signs out when the refresh token is refused', async () => {
    const c = newClient(async () => new Response(JSON.stringify({ error: { code: 'UNAUTHORIZED', message: 'revoked' } }), { status: 401 }));
    const statuses = [];
    c.on('status', (s) => statuses.push(s.status));
    c.connect();
    await until(() => FakeWS.all.length === 1, 'socket');
    FakeWS.all[0].open();
    FakeWS.all[0].drop(4001);
    await until(() => c.auth.session === null, 'session cleared');
    await tick(20);
    assert.equal(FakeWS.all.length, 1, 'no reconnect without a session');
    assert.ok(['idle', 'stopped'].includes(statuses.at(-1)));
    c.close();
  });

  it('retries when a handshake fails with an error and no close event (Node.js 20)', async () => {
    const c = newClient();
    c.connect();
    await until(() => FakeWS.all.length === 1, 'socket');
    FakeWS.all[0].onerror({});
    await until(() => FakeWS.all.length === 2, 'a second attempt');
    FakeWS.all[1].open();
    assert.equal(c.status.status, 'open');
    c.close();
  });

  it('does not reconnect after a close it cannot fix (1008)', async () => {
    const c = newClient();
    c.connect();
    await until(() => FakeWS.all.length === 1, 'socket');
    FakeWS.all[0].open();
    FakeWS.all[0].drop(1008);
    await tick(30);
    assert.equal(FakeWS.all.length, 1);
    assert.equal(c.status.status, 'stopped');
    c.close();
  });

  it('marks a refused send failed and retry sends it again with the same clientMsgId', async () => {
    const c = newClient();
    c.connect();
    await until(() => FakeWS.all.length === 1, 'socket');
    const ws = FakeWS.all[0];
    ws.open();
    const { clientMsgId, stored } = c.send('5', 'hi');
    await until(() => ws.sent.length === 1, 'send');
    ws.push({ event: 'error', ref: ws.sent[0].ref, data: { code: 'FORBIDDEN', message: 'not a member' } });
    await assert.rejects(stored, /not a member/);
    assert.equal(c.timeline('5').items()[0].state, 'failed');
    const again = c.retry('5', clientMsgId);
    await until(() => ws.sent.length === 2, 'resend');
    assert.equal(ws.sent[1].data.clientMsgId, clientMsgId);
    ws.reply('send_message', { id: 'm1', roomId: '5', seq: 1, clientMsgId, createdAt: 'now' });
    assert.equal((await again).seq, 1);
    c.close();
  });
});
