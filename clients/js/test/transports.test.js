// The three transports against a real server: SSE and long-polling clients
// next to WebSocket ones, resuming the session after the network drops it,
// falling back when a transport is refused or buffered, and moving back up
// the ladder without losing or repeating a message. The network is a proxy
// (test-helpers/server.js) the tests cut, hold and reconfigure.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';

import { Switchboard } from '../switchboard.js';
import { Proxy, Server, connected, record, token, waitFor } from '../test-helpers/server.js';

let server;
const clients = [];
const proxies = [];

before(async () => {
  server = await Server.start();
});

after(async () => {
  for (const sb of clients) sb.disconnect();
  for (const proxy of proxies) await proxy.stop();
  await server?.stop();
});

/** A client for `user` (fast backoff for tests); disconnected at the end. */
function client(user, options = {}) {
  const sb = new Switchboard(options.url || server.url, {
    WebSocket,
    getToken: async () => token(user, { info: { name: `user ${user}` } }),
    backoff: { min: 20, max: 200 },
    timeout: 3000,
    ...options,
  });
  clients.push(sb);
  return sb;
}

async function proxy() {
  const p = await Proxy.start(server.url);
  proxies.push(p);
  return p;
}

let n = 0;
const channel = () => `chat:tr_${process.pid}_${++n}`;

/** Publishes data {i} for i in [from, to] through the server API, in order. */
async function publishRange(ch, from, to) {
  for (let i = from; i <= to; i++) await server.api('publish', { channel: ch, data: { i } });
}

const connectedEvents = (log) => log.states.filter((s) => s.state === 'connected');

for (const name of ['sse', 'long-polling']) {
  describe(`${name} only`, () => {
    test('connects, subscribes, publishes; messages cross with a WebSocket client both ways', async () => {
      const ch = channel();
      const http = client(`${name}-user`, { transports: [name] });
      const log = record(http);
      const fromHttp = [];
      const httpRoom = http.subscribe(ch, { onPublication: (p) => fromHttp.push(p) });
      const state = await waitFor(() => connectedEvents(log)[0], { message: 'connected' });
      assert.equal(state.transport, name);
      assert.equal(state.resumed, false);
      assert.equal(http.transport, name);
      assert.equal(state.user, `${name}-user`);
      assert.match(state.client, /^[0-9a-f]+$/);
      assert.equal(typeof http.session, 'string');
      await waitFor(() => httpRoom.state === 'subscribed', { message: `${name} subscribed` });

      const ws = client('ws-user', { transports: ['websocket'] });
      const fromWs = [];
      const wsRoom = ws.subscribe(ch, { onPublication: (p) => fromWs.push(p) });
      await waitFor(() => wsRoom.state === 'subscribed', { message: 'ws subscribed' });

      const a = await wsRoom.publish({ text: 'from ws' });
      const b = await httpRoom.publish({ text: `from ${name}` });
      assert.deepEqual([a.offset, b.offset], [1, 2]);
      await waitFor(() => fromHttp.length === 2 && fromWs.length === 2, { message: 'both publications at both' });
      for (const list of [fromHttp, fromWs]) {
        assert.deepEqual(
          list.map((p) => [p.offset, p.data.text, p.info.user]),
          [
            [1, 'from ws', 'ws-user'],
            [2, `from ${name}`, `${name}-user`],
          ],
        );
      }
      assert.equal(fromWs[1].info.client, http.client);
      assert.deepEqual(log.errors, []);
    });

    test('presence, presence stats, join/leave and history', async () => {
      const ch = channel();
      const joins = [];
      const leaves = [];
      const http = client(`${name}-p`, { transports: [name] });
      const room = http.subscribe(ch, { onJoin: (e) => joins.push(e), onLeave: (e) => leaves.push(e) });
      await waitFor(() => room.state === 'subscribed', { message: 'subscribed' });

      const ws = client('ws-p', { transports: ['websocket'] });
      const wsRoom = ws.subscribe(ch);
      await waitFor(() => wsRoom.state === 'subscribed', { message: 'ws subscribed' });
      const join = await waitFor(() => joins.find((j) => j.info.user === 'ws-p'), { message: 'join' });
      assert.equal(join.info.client, ws.client);

      const { clients: present } = await room.presence();
      assert.deepEqual(Object.values(present).map((c) => c.user).sort(), ['ws-p', `${name}-p`].sort());
      assert.deepEqual(await room.presenceStats(), { numClients: 2, numUsers: 2 });

      for (let i = 1; i <= 4; i++) await room.publish({ i });
      const latest = await room.history({ limit: 2 });
      assert.deepEqual(latest.publications.map((p) => p.data.i), [3, 4]);
      const since = await room.history({ since: { offset: 1, epoch: latest.position.epoch } });
      assert.deepEqual(since.publications.map((p) => p.data.i), [2, 3, 4]);
      assert.equal(since.recovered, true);

      const wsClient = ws.client;
      wsRoom.unsubscribe();
      const leave = await waitFor(() => leaves.find((l) => l.info.user === 'ws-p'), { message: 'leave' });
      assert.equal(leave.info.client, wsClient);
    });

    test('server errors come back as rejections with their code', async () => {
      const http = client(`${name}-e`, { transports: [name] });
      const bad = http.subscribe('nope:x');
      const errors = [];
      bad.on('error', (e) => errors.push(e));
      await waitFor(() => errors.length === 1, { message: 'subscribe error' });
      assert.equal(errors[0].code, 102);
      const room = http.subscribe(channel());
      // Too large: 111 (the other commands of the batch are not affected).
      const big = room.publish({ text: 'x'.repeat(70 * 1024) });
      const ok = room.publish({ ok: true });
      await assert.rejects(big, (e) => e.code === 111);
      assert.equal((await ok).offset, 1);
    });

    test('the token is refreshed (through send) before it expires; the session stays', async () => {
      let calls = 0;
      const http = client(`${name}-r`, {
        transports: [name],
        getToken: async () => {
          calls++;
          return token(`${name}-r`, { ttl: 2 });
        },
      });
      const log = record(http);
      await connected(http);
      const first = http.client;
      const expiry = Math.floor(Date.now() / 1000) + 2;
      await waitFor(() => Date.now() / 1000 > expiry + 0.5 && calls >= 2, { timeout: 6000, message: 'past expiry' });
      const room = http.subscribe(channel());
      assert.equal((await room.publish({ still: 'here' })).offset, 1);
      assert.equal(http.client, first);
      assert.deepEqual(log.states.map((s) => s.state), ['connecting', 'connected']);
      assert.deepEqual(log.errors, []);
    });

    test('disconnect() ends the session on the server at once: the user leaves presence', async () => {
      const ch = channel();
      const watcher = client(`${name}-watch`, { transports: ['websocket'] });
      const left = [];
      const watchRoom = watcher.subscribe(ch, { onLeave: (e) => left.push(e.info.user) });
      await waitFor(() => watchRoom.state === 'subscribed', { message: 'watcher subscribed' });
      const http = client(`${name}-bye`, { transports: [name] });
      const room = http.subscribe(ch);
      await waitFor(() => room.state === 'subscribed', { message: 'subscribed' });
      const present = async () => Object.keys((await server.api('presence', { channel: ch })).clients).length;
      assert.equal(await present(), 2);
      http.disconnect();
      // Well within the server's one-minute grace period.
      await waitFor(async () => (await present()) === 1, { timeout: 3000, message: 'presence without the user' });
      await waitFor(() => left.includes(`${name}-bye`), { timeout: 3000, message: 'leave pushed' });
    });

    test('a server disconnect with reconnect:false stops it with the code', async () => {
      const http = client(`${name}-d`, { transports: [name] });
      const log = record(http);
      await connected(http);
      await server.api('disconnect', { user: `${name}-d`, reason: 'banned' });
      const state = await waitFor(() => log.states.find((s) => s.state === 'disconnected'), { message: 'disconnected' });
      assert.equal(state.code, 3503);
      assert.equal(state.reason, 'banned');
      assert.equal(http.session, null);
    });

    test('a server disconnect with a reconnect code: a new session, subscriptions recovered with since', async () => {
      const ch = channel();
      const got = [];
      const subs = [];
      const http = client(`${name}-rc`, { transports: [name] });
      const room = http.subscribe(ch, { onPublication: (p) => got.push(p.data.i), onSubscribed: (s) => subs.push(s) });
      await waitFor(() => room.state === 'subscribed', { message: 'subscribed' });
      await publishRange(ch, 1, 2);
      await waitFor(() => got.length === 2, { message: 'two' });
      const firstSession = http.session;
      await server.api('disconnect', { user: `${name}-rc`, code: 3000, reason: 'move along' });
      await waitFor(() => http.state === 'connected' && http.session && http.session !== firstSession, {
        message: 'a new session',
      });
      await publishRange(ch, 3, 4);
      await waitFor(() => got.length === 4, { message: 'four' });
      assert.deepEqual(got, [1, 2, 3, 4]);
      assert.deepEqual(subs.map((s) => s.recovered), [false, true]);
    });
  });
}

describe('resume after the network drops the transport', () => {
  for (const name of ['websocket', 'sse', 'long-polling']) {
    test(`${name}: what was published meanwhile arrives once, in order, on the same session (no resubscribe)`, async () => {
      const net = await proxy();
      const ch = channel();
      const got = [];
      const subs = [];
      const sb = client(`resume-${name}`, { url: net.url, transports: [name] });
      const log = record(sb);
      const room = sb.subscribe(ch, { onPublication: (p) => got.push(p.data.i), onSubscribed: (s) => subs.push(s) });
      await waitFor(() => room.state === 'subscribed', { message: 'subscribed' });
      const firstClient = sb.client;
      const firstSession = sb.session;
      await publishRange(ch, 1, 3);
      await waitFor(() => got.length === 3, { message: 'three live' });

      // The network goes away, and stays away while more is published.
      net.hold = true;
      net.cut();
      await waitFor(() => sb.state === 'connecting', { timeout: 10000, message: 'the drop noticed' });
      await publishRange(ch, 4, 8);
      net.hold = false;

      const again = await waitFor(() => connectedEvents(log)[1], { timeout: 10000, message: 'connected again' });
      assert.equal(again.transport, name);
      assert.equal(again.resumed, true);
      await publishRange(ch, 9, 10);
      await waitFor(() => got.length >= 10, { message: 'ten publications' });
      assert.deepEqual(got, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
      // No resubscribe: one subscribe round trip in all.
      assert.equal(subs.length, 1);
      assert.equal(sb.client, firstClient);
      assert.equal(sb.session, firstSession);
      assert.deepEqual(log.errors, []);
    });

    test(`${name}: a session the server ended while away (/api/disconnect) is replaced; the subscription recovers`, async () => {
      const net = await proxy();
      const ch = channel();
      const user = `ended-${name}`;
      const got = [];
      const subs = [];
      const sb = client(user, { url: net.url, transports: [name] });
      const room = sb.subscribe(ch, { onPublication: (p) => got.push(p.data.i), onSubscribed: (s) => subs.push(s) });
      await waitFor(() => room.state === 'subscribed', { message: 'subscribed' });
      await publishRange(ch, 1, 2);
      await waitFor(() => got.length === 2, { message: 'two live' });
      const firstSession = sb.session;

      net.hold = true;
      net.cut();
      await waitFor(() => sb.state === 'connecting', { timeout: 10000, message: 'the drop noticed' });
      // The backend ends the session while the client is away (the
      // disconnect frame cannot reach it then).
      await server.api('disconnect', { user, code: 3000 });
      await publishRange(ch, 3, 5);
      net.hold = false;

      await waitFor(() => sb.state === 'connected' && sb.session && sb.session !== firstSession, {
        timeout: 10000,
        message: 'a new session',
      });
      await waitFor(() => got.length >= 5, { message: 'five publications' });
      assert.deepEqual(got, [1, 2, 3, 4, 5]);
      assert.deepEqual(subs.map((s) => s.recovered), [false, true]);
    });
  }
});

describe('resume after the session expired (session_grace)', () => {
  let shortServer;
  before(async () => {
    shortServer = await Server.start({ env: { SWITCHBOARD_CLIENT_SESSION_GRACE: '1s' } });
  });
  after(async () => {
    await shortServer?.stop();
  });

  for (const name of ['websocket', 'sse', 'long-polling']) {
    test(`${name}: the resume is refused (114), a plain connect follows and the subscription recovers with since`, async () => {
      const net = await Proxy.start(shortServer.url);
      proxies.push(net);
      const ch = channel();
      const got = [];
      const subs = [];
      const sb = client(`expired-${name}`, { url: net.url, transports: [name] });
      const log = record(sb);
      const room = sb.subscribe(ch, { onPublication: (p) => got.push(p.data.i), onSubscribed: (s) => subs.push(s) });
      await waitFor(() => room.state === 'subscribed', { message: 'subscribed' });
      const publish = async (from, to) => {
        for (let i = from; i <= to; i++) await shortServer.api('publish', { channel: ch, data: { i } });
      };
      await publish(1, 2);
      await waitFor(() => got.length === 2, { message: 'two live' });
      const firstSession = sb.session;
      const before = { ...net.stats };

      net.hold = true;
      net.cut();
      await waitFor(() => sb.state === 'connecting', { timeout: 10000, message: 'the drop noticed' });
      await publish(3, 5);
      // Past the grace period the session is gone: its presence entry leaves.
      await waitFor(async () => Object.keys((await shortServer.api('presence', { channel: ch })).clients).length === 0, {
        timeout: 10000,
        message: 'the session expired',
      });
      net.hold = false;

      await waitFor(() => sb.state === 'connected' && sb.session && sb.session !== firstSession, {
        timeout: 10000,
        message: 'a new session',
      });
      assert.deepEqual(
        connectedEvents(log).map((s) => s.resumed),
        [false, false],
      );
      if (name === 'websocket') {
        // One socket after the drop: the resume (114), then a plain connect.
        assert.equal(net.stats.upgrades - before.upgrades, 1);
      }
      if (name === 'sse') {
        // The resume stream refused (404/114), then a fresh one.
        assert.equal(net.stats.sse - before.sse, 2);
      }
      await waitFor(() => got.length >= 5, { message: 'five publications' });
      assert.deepEqual(got, [1, 2, 3, 4, 5]);
      assert.deepEqual(subs.map((s) => s.recovered), [false, true]);
      assert.deepEqual(log.errors, []);
    });
  }
});

describe('long-polling in flight', () => {
  test('polls cut in flight are asked again with the same cursor; nothing lost or repeated', async () => {
    const net = await proxy();
    const ch = channel();
    const got = [];
    const sb = client('lp-cut', { url: net.url, transports: ['long-polling'] });
    const room = sb.subscribe(ch, { onPublication: (p) => got.push(p.data.i) });
    await waitFor(() => room.state === 'subscribed', { message: 'subscribed' });
    for (let round = 0; round < 5; round++) {
      net.cut();
      await publishRange(ch, round * 4 + 1, round * 4 + 4);
    }
    await waitFor(() => got.length >= 20, { timeout: 15000, message: 'twenty publications' });
    assert.deepEqual(
      got,
      Array.from({ length: 20 }, (_, i) => i + 1),
    );
  });
});

describe('the transport ladder', () => {
  test('a refused WebSocket falls back to SSE; a new client for that URL starts with SSE', async () => {
    const net = await proxy();
    net.refuseWebSocket = true;
    const sb = client('ladder-1', { url: net.url, upgradeInterval: 600000 });
    const log = record(sb);
    const state = await waitFor(() => connectedEvents(log)[0], { timeout: 10000, message: 'connected' });
    assert.equal(state.transport, 'sse');
    assert.equal(net.stats.refusedUpgrades, 1);
    const ch = channel();
    const room = sb.subscribe(ch);
    assert.equal((await room.publish({ ok: 1 })).offset, 1);

    const next = client('ladder-2', { url: net.url, upgradeInterval: 600000 });
    const nextLog = record(next);
    const nextState = await waitFor(() => connectedEvents(nextLog)[0], { message: 'second connected' });
    assert.equal(nextState.transport, 'sse');
    // It did not try the WebSocket first.
    assert.equal(net.stats.upgrades, 1);
  });

  test('an SSE stream that a proxy buffers counts as failed: long-polling', async () => {
    const net = await proxy();
    net.refuseWebSocket = true;
    net.bufferSse = true;
    const sb = client('ladder-3', { url: net.url, sseTimeout: 500, upgradeInterval: 600000 });
    const log = record(sb);
    const state = await waitFor(() => connectedEvents(log)[0], { timeout: 10000, message: 'connected' });
    assert.equal(state.transport, 'long-polling');
    assert.ok(net.stats.sse >= 1);
    const ch = channel();
    const got = [];
    const room = sb.subscribe(ch, { onPublication: (p) => got.push(p.data.i) });
    await waitFor(() => room.state === 'subscribed', { message: 'subscribed' });
    await publishRange(ch, 1, 2);
    await waitFor(() => got.length === 2, { message: 'two' });
  });

  // [target, a failed move up to it happened, let it work]
  for (const [target, triedAndFailed, setup] of [
    ['websocket', (net) => net.stats.refusedUpgrades >= 2, (net) => (net.refuseWebSocket = false)],
    ['sse', (net) => net.stats.sse >= 2, (net) => (net.bufferSse = false)],
  ]) {
    test(`moving up from long-polling to ${target}: the session moves over; every publication once, in order`, async () => {
      const net = await proxy();
      net.refuseWebSocket = true;
      net.bufferSse = true;
      const ch = channel();
      const got = [];
      const subs = [];
      const sb = client(`up-${target}`, {
        url: net.url,
        sseTimeout: 400,
        upgradeInterval: 300,
        backoff: { min: 20, max: 100 },
      });
      const log = record(sb);
      const room = sb.subscribe(ch, { onPublication: (p) => got.push(p.data.i), onSubscribed: (s) => subs.push(s) });
      const first = await waitFor(() => connectedEvents(log)[0], { timeout: 10000, message: 'connected' });
      assert.equal(first.transport, 'long-polling');
      await waitFor(() => room.state === 'subscribed', { message: 'subscribed' });
      const session = sb.session;
      const clientId = sb.client;

      // Publications keep coming while the client tries (and, for SSE,
      // fails a few times) to move up, and while it moves.
      let published = 0;
      let stop = false;
      const publisher = (async () => {
        while (!stop) {
          published++;
          await server.api('publish', { channel: ch, data: { i: published } });
          await new Promise((r) => setTimeout(r, 15));
        }
      })();
      await waitFor(() => got.length >= 10, { message: 'publications over long-polling' });
      // At least one move up failed first (and the session went on).
      await waitFor(() => triedAndFailed(net), { timeout: 10000, message: `a failed move up to ${target}` });
      assert.equal(sb.transport, 'long-polling');
      setup(net);
      const moved = await waitFor(() => log.states.find((s) => s.state === 'connected' && s.transport === target), {
        timeout: 15000,
        message: `moved to ${target}`,
      });
      assert.equal(moved.resumed, true);
      const at = got.length;
      await waitFor(() => got.length >= at + 10, { message: `publications over ${target}` });
      stop = true;
      await publisher;
      await waitFor(() => got.length >= published, { message: 'every publication' });

      assert.deepEqual(
        got,
        Array.from({ length: published }, (_, i) => i + 1),
      );
      assert.equal(sb.transport, target);
      assert.equal(sb.session, session);
      assert.equal(sb.client, clientId);
      assert.equal(subs.length, 1);
      // The failed moves up did not show (the state stayed 'connected'); the
      // move itself is one more `connected` event, a resume.
      assert.deepEqual(
        log.states.map((s) => [s.state, s.transport, s.resumed]),
        [
          ['connecting', undefined, undefined],
          ['connected', 'long-polling', false],
          ['connected', target, true],
        ],
      );
      assert.deepEqual(log.errors, []);
    });
  }
});
