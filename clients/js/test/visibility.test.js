// Page visibility and the fallback transports: long-polling on a hidden page
// waits `hiddenPollDelay` between polls and polls at once when the page is
// shown again; a page shown again on a lower transport tries to move up at
// once. The page's `document` is stood in for (this file runs in its own
// process, so the stand-in touches no other test), against a real server.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import WebSocket from 'ws';

import { Switchboard } from '../switchboard.js';
import { Proxy, Server, token, waitFor } from '../test-helpers/server.js';

const document = Object.assign(new EventTarget(), { visibilityState: 'visible', hidden: false });
globalThis.document = document;

function setHidden(hidden) {
  document.visibilityState = hidden ? 'hidden' : 'visible';
  document.hidden = hidden;
  document.dispatchEvent(new Event('visibilitychange'));
}

let server;
let sb;
let proxy;
before(async () => {
  server = await Server.start();
});
after(async () => {
  sb?.disconnect();
  await proxy?.stop();
  await server?.stop();
});

test('a hidden page polls after hiddenPollDelay; shown again, it polls at once', async () => {
  sb = new Switchboard(server.url, {
    transports: ['long-polling'],
    getToken: async () => token('hidden-user'),
    backoff: { min: 20, max: 200 },
    timeout: 3000,
    // Long enough that only the page being shown can bring the next poll
    // within this test.
    hiddenPollDelay: 60000,
  });
  const got = [];
  const ch = 'chat:hidden';
  const room = sb.subscribe(ch, { onPublication: (p) => got.push(p.data.i) });
  await waitFor(() => room.state === 'subscribed', { message: 'subscribed' });
  await server.api('publish', { channel: ch, data: { i: 1 } });
  await waitFor(() => got.length === 1, { message: 'first' });

  // Hidden: the poll in flight still answers...
  setHidden(true);
  await server.api('publish', { channel: ch, data: { i: 2 } });
  await waitFor(() => got.length === 2, { message: 'second, from the poll in flight' });
  // ...but the next one waits (a minute).
  await server.api('publish', { channel: ch, data: { i: 3 } });
  await new Promise((r) => setTimeout(r, 500));
  assert.deepEqual(got, [1, 2]);
  assert.equal(sb.state, 'connected');

  // Shown: at once.
  setHidden(false);
  await waitFor(() => got.length === 3, { message: 'third, once shown' });
  assert.deepEqual(got, [1, 2, 3]);
  assert.equal(sb.transport, 'long-polling');
});

test('shown again on a lower transport: it tries to move up at once', async () => {
  sb?.disconnect();
  proxy = await Proxy.start(server.url);
  proxy.refuseWebSocket = true;
  sb = new Switchboard(proxy.url, {
    WebSocket,
    getToken: async () => token('shown-user'),
    backoff: { min: 20, max: 200 },
    timeout: 3000,
    // Only the page being shown can start a move up within this test.
    upgradeInterval: 600000,
  });
  const states = [];
  sb.on('state', (s) => states.push(s));
  await waitFor(() => sb.state === 'connected', { message: 'connected' });
  assert.equal(sb.transport, 'sse');
  const session = sb.session;

  proxy.refuseWebSocket = false;
  setHidden(true);
  setHidden(false);
  await waitFor(() => sb.transport === 'websocket', { message: 'moved up to websocket' });
  assert.equal(sb.session, session);
  assert.deepEqual(
    states.map((s) => [s.state, s.transport, s.resumed]),
    [
      ['connecting', undefined, undefined],
      ['connected', 'sse', false],
      ['connected', 'websocket', true],
    ],
  );
});
