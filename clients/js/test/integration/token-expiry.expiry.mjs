// relay-client with access tokens of a few seconds (the Go test starts this
// stack with JWT_TTL=4s): the gateway closes with 4001 when a token
// expires, and the client must refresh (rotating the refresh token) and
// resume without losing or repeating a message. Run by tests/browser's
// TestClientTokenExpiry (make test-web).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, describe, it } from 'node:test';

import { RelayClient } from '../../dist/index.js';

const proxy = process.env.RELAY_PROXY_URL;
if (!proxy) throw new Error('RELAY_PROXY_URL is set by tests/browser (make test-web)');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function newUser(prefix) {
  const c = new RelayClient({ baseUrl: proxy, backoff: { baseMs: 100, maxMs: 1000 } });
  const name = `${prefix}${randomBytes(4).toString('hex')}`;
  await c.signUp({ username: name, email: `${name}@example.test`, password: 'correct horse battery' });
  return c;
}

describe('short-lived access tokens', () => {
  const clients = [];
  after(() => clients.forEach((c) => c.close()));

  it('reconnects after 4001 with a refreshed token and resumes without a gap or a duplicate', async () => {
    const alice = await newUser('alice');
    const bob = await newUser('bob');
    clients.push(alice, bob);
    const first = alice.auth.session;
    assert.ok(first.refreshToken, 'sign-up gives a refresh token');
    const room = await alice.api.createRoom({ type: 'group', name: 'expiry', memberIds: [bob.user.id] });
    const closes = [];
    alice.on('status', (s) => s.closeCode !== undefined && closes.push(s.closeCode));
    for (const c of [alice, bob]) {
      c.connect();
      await c.join(room.id, { lastSeq: -1 }); // everything, also what came before the join
    }
    // Talk for longer than two token lifetimes.
    const sent = [];
    const end = Date.now() + 10_000;
    for (let i = 0; Date.now() < end; i++) {
      sent.push((await bob.send(room.id, `tick ${i}`).stored).id);
      await sleep(150);
    }
    assert.ok(closes.includes(4001), `the gateway closed an expired session (closes: ${closes})`);
    for (let t = 0; t < 100 && alice.timeline(room.id).list().length < sent.length; t++) await sleep(100);
    const got = alice.timeline(room.id).list();
    const missing = sent.filter((id) => !got.some((m) => m.id === id));
    assert.deepEqual(got.map((m) => m.id), sent, `every message once, in order: ${got.length} shown of ${sent.length} sent, missing ${JSON.stringify(missing.map((id) => got.length && sent.indexOf(id)))}, seqs ${got.map((m) => m.seq)}, closes ${closes}`);
    const now = alice.auth.session;
    assert.notEqual(now.token, first.token, 'a new access token');
    assert.notEqual(now.refreshToken, first.refreshToken, 'the refresh token was rotated');
    // The spent refresh token is refused (and revokes the family).
    const reuse = await fetch(`${proxy}/api/auth/refresh`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ refreshToken: first.refreshToken }),
    });
    assert.equal(reuse.status, 401);
  });

  it('signs out: the refresh token no longer works', async () => {
    const carol = await newUser('carol');
    clients.push(carol);
    const { refreshToken } = carol.auth.session;
    await carol.signOut();
    assert.equal(carol.auth.session, null);
    const res = await fetch(`${proxy}/api/auth/refresh`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ refreshToken }),
    });
    assert.equal(res.status, 401);
  });
});
