// Unit tests of the pure parts: backoff and close codes, seq cursor, timeline
// merge, typing renewals, link parsing, rate limiting, token claims.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  SeqCursor,
  Timeline,
  TokenBucket,
  TypingNotifier,
  backoffDelay,
  closeAction,
  linkify,
  reconnectDelay,
  safeHref,
  sessionFromToken,
  tokenFresh,
} from '../../dist/index.js';
import { errorFromBody } from '../../dist/errors.js';

const msg = (seq, extra = {}) => ({
  id: `m${seq}`,
  roomId: '1',
  userId: '7',
  username: 'alice',
  content: `hello ${seq}`,
  type: 'text',
  seq,
  createdAt: new Date(seq * 1000).toISOString(),
  ...extra,
});

describe('close codes', () => {
  it('maps every code of protocol.md to an action', () => {
    assert.equal(closeAction(1012, false), 'reconnect-now');
    assert.equal(closeAction(4001, false), 'reauth');
    for (const code of [1006, 1011, 1013, 4000, 1002, 1009, 1001, 1000]) assert.equal(closeAction(code, false), 'backoff', `code ${code}`);
    for (const code of [1008, 1003]) assert.equal(closeAction(code, false), 'stop', `code ${code}`);
    assert.equal(closeAction(1006, true), 'stop', 'a close the client asked for never reconnects');
  });
});

describe('full-jitter backoff', () => {
  it('stays within [0, min(30 s, 0.5 s × 2^attempt))', () => {
    for (let attempt = 0; attempt < 12; attempt++) {
      const ceiling = Math.min(30_000, 500 * 2 ** attempt);
      assert.equal(backoffDelay(attempt, {}, () => 0), 0);
      assert.equal(backoffDelay(attempt, {}, () => 0.999999), Math.floor(0.999999 * ceiling));
      for (let i = 0; i < 50; i++) {
        const d = backoffDelay(attempt);
        assert.ok(d >= 0 && d < ceiling, `attempt ${attempt}: ${d}`);
      }
    }
  });
  it('reconnects within 1 s after a restart and at once to re-authenticate', () => {
    for (let i = 0; i < 50; i++) assert.ok(reconnectDelay('reconnect-now', 9) < 1000);
    assert.equal(reconnectDelay('reauth', 9), 0);
  });
  it('honours custom settings and huge attempt counts', () => {
    assert.equal(backoffDelay(3, { baseMs: 100, maxMs: 250 }, () => 0.5), 125);
    assert.ok(Number.isFinite(backoffDelay(5000, {}, () => 0.5)));
  });
});

describe('SeqCursor', () => {
  it('applies events in order and drops duplicates', () => {
    const c = new SeqCursor(10);
    assert.equal(c.accept(12, 10), 'apply');
    assert.equal(c.accept(12, 10), 'duplicate');
    assert.equal(c.accept(11, undefined), 'duplicate');
    assert.equal(c.accept(15, undefined), 'apply', 'a missing prevSeq is accepted');
    assert.equal(c.last, 15);
  });
  it('detects a gap, holds events until the rejoin is acked, then follows the replay', () => {
    const c = new SeqCursor(10);
    assert.equal(c.accept(14, 12), 'gap');
    assert.ok(c.repairing);
    assert.equal(c.last, 10, 'the gap event is not applied');
    assert.equal(c.accept(16, 14), 'hold');
    c.joined(16, 10);
    assert.equal(c.accept(12, 10), 'apply');
    assert.equal(c.accept(14, 12), 'apply');
    assert.equal(c.accept(16, 14), 'apply');
    assert.equal(c.accept(16, 14), 'duplicate');
  });
  it('takes the join ack as the position when it had none', () => {
    const c = new SeqCursor();
    c.startRepair();
    c.joined(41, undefined);
    assert.equal(c.last, 41);
    assert.equal(c.accept(42, 41), 'apply');
    const empty = new SeqCursor();
    empty.joined(null, undefined);
    assert.equal(empty.last, -1);
  });
  it('rebases after a resync_required the server cannot fill', () => {
    const c = new SeqCursor(10);
    c.resync(20, false);
    assert.equal(c.accept(50, 49), 'rebase');
    assert.equal(c.rebaseFrom, 20);
    assert.equal(c.accept(51, 50), 'apply');
    const r = new SeqCursor(10);
    r.resync(12, true);
    assert.equal(r.accept(13, 12), 'hold', 'a retriable resync waits for the rejoin');
  });
});

describe('Timeline', () => {
  it('merges pages and live events by seq without duplicates', () => {
    const t = new Timeline();
    t.upsert(msg(30));
    t.upsert(msg(31));
    t.mergePage([msg(10), msg(20), msg(30)], { older: true, hasMore: true });
    t.upsert(msg(31));
    t.mergePage([msg(5), msg(10)], { older: true, hasMore: false });
    assert.deepEqual(t.list().map((m) => m.seq), [5, 10, 20, 30, 31]);
    assert.equal(t.hasMoreOlder, false);
    assert.equal(t.oldestSeq, 5);
    assert.equal(t.newestSeq, 31);
  });
  it('shows a pending send until its message arrives, then once', () => {
    const t = new Timeline();
    t.addPending({ clientMsgId: 'c1', roomId: '1', userId: '7', username: 'alice', content: 'hi', type: 'text', createdAt: '', state: 'sending' });
    assert.equal(t.items().length, 1);
    assert.equal(t.items()[0].pending, true);
    t.upsert(msg(40, { clientMsgId: 'c1', content: 'hi' }));
    assert.deepEqual(t.items().map((i) => [i.pending, i.seq]), [[false, 40]]);
  });
  it('applies edits and deletions, also to messages loaded later', () => {
    const t = new Timeline();
    t.upsert(msg(1));
    t.applyEdit({ roomId: '1', messageId: 'm1', userId: '7', content: 'changed', editedAt: 'x', seq: 2 });
    assert.equal(t.get('m1').content, 'changed');
    assert.equal(t.get('m1').isEdited, true);
    t.applyDelete({ roomId: '1', messageId: 'm0', userId: '7', deletedAt: 'y', seq: 3 });
    t.mergePage([msg(0), msg(1)], { older: true, hasMore: false });
    assert.equal(t.get('m0').isDeleted, true, 'a deletion seen live holds over a page read before it');
    assert.equal(t.get('m0').content, undefined);
    assert.equal(t.get('m1').content, 'changed', 'an edit seen live holds over a stale page');
  });
  it('keeps snapshots stable until something changes', () => {
    const t = new Timeline();
    t.upsert(msg(1));
    const a = t.items();
    assert.equal(t.items(), a);
    assert.equal(t.upsert(msg(1)), false, 'the same message again changes nothing');
    assert.equal(t.items(), a);
    t.upsert(msg(2));
    assert.notEqual(t.items(), a);
  });
});

describe('TypingNotifier', () => {
  function fake() {
    let now = 0;
    const timers = [];
    return {
      timers: {
        now: () => now,
        setTimeout: (fn, ms) => {
          const h = { fn, at: now + ms, live: true };
          timers.push(h);
          return h;
        },
        clearTimeout: (h) => h && (h.live = false),
      },
      advance(ms) {
        now += ms;
        for (const h of timers) if (h.live && h.at <= now) { h.live = false; h.fn(); }
      },
    };
  }
  it('starts once, renews every 2.5 s while typing, stops after 3 s idle', () => {
    const f = fake();
    const sent = [];
    const n = new TypingNotifier((e, r) => sent.push(`${e}:${r}`), { renewMs: 2500, idleMs: 3000 }, f.timers);
    n.keystroke('1');
    f.advance(1000);
    n.keystroke('1');
    f.advance(1000);
    n.keystroke('1');
    assert.deepEqual(sent, ['typing_start:1']);
    f.advance(600);
    n.keystroke('1');
    assert.deepEqual(sent, ['typing_start:1', 'typing_start:1'], 'renewed after 2.6 s');
    f.advance(3000);
    assert.deepEqual(sent.at(-1), 'typing_stop:1');
    n.stop('1');
    assert.equal(sent.length, 3, 'no stop when not typing');
  });
  it('reset forgets typing without sending a stop', () => {
    const f = fake();
    const sent = [];
    const n = new TypingNotifier((e) => sent.push(e), { renewMs: 2500, idleMs: 3000 }, f.timers);
    n.keystroke('1');
    n.reset('1');
    f.advance(5000);
    assert.deepEqual(sent, ['typing_start']);
  });
});

describe('links', () => {
  it('turns only http(s) URLs into links', () => {
    assert.deepEqual(linkify('see https://example.com/a?b=1. and javascript:alert(1)'), [
      { text: 'see ' },
      { text: 'https://example.com/a?b=1', href: 'https://example.com/a?b=1' },
      { text: '. and javascript:alert(1)' },
    ]);
    assert.equal(safeHref('javascript:alert(1)'), null);
    assert.equal(safeHref('data:text/html,<script>'), null);
    assert.equal(safeHref('http://x.test/'), 'http://x.test/');
    assert.deepEqual(linkify('<img src=x onerror=alert(1)>'), [{ text: '<img src=x onerror=alert(1)>' }]);
  });
});

describe('TokenBucket', () => {
  it('allows the burst, then paces at the rate', () => {
    let now = 0;
    const b = new TokenBucket(10, 3, () => now);
    assert.deepEqual([b.take(), b.take(), b.take()], [0, 0, 0]);
    assert.equal(b.take(), 100);
    now += 100;
    assert.equal(b.take(), 0);
  });
});

describe('tokens', () => {
  it('reads user and expiry from a JWT', () => {
    const payload = Buffer.from(JSON.stringify({ sub: '42', username: 'zoë', exp: 2_000_000_000 })).toString('base64url');
    const s = sessionFromToken(`h.${payload}.sig`);
    assert.equal(s.user.id, '42');
    assert.equal(s.user.username, 'zoë');
    assert.equal(s.expiresAt, new Date(2_000_000_000_000).toISOString());
    assert.equal(tokenFresh(s, 0), true);
    assert.equal(tokenFresh(s, 2_000_000_000_000 - 30_000), false, 'refreshed a minute ahead');
    const short = { ...s, expiresAt: new Date(100_000).toISOString(), obtainedAt: 92_000 };
    assert.equal(tokenFresh(short, 97_000), true, 'an 8 s token is not stale at once');
    assert.equal(tokenFresh(short, 98_500), false, 'but 2 s (a quarter) before it expires');
  });
  it('reads REST error bodies', () => {
    const e = errorFromBody(413, { error: { code: 'TOO_LARGE', message: 'file too large' } });
    assert.equal(e.code, 'TOO_LARGE');
    assert.equal(e.status, 413);
    assert.equal(errorFromBody(502, 'x').code, 'UNAVAILABLE');
  });
});
