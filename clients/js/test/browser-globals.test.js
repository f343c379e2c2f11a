// `navigator.onLine`, the `online` event and page visibility, with the
// browser globals stood in for (this file runs in its own process, so the
// stand-ins touch no other test), against a real server.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import WebSocket from 'ws';

import { Switchboard } from '../switchboard.js';
import { Server, connected, record, token, waitFor } from '../test-helpers/server.js';

const window = new EventTarget();
const navigator = { onLine: true };
const document = Object.assign(new EventTarget(), { hidden: false });
Object.assign(globalThis, {
  addEventListener: window.addEventListener.bind(window),
  removeEventListener: window.removeEventListener.bind(window),
  document,
});
Object.defineProperty(globalThis, 'navigator', { value: navigator, configurable: true, writable: true });

let server;
const clients = [];
before(async () => {
  server = await Server.start();
});
after(async () => {
  for (const sb of clients) sb.disconnect();
  await server?.stop();
});

/** A client whose next automatic attempt is a minute away: only the
 * browser events can bring it back within the test. */
function client(user) {
  const sb = new Switchboard(server.url, {
    WebSocket,
    getToken: async () => token(user),
    backoff: { min: 60000, max: 60000 },
    timeout: 3000,
  });
  clients.push(sb);
  return sb;
}

test('offline: no attempt until the online event, then at once', async () => {
  navigator.onLine = false;
  const sb = client('olive');
  const log = record(sb);
  await waitFor(() => sb.state === 'connecting', { message: 'connecting' });
  // Offline: nothing reached the server.
  await new Promise((r) => setTimeout(r, 100));
  assert.equal((await server.api('info')).num_clients, 0);

  navigator.onLine = true;
  window.dispatchEvent(new Event('online'));
  await connected(sb, { timeout: 3000 });

  // Dropped (a reconnect code) while the network is down: back when it is up.
  navigator.onLine = false;
  const first = sb.client;
  await server.api('disconnect', { user: 'olive', code: 3000 });
  await waitFor(() => sb.state === 'connecting', { message: 'lost' });
  navigator.onLine = true;
  window.dispatchEvent(new Event('online'));
  await waitFor(() => sb.state === 'connected' && sb.client !== first, { timeout: 3000, message: 'back online' });
  assert.deepEqual(log.errors, []);
});

test('a hidden page reconnects at once when shown', async () => {
  const sb = client('vera');
  await connected(sb);
  const first = sb.client;
  document.hidden = true;
  await server.api('disconnect', { user: 'vera', code: 3000 });
  await waitFor(() => sb.state === 'connecting', { message: 'lost' });
  // Still hidden: a visibilitychange that leaves it hidden changes nothing.
  document.dispatchEvent(new Event('visibilitychange'));
  assert.equal(sb.state, 'connecting');
  document.hidden = false;
  document.dispatchEvent(new Event('visibilitychange'));
  await waitFor(() => sb.state === 'connected' && sb.client !== first, { timeout: 3000, message: 'shown' });
});

test('disconnect() removes the listeners', async () => {
  const sb = client('walt');
  await connected(sb);
  sb.disconnect();
  window.dispatchEvent(new Event('online'));
  document.dispatchEvent(new Event('visibilitychange'));
  assert.equal(sb.state, 'disconnected');
  assert.equal(sb._globals, null);
});
