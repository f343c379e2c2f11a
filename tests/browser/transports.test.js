// A browser page using the SDK from /client.js over each transport: straight
// to the node (WebSocket), behind a firewall that refuses WebSocket upgrades
// (SSE), and behind a proxy that buffers whole responses (long-polling).

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
  startHttpProxy,
  token,
} from './helpers.js';

const texts = (pubs) => pubs.map((p) => p.data && p.data.text);

/** Publishes from the page, then through the server API; checks both arrive
 * in order, with the right `info`, and that the stream holds them. */
async function conversation(page, server, channel) {
  const position = await page.evaluate(() => window.t.room.publish({ text: 'from the page' }));
  assert.equal(typeof position.offset, 'number');
  await api(server.url, 'publish', { channel, data: { text: 'from the backend' } }, API_KEY);
  const pubs = await received(page, ['from the page', 'from the backend'], { timeout: 15000 });
  assert.deepEqual(texts(pubs), ['from the page', 'from the backend']);
  assert.equal(pubs[0].info.user, '42');
  assert.deepEqual(pubs[0].info.data, { name: 'Asha' });
  assert.equal(pubs[1].info, undefined, 'server API publications carry no info');
  assert.equal(pubs[1].offset, pubs[0].offset + 1);
  const history = await api(server.url, 'history', { channel, limit: 10 }, API_KEY);
  assert.deepEqual(
    history.publications.map((p) => p.data.text),
    ['from the page', 'from the backend'],
  );
}

describe('transports in a browser', () => {
  let browser;
  let server;
  const cleanups = [];

  before(async () => {
    [browser, server] = await Promise.all([launchBrowser(), Server.start()]);
  });

  after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {});
    await browser?.close().catch(() => {});
    await server?.stop();
  });

  it('(a) WebSocket: connects, subscribes, publishes, receives its own and a server API publication', async () => {
    const page = await newPage(browser);
    cleanups.push(() => page.context().close());
    const channel = channelName('ws');
    await openClientWith(page, server.url, channel);
    const transport = await connectedAndSubscribed(page);
    assert.equal(transport, 'websocket', JSON.stringify(await clientLog(page)));
    const connected = await page.evaluate(() => window.t.log.states.find((s) => s.state === 'connected'));
    assert.equal(connected.transport, 'websocket');
    await conversation(page, server, channel);
    assert.deepEqual(page.problems, []);
  });

  it('(b) behind a firewall that refuses WebSocket upgrades: lands on SSE, messages flow both ways', async () => {
    const proxy = await startHttpProxy(server.url);
    cleanups.push(() => proxy.close());
    const page = await newPage(browser);
    cleanups.push(() => page.context().close());
    const channel = channelName('sse');
    await openClientWith(page, proxy.url, channel);
    const transport = await connectedAndSubscribed(page, { timeout: 20000 });
    assert.equal(transport, 'sse', JSON.stringify({ log: await clientLog(page), proxy: proxy.stats }));
    assert.ok(proxy.stats.upgrades >= 1, 'the client tried the WebSocket first');
    assert.ok(proxy.stats.requests.includes('GET /connection/sse'), JSON.stringify(proxy.stats));
    await conversation(page, server, channel);
    // Commands went up over HTTP, through the proxy.
    assert.ok(proxy.stats.requests.includes('POST /connection/send'), JSON.stringify(proxy.stats));
  });

  it('(c) behind a proxy that buffers whole responses: SSE never arrives, lands on long-polling, messages flow both ways', async () => {
    const proxy = await startHttpProxy(server.url, { buffer: true });
    cleanups.push(() => proxy.close());
    const page = await newPage(browser);
    cleanups.push(() => page.context().close());
    const channel = channelName('poll');
    // The SDK's defaults: an SSE stream that delivers nothing within
    // `sseTimeout` (5 s) counts as failed.
    await openClientWith(page, proxy.url, channel);
    const transport = await connectedAndSubscribed(page, { timeout: 40000 });
    assert.equal(transport, 'long-polling', JSON.stringify({ log: await clientLog(page), proxy: proxy.stats }));
    assert.ok(proxy.stats.upgrades >= 1, 'the client tried the WebSocket first');
    assert.ok(proxy.stats.requests.includes('GET /connection/sse'), 'the client tried SSE before polling');
    assert.ok(proxy.stats.requests.some((r) => r.endsWith('/connection/poll')), JSON.stringify(proxy.stats));
    await conversation(page, server, channel);
  });
});

async function openClientWith(page, baseUrl, channel, options = {}) {
  // The default transport ladder: no `transports` option.
  await openClient(page, baseUrl, { token: token('42', { info: { name: 'Asha' } }), channel, ...options });
}
