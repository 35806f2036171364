// The web app in a real browser: Debian's Chromium driven by
// playwright-core, against a stack of the real services behind the devproxy
// (RELAY_PROXY_URL; started by browser_test.go, which also kills and
// restarts the gateway when asked through RELAY_CONTROL_URL). Two users in
// two browser contexts; the steps build on each other, in order.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { deflateSync } from 'node:zlib';

import { chromium } from 'playwright-core';

const proxy = process.env.RELAY_PROXY_URL;
const control = process.env.RELAY_CONTROL_URL;
const shots = process.env.RELAY_SCREENSHOT_DIR;
const executablePath = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
if (!proxy || !control) throw new Error('RELAY_PROXY_URL and RELAY_CONTROL_URL are set by browser_test.go (make test-web)');
if (shots) mkdirSync(shots, { recursive: true });

const XSS_TEXT = `<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>`;
const XSS_FILE = `cat"><img src=x onerror="window.__xss=3">.png`;

async function order(action, name) {
  const res = await fetch(`${control}/${action}?name=${encodeURIComponent(name)}`, { method: 'POST' });
  const body = await res.json();
  if (!res.ok) throw new Error(`control ${action} ${name}: ${body.error}`);
}

/** Polls fn until it returns a truthy value (playwright-core has no expect). */
async function eventually(fn, what, ms = 30_000) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms: ${what}${last ? ` (${last.message})` : ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A small real PNG (a red-and-blue checkerboard), made here. */
function png(w = 24, h = 16) {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (buf) => {
    let c = 0xffffffff;
    for (const b of buf) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type), data]);
    const sum = Buffer.alloc(4);
    sum.writeUInt32BE(crc(td));
    return Buffer.concat([len, td, sum]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  const rows = [];
  for (let y = 0; y < h; y++) {
    const row = [0];
    for (let x = 0; x < w; x++) row.push(...(((x >> 2) + (y >> 2)) % 2 ? [220, 40, 40] : [40, 80, 220]));
    rows.push(Buffer.from(row));
  }
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr), chunk('IDAT', deflateSync(Buffer.concat(rows))), chunk('IEND', Buffer.alloc(0))]);
}

const messages = (page) => page.getByRole('list', { name: 'Messages' });
const message = (page, text) => messages(page).getByRole('listitem').filter({ hasText: text });
const banner = (page) => page.locator('.banner.reconnecting');
/** The room list's entry of a room: its name as a whole word (the presence dot and badge add to the name). */
const roomLink = (page, name) => page.getByRole('navigation', { name: 'Rooms' }).getByRole('link', { name: new RegExp(`(^|\\s)${name}(\\s|$)`) });

async function shot(page, name) {
  if (shots) await page.screenshot({ path: join(shots, name) });
}

describe('the web app in Chromium', () => {
  let browser;
  const users = {};
  // The steps build on each other: after a failure the rest are skipped
  // instead of each timing out on its own.
  let broken = '';
  const step = (name, fn) =>
    it(name, async (t) => {
      if (broken) return t.skip(`an earlier step failed: ${broken}`);
      try {
        await fn();
      } catch (err) {
        broken = name;
        for (const who of Object.keys(users)) await shot(users[who].page, `failed-${who}.png`).catch(() => {});
        throw err;
      }
    });

  before(async () => {
    browser = await chromium.launch({
      executablePath,
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    for (const who of ['alice', 'bob']) {
      const context = await browser.newContext({ viewport: { width: 1100, height: 720 }, colorScheme: 'light' });
      const page = await context.newPage();
      page.setDefaultTimeout(30_000);
      const errors = [];
      page.on('pageerror', (e) => errors.push(e.message));
      page.on('console', (m) => m.type() === 'error' && !/Failed to load resource|WebSocket connection/.test(m.text()) && errors.push(m.text()));
      users[who] = { context, page, errors, name: `${who}${randomBytes(3).toString('hex')}` };
    }
  });

  after(async () => {
    await browser?.close();
  });

  step('signs up two users', async () => {
    for (const who of ['alice', 'bob']) {
      const { page, name } = users[who];
      await page.goto(proxy + '/');
      await page.getByRole('tab', { name: 'Sign up' }).click();
      await page.getByLabel('Username').fill(name);
      await page.getByLabel('Email').fill(`${name}@example.test`);
      await page.getByLabel('Password').fill('correct horse battery');
      if (who === 'alice') await shot(page, 'signup.png');
      await page.getByRole('button', { name: 'Sign up' }).click();
      await page.getByRole('navigation', { name: 'Rooms' }).waitFor();
    }
  });

  step('finds the other user and opens a direct message; both chat', async () => {
    const { alice, bob } = users;
    for (const [me, other] of [
      [alice, bob],
      [bob, alice],
    ]) {
      await me.page.getByRole('button', { name: 'New direct message' }).click();
      const dialog = me.page.getByRole('dialog', { name: 'New direct message' });
      await dialog.getByRole('searchbox', { name: 'Find people' }).fill(other.name.slice(0, 6));
      await dialog.getByRole('button', { name: other.name }).click();
      await dialog.waitFor({ state: 'detached' });
      await me.page.getByRole('heading', { name: other.name }).waitFor();
    }
    await alice.page.getByRole('textbox', { name: 'Message' }).fill('hello bob');
    await alice.page.getByRole('button', { name: 'Send' }).click();
    await message(bob.page, 'hello bob').waitFor();
    // Keyboard: Enter sends.
    await bob.page.getByRole('textbox', { name: 'Message' }).fill('hi alice, see https://example.com/docs and javascript:alert(1)');
    await bob.page.getByRole('textbox', { name: 'Message' }).press('Enter');
    await message(alice.page, 'hi alice').waitFor();
    const links = message(alice.page, 'hi alice').getByRole('link');
    assert.equal(await links.count(), 1, 'only the http(s) URL is a link');
    assert.equal(await links.first().getAttribute('href'), 'https://example.com/docs');
  });

  step('shows typing, presence and read receipts', async () => {
    const { alice, bob } = users;
    await bob.page.getByRole('textbox', { name: 'Message' }).pressSequentially('typing something', { delay: 20 });
    await alice.page.getByText(`${bob.name} is typing…`).waitFor();
    await bob.page.getByRole('textbox', { name: 'Message' }).fill('');
    await eventually(async () => !(await alice.page.getByText(`${bob.name} is typing…`).isVisible()), 'typing ends when the input is cleared');
    // bob is online: the dot in the room header says so.
    await alice.page.getByRole('heading', { name: bob.name }).getByRole('img', { name: 'online' }).waitFor();
    // bob has the room open and read alice's message: alice sees the receipt.
    await message(alice.page, 'hello bob').getByText(`Seen by ${bob.name}`).waitFor();
    await shot(alice.page, 'chat.png');
  });

  step('edits and deletes own messages', async () => {
    const { alice, bob } = users;
    const mine = message(alice.page, 'hello bob');
    await mine.getByRole('button', { name: 'Edit' }).click();
    await mine.getByRole('textbox', { name: 'Edit message' }).fill('hello bob, edited');
    await mine.getByRole('button', { name: 'Save' }).click();
    await message(bob.page, 'hello bob, edited').getByText('(edited)').waitFor();

    await alice.page.getByRole('textbox', { name: 'Message' }).fill('oops, wrong room');
    await alice.page.getByRole('button', { name: 'Send' }).click();
    await message(bob.page, 'oops, wrong room').waitFor();
    const oops = message(alice.page, 'oops, wrong room');
    await oops.getByRole('button', { name: 'Delete' }).click();
    await oops.getByRole('button', { name: 'Confirm delete' }).click();
    await eventually(async () => (await message(bob.page, 'oops, wrong room').count()) === 0, 'the deleted text is gone on the other side');
    await message(bob.page, 'This message was deleted.').waitFor();
    // bob cannot edit or delete alice's messages in a direct room.
    assert.equal(await message(bob.page, 'hello bob, edited').getByRole('button').count(), 0);
  });

  step('renders an XSS payload as text', async () => {
    const { alice, bob } = users;
    await alice.page.getByRole('textbox', { name: 'Message' }).fill(XSS_TEXT);
    await alice.page.getByRole('button', { name: 'Send' }).click();
    const item = message(bob.page, 'window.__xss=2');
    await item.waitFor();
    assert.equal(await item.locator('.body').textContent(), XSS_TEXT);
    assert.equal(await item.locator('img, script').count(), 0, 'no element made from the content');
    for (const who of [alice, bob]) assert.equal(await who.page.evaluate(() => window.__xss), undefined);
  });

  step('uploads an image with a hostile file name; the other side sees its preview and the name as text', async () => {
    const { alice, bob } = users;
    const chooser = alice.page.waitForEvent('filechooser');
    await alice.page.getByRole('button', { name: 'Attach file' }).click();
    await (await chooser).setFiles({ name: XSS_FILE, mimeType: 'image/png', buffer: png() });
    const item = message(bob.page, 'window.__xss=3');
    const img = item.getByRole('img', { name: XSS_FILE });
    await img.waitFor();
    await eventually(() => img.evaluate((el) => el.complete && el.naturalWidth === 24 && el.naturalHeight === 16), 'the preview decoded (24×16)');
    assert.match(await img.getAttribute('src'), /^blob:/, 'shown through an object URL');
    assert.equal(await item.locator('.file-name').textContent(), XSS_FILE);
    await item.getByRole('button', { name: `Download ${XSS_FILE}` }).waitFor();
    for (const who of [alice, bob]) assert.equal(await who.page.evaluate(() => window.__xss), undefined);
  });

  step('raises the unread badge of a room that is not open', async () => {
    const { alice, bob } = users;
    // bob opens another room: a channel of his own.
    await bob.page.getByRole('button', { name: 'Browse channels' }).click();
    const dialog = bob.page.getByRole('dialog', { name: 'Browse channels' });
    await dialog.getByLabel('Channel name').fill(`lobby-${bob.name}`);
    await dialog.getByRole('button', { name: 'Create channel' }).click();
    await bob.page.getByRole('heading', { name: `#lobby-${bob.name}` }).waitFor();
    // alice finds it in the directory and joins.
    await alice.page.getByRole('button', { name: 'Browse channels' }).click();
    const dir = alice.page.getByRole('dialog', { name: 'Browse channels' });
    await dir.getByRole('searchbox', { name: 'Filter channels' }).fill(`lobby-${bob.name}`);
    await dir.getByRole('button', { name: `Join lobby-${bob.name}` }).click();
    await alice.page.getByRole('heading', { name: `#lobby-${bob.name}` }).waitFor();
    // Back to the direct room, where alice writes twice.
    await roomLink(alice.page, bob.name).click();
    for (const text of ['are you there?', 'ping']) {
      await alice.page.getByRole('textbox', { name: 'Message' }).fill(text);
      await alice.page.getByRole('button', { name: 'Send' }).click();
    }
    const entry = roomLink(bob.page, alice.name);
    await entry.getByLabel('2 unread').waitFor();
    await shot(bob.page, 'unread.png');
    await entry.click();
    await message(bob.page, 'ping').waitFor();
    await eventually(async () => (await entry.getByLabel(/unread/).count()) === 0, 'the badge clears when the room is opened');
  });

  step('finds a message by full-text search and jumps to it', async () => {
    const { bob } = users;
    const box = bob.page.getByRole('searchbox', { name: 'Search messages' });
    await box.fill('edited');
    const results = bob.page.getByRole('region', { name: 'Search results' });
    await eventually(async () => {
      await box.press('Enter');
      await results.waitFor();
      return (await results.getByRole('button', { name: /hello bob, edited/ }).count()) > 0;
    }, 'the search index has the edited message');
    await results.getByRole('button', { name: /hello bob, edited/ }).click();
    await eventually(() => message(bob.page, 'hello bob, edited').evaluate((el) => el.classList.contains('highlight') && document.activeElement === el), 'the hit is shown and focused');
  });

  step('shows the reconnect banner when the gateway dies, then resumes: same messages, same order on both sides', async () => {
    const { alice, bob } = users;
    await order('kill', 'gateway0');
    await banner(alice.page).waitFor();
    await banner(bob.page).waitFor();
    await shot(alice.page, 'reconnecting.png');
    // Written while disconnected: shown at once as sending, delivered on resume.
    await alice.page.getByRole('textbox', { name: 'Message' }).fill('sent while the gateway was down');
    await alice.page.getByRole('button', { name: 'Send' }).click();
    await message(alice.page, 'sent while the gateway was down').getByText('Sending…').waitFor();
    await order('start', 'gateway0');
    await banner(alice.page).waitFor({ state: 'detached', timeout: 30_000 });
    await banner(bob.page).waitFor({ state: 'detached', timeout: 30_000 });
    await message(bob.page, 'sent while the gateway was down').waitFor({ timeout: 30_000 });
    await bob.page.getByRole('textbox', { name: 'Message' }).fill('and back again');
    await bob.page.getByRole('button', { name: 'Send' }).click();
    await message(alice.page, 'and back again').waitFor();
    const seqs = (page) => messages(page).locator('li.message').evaluateAll((els) => els.map((e) => `${e.dataset.seq}:${e.querySelector('.body, .attachment')?.textContent ?? ''}`));
    await eventually(async () => {
      const [a, b] = [await seqs(alice.page), await seqs(bob.page)];
      return JSON.stringify(a) === JSON.stringify(b) && !a.some((x) => x.startsWith('undefined'));
    }, 'both show the same messages in the same order, none pending');
    const list = await seqs(alice.page);
    assert.equal(new Set(list).size, list.length, 'no duplicate');
    const nums = list.map((x) => Number(x.split(':')[0]));
    assert.deepEqual([...nums].sort((x, y) => x - y), nums, 'seq order');
  });

  step('signs out and back in', async () => {
    const { alice } = users;
    await alice.page.getByRole('button', { name: 'Sign out' }).click();
    await alice.page.getByRole('button', { name: 'Sign in' }).waitFor();
    await alice.page.getByLabel('Username').fill(alice.name);
    await alice.page.getByLabel('Password').fill('correct horse battery');
    await alice.page.getByLabel('Password').press('Enter');
    await roomLink(alice.page, users.bob.name).waitFor();
  });

  it('had no script errors', () => {
    for (const who of ['alice', 'bob']) assert.deepEqual(users[who].errors, [], `${who}'s page errors`);
  });
});
