// The node is killed (SIGKILL) and restarted on the same port and data dir
// in the middle of a conversation: the page reconnects on its own and gets
// every publication made meanwhile exactly once, in order (the `chat`
// namespace persists its streams to SQLite).

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import {
  API_KEY,
  Server,
  api,
  channelName,
  clientLog,
  connectedAndSubscribed,
  launchBrowser,
  newPage,
  openClient,
  received,
  startGate,
  token,
  waitInPage,
} from './helpers.js';

const texts = (pubs) => pubs.map((p) => p.data && p.data.text);

describe('a node restart in a browser', () => {
  let browser;
  let server;
  let gate;

  before(async () => {
    [browser, server] = await Promise.all([launchBrowser(), Server.start()]);
    // The page reaches the node through a TCP gate, shut while the node is
    // down and the backend publishes: so those publications are certainly
    // made while the page is away.
    gate = await startGate(server.port);
  });

  after(async () => {
    await gate?.close();
    await browser?.close().catch(() => {});
    await server?.stop();
  });

  it('(d) SIGKILL and restart: the page reconnects and gets everything published meanwhile once, in order', async () => {
    const page = await newPage(browser);
    const channel = channelName('restart');
    const publish = (text) => api(server.url, 'publish', { channel, data: { text } }, API_KEY);

    await openClient(page, gate.url, { token: token('42', { info: { name: 'Asha' } }), channel });
    await connectedAndSubscribed(page);
    await publish('m1');
    await page.evaluate(() => window.t.room.publish({ text: 'p1' }));
    await publish('m2');
    assert.deepEqual(texts(await received(page, ['m1', 'p1', 'm2'])), ['m1', 'p1', 'm2']);

    // Down: the gate shuts (the page's connection breaks) and the node dies.
    gate.block();
    await server.kill('SIGKILL');
    await waitInPage(page, () => window.t.sb.state !== 'connected', null, { message: 'the page noticed' });
    // A publish made while offline is queued by the SDK and sent once later.
    await page.evaluate(() => {
      window.t.offline = window.t.room.publish({ text: 'p2' });
    });

    // Up again on the same port and data dir; the backend publishes while
    // the page cannot reach the node.
    await server.start();
    for (const text of ['m3', 'm4', 'm5']) await publish(text);
    gate.unblock();

    const want = ['m1', 'p1', 'm2', 'm3', 'm4', 'm5', 'p2'];
    assert.deepEqual(texts(await received(page, want, { timeout: 30000 })), want, JSON.stringify(await clientLog(page)));
    await page.evaluate(() => window.t.offline);
    const transport = await connectedAndSubscribed(page);
    assert.ok(['websocket', 'sse', 'long-polling'].includes(transport), transport);

    // Live traffic after the recovery, and nothing repeated before it.
    await publish('m6');
    const pubs = await received(page, [...want, 'm6']);
    assert.deepEqual(texts(pubs), [...want, 'm6']);
    assert.deepEqual(
      pubs.map((p) => p.offset),
      pubs.map((_, i) => pubs[0].offset + i),
      'consecutive offsets: no gap, no duplicate',
    );
    assert.equal(new Set(pubs.map((p) => p.epoch)).size, 1, 'one epoch across the restart (persisted stream)');
    const history = await api(server.url, 'history', { channel, limit: 20 }, API_KEY);
    assert.deepEqual(
      history.publications.map((p) => p.data.text),
      [...want, 'm6'],
      'the stream holds each publication once',
    );
    await page.context().close();
  });
});
