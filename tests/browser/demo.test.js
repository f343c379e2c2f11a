// The demo page served at `/` (clients/demo/index.html), end to end: two
// people chat in two browser contexts on a dev-mode node.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { Server, api, launchBrowser, newPage, startDevServer } from './helpers.js';

const TRANSPORTS = ['websocket', 'sse', 'long-polling'];

/** Waits for `fn(arg)` in the page; on timeout says what and shows the page state. */
async function until(page, fn, arg, message, timeout = 15000) {
  try {
    await page.waitForFunction(fn, arg, { timeout, polling: 50 });
  } catch (e) {
    const seen = await snapshot(page).catch((x) => `unavailable: ${x.message}`);
    throw new Error(
      `timed out after ${timeout} ms waiting for: ${message}\n${e.message.split('\n')[0]}\n` +
        `page: ${JSON.stringify(seen, null, 1)}\n` +
        `page errors: ${page.problems.join('\n')}\nconsole errors: ${page.consoleErrors.join('\n')}`,
    );
  }
}

/** What a person sees: state, transport, people present, messages. */
function snapshot(page) {
  return page.evaluate(() => ({
    state: document.querySelector('#state').dataset.state,
    transport: document.querySelector('#transport').textContent.trim(),
    presence: [...document.querySelectorAll('#presence [data-testid="presence-item"] .name')].map((n) => n.textContent),
    messages: [...document.querySelectorAll('#messages [data-testid="message"]')].map((li) => ({
      author: li.querySelector('.author').textContent,
      text: li.querySelector('.text').textContent,
      time: li.querySelector('.time').textContent,
    })),
    error: document.querySelector('#error-note').hidden ? null : document.querySelector('#error-note').textContent,
    devNote: !document.querySelector('#dev-note').hidden,
  }));
}

const presenceIs = (page, names, message) =>
  until(
    page,
    (want) => {
      const got = [...document.querySelectorAll('#presence [data-testid="presence-item"] .name')].map((n) => n.textContent).sort();
      return JSON.stringify(got) === JSON.stringify(want);
    },
    [...names].sort(),
    message ?? `presence ${names.join(', ')}`,
  );

const hasMessage = (page, text, message) =>
  until(
    page,
    (want) => [...document.querySelectorAll('#messages [data-testid="message"] .text')].some((n) => n.textContent === want),
    text,
    message ?? `message "${text}"`,
  );

const connectedOver = (page, message) =>
  until(
    page,
    (transports) =>
      document.querySelector('#state').dataset.state === 'connected' &&
      transports.includes(document.querySelector('#transport').textContent.trim()),
    TRANSPORTS,
    message ?? 'connected with a transport badge',
  );

async function join(page, baseUrl, name, room) {
  await page.goto(`${baseUrl}/`);
  await page.fill('#name', name);
  if (room) await page.fill('#room', room);
  await page.click('#join');
  await connectedOver(page, `${name} connected`);
}

async function say(page, text) {
  await page.fill('#message', text);
  await page.click('#send');
}

describe('the demo page', () => {
  let browser;
  let dev;

  before(async () => {
    [browser, dev] = await Promise.all([launchBrowser(), startDevServer()]);
  });

  after(async () => {
    await browser?.close().catch(() => {});
    await dev?.stop();
  });

  it('(e) two people chat: presence, messages both ways, history, the transport badge', async () => {
    const alice = await newPage(browser);
    const bob = await newPage(browser);
    const room = 'chat:lobby';

    await join(alice, dev.url, 'Alice');
    assert.equal(await alice.inputValue('#room'), room, 'the default room');
    await presenceIs(alice, ['Alice']);
    await join(bob, dev.url, 'Bob');
    await presenceIs(bob, ['Alice', 'Bob'], 'Bob sees Alice and himself');
    await presenceIs(alice, ['Alice', 'Bob'], 'Alice sees Bob join');

    await say(alice, 'Hi Bob!');
    await hasMessage(bob, 'Hi Bob!');
    await say(bob, 'Hello Alice');
    await hasMessage(alice, 'Hello Alice');
    await hasMessage(bob, 'Hello Alice', 'Bob sees his own message');

    const seenByBob = (await snapshot(bob)).messages;
    assert.deepEqual(
      seenByBob.map((m) => m.text),
      ['Hi Bob!', 'Hello Alice'],
    );
    assert.match(seenByBob[0].author, /^Alice/);
    assert.match(seenByBob[1].author, /^Bob/);
    assert.match(seenByBob[0].time, /\d/, 'a time is shown');
    const aliceView = await snapshot(alice);
    assert.ok(TRANSPORTS.includes(aliceView.transport), aliceView.transport);
    assert.equal(aliceView.state, 'connected');

    // The backend can post too (no author: shown as the server).
    await api(dev.url, 'publish', { channel: room, data: { text: 'Server says hi' } }, dev.apiKey);
    await hasMessage(alice, 'Server says hi');
    await hasMessage(bob, 'Server says hi');

    // Bob leaves the page: Alice sees him go.
    await bob.goto('about:blank');
    await bob.context().close();
    await presenceIs(alice, ['Alice'], 'Alice sees Bob leave');

    // Alice comes back later: her name is remembered and the history is shown.
    await alice.reload();
    assert.equal(await alice.inputValue('#name'), 'Alice', 'the name is kept in localStorage');
    await alice.click('#join');
    await connectedOver(alice);
    for (const text of ['Hi Bob!', 'Hello Alice', 'Server says hi']) await hasMessage(alice, text, `history: ${text}`);
    const again = (await snapshot(alice)).messages.map((m) => m.text);
    assert.deepEqual(again, ['Hi Bob!', 'Hello Alice', 'Server says hi'], 'each message once, in order');
    assert.deepEqual(alice.problems, []);
    await alice.context().close();
  });

  it('forcing a transport with the selector reconnects over it and keeps chatting', async () => {
    const carol = await newPage(browser);
    const dave = await newPage(browser);
    const room = `chat:switch-${process.pid}`;
    await join(carol, dev.url, 'Carol', room);
    await join(dave, dev.url, 'Dave', room);
    await presenceIs(carol, ['Carol', 'Dave']);

    for (const transport of ['sse', 'long-polling', 'websocket']) {
      await carol.selectOption('#transport-select', transport);
      await until(
        carol,
        (want) =>
          document.querySelector('#state').dataset.state === 'connected' &&
          document.querySelector('#transport').textContent.trim() === want,
        transport,
        `badge shows ${transport}`,
        30000,
      );
      await say(carol, `over ${transport}`);
      await hasMessage(dave, `over ${transport}`);
      await say(dave, `back to ${transport}`);
      await hasMessage(carol, `back to ${transport}`);
    }
    const messages = (await snapshot(carol)).messages.map((m) => m.text);
    assert.deepEqual(messages, [
      'over sse', 'back to sse',
      'over long-polling', 'back to long-polling',
      'over websocket', 'back to websocket',
    ]);
    await presenceIs(dave, ['Carol', 'Dave'], 'Carol is present once after switching');
    await carol.context().close();
    await dave.context().close();
  });

  it('on a configured node it says demo tokens exist only in dev mode', async () => {
    const server = await Server.start();
    try {
      const page = await newPage(browser);
      await page.goto(`${server.url}/`);
      await until(page, () => !document.querySelector('#dev-note').hidden, null, 'the dev-mode note');
      const note = await page.textContent('#dev-note');
      assert.match(note, /dev mode/);
      assert.equal(await page.isDisabled('#join'), true);
      await page.context().close();
    } finally {
      await server.stop();
    }
  });
});
