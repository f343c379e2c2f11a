// The SDK against a real server over WebSocket: connect, publish/subscribe,
// join/leave, presence, history, the offline queue, token expiry and
// refresh, and a server disconnect that forbids reconnecting.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import WebSocket from 'ws';

import { Switchboard } from '../switchboard.js';
import { Server, connected, record, token, waitFor } from '../test-helpers/server.js';

let server;
const clients = [];

before(async () => {
  server = await Server.start();
});

after(async () => {
  for (const sb of clients) sb.disconnect();
  await server?.stop();
});

/** A client for `user` (fast backoff for tests); disconnected at the end. */
function client(user, options = {}) {
  const sb = new Switchboard(server.url, {
    WebSocket,
    getToken: async () => token(user, { info: { name: `user ${user}` } }),
    backoff: { min: 20, max: 200 },
    timeout: 3000,
    ...options,
  });
  clients.push(sb);
  return sb;
}

let n = 0;
const channel = () => `chat:js_${process.pid}_${++n}`;

test('connects and reports the connected state', async () => {
  const sb = client('alice');
  const log = record(sb);
  const state = await waitFor(() => log.states.find((s) => s.state === 'connected'), { message: 'connected event' });
  assert.equal(log.states[0].state, 'connecting');
  assert.equal(state.transport, 'websocket');
  assert.equal(state.user, 'alice');
  assert.match(state.client, /^[0-9a-f]+$/);
  assert.equal(sb.client, state.client);
  assert.equal(sb.transport, 'websocket');
  sb.disconnect();
  assert.deepEqual(log.states.at(-1), { state: 'disconnected', reason: 'disconnect called', code: 0 });
  assert.deepEqual(log.errors, []);
});

test('a publication reaches another client with its data and offset', async () => {
  const ch = channel();
  const received = [];
  const bob = client('bob');
  const subscribed = [];
  bob.subscribe(ch, { onPublication: (p) => received.push(p), onSubscribed: (s) => subscribed.push(s) });
  await waitFor(() => subscribed.length === 1, { message: 'bob subscribed' });
  assert.equal(subscribed[0].recovered, false);

  const alice = client('alice');
  const room = alice.subscribe(ch);
  const first = await room.publish({ text: 'hi' });
  const second = await room.publish({ text: 'again' });
  assert.equal(first.offset, 1);
  assert.equal(second.offset, 2);
  assert.equal(second.epoch, first.epoch);

  await waitFor(() => received.length === 2, { message: 'two publications at bob' });
  assert.deepEqual(
    received.map((p) => [p.channel, p.offset, p.epoch, p.data]),
    [
      [ch, 1, first.epoch, { text: 'hi' }],
      [ch, 2, first.epoch, { text: 'again' }],
    ],
  );
  assert.equal(received[0].info.user, 'alice');
  assert.equal(received[0].info.client, alice.client);
  assert.deepEqual(received[0].info.data, { name: 'user alice' });
  assert.equal(typeof received[0].time, 'number');
  assert.deepEqual(bob.getSubscription(ch).position, { offset: 2, epoch: first.epoch });
});

test('join and leave callbacks; presence and presence stats', async () => {
  const ch = channel();
  const joins = [];
  const leaves = [];
  const carol = client('carol');
  const room = carol.subscribe(ch, { onJoin: (e) => joins.push(e), onLeave: (e) => leaves.push(e) });
  await waitFor(() => room.state === 'subscribed', { message: 'carol subscribed' });

  const dave = client('dave');
  const daveRoom = dave.subscribe(ch);
  await connected(dave);
  const join = await waitFor(() => joins.find((j) => j.info.user === 'dave'), { message: 'dave joins' });
  assert.equal(join.channel, ch);
  assert.equal(join.info.client, dave.client);
  assert.deepEqual(join.info.data, { name: 'user dave' });

  const { clients: present } = await room.presence();
  assert.deepEqual(Object.values(present).map((c) => c.user).sort(), ['carol', 'dave']);
  assert.equal(present[dave.client].client, dave.client);
  assert.deepEqual(await room.presenceStats(), { numClients: 2, numUsers: 2 });

  const daveClient = dave.client;
  daveRoom.unsubscribe();
  assert.equal(daveRoom.state, 'unsubscribed');
  const leave = await waitFor(() => leaves.find((l) => l.info.user === 'dave'), { message: 'dave leaves' });
  assert.equal(leave.info.client, daveClient);
  assert.deepEqual(await room.presenceStats(), { numClients: 1, numUsers: 1 });
});

test('history: latest, reverse and since', async () => {
  const ch = channel();
  const sb = client('erin');
  const room = sb.subscribe(ch);
  const positions = [];
  for (let i = 1; i <= 5; i++) positions.push(await room.publish({ i }));

  const latest = await room.history({ limit: 3 });
  assert.deepEqual(latest.publications.map((p) => p.data.i), [3, 4, 5]);
  assert.deepEqual(latest.publications.map((p) => p.offset), [3, 4, 5]);
  assert.deepEqual(latest.position, { offset: 5, epoch: positions[0].epoch });
  assert.equal(latest.publications[0].epoch, positions[0].epoch);

  const reversed = await room.history({ limit: 2, reverse: true });
  assert.deepEqual(reversed.publications.map((p) => p.data.i), [5, 4]);

  const since = await room.history({ since: positions[1] });
  assert.deepEqual(since.publications.map((p) => p.data.i), [3, 4, 5]);
});

test('server errors reject the command with their code', async () => {
  const sb = client('frank');
  // No namespace `nope` is configured: 102.
  const room = sb.subscribe('nope:x');
  const errors = [];
  room.on('error', (e) => errors.push(e));
  await waitFor(() => errors.length === 1, { message: 'subscribe error' });
  assert.equal(errors[0].code, 102);
  assert.equal(room.state, 'unsubscribed');
  assert.equal(sb.getSubscription('nope:x'), null);

  await assert.rejects(room.history({ limit: 1 }), (e) => e.code === 102 && e.channel === 'nope:x');
  // Too large: 111 (max_data_size 64 KiB).
  const chat = sb.subscribe(channel());
  await assert.rejects(chat.publish({ text: 'x'.repeat(70 * 1024) }), (e) => e.code === 111);
  // And the connection is still fine.
  assert.equal((await chat.publish({ ok: true })).offset, 1);
  assert.throws(() => sb.subscribe(chat.channel), (e) => e.code === 105);
});

test('publishes made while disconnected are queued and sent once, in order, after reconnect', async () => {
  const ch = channel();
  const received = [];
  const watcher = client('watcher');
  const watch = watcher.subscribe(ch, { onPublication: (p) => received.push(p.data) });
  await waitFor(() => watch.state === 'subscribed', { message: 'watcher subscribed' });

  const sb = client('grace');
  const room = sb.subscribe(ch, { onPublication: () => {} });
  await waitFor(() => room.state === 'subscribed', { message: 'grace subscribed' });
  sb.disconnect();
  assert.equal(sb.state, 'disconnected');

  const results = [1, 2, 3].map((i) => room.publish({ i }));
  // Nothing leaves while disconnected.
  const settled = [];
  results.forEach((p, i) => p.then(() => settled.push(i)));
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(settled, []);

  sb.connect();
  const positions = await Promise.all(results);
  assert.deepEqual(positions.map((p) => p.offset), [1, 2, 3]);
  await waitFor(() => received.length >= 3, { message: 'three publications at the watcher' });
  // Exactly once each: history has three entries.
  const history = await watch.history({ limit: 10 });
  assert.deepEqual(history.publications.map((p) => p.data), [{ i: 1 }, { i: 2 }, { i: 3 }]);
  assert.deepEqual(received, [{ i: 1 }, { i: 2 }, { i: 3 }]);
});

test('an expired token at connect: getToken is called again and the client connects', async () => {
  let calls = 0;
  const sb = client('heidi', {
    getToken: async () => {
      calls++;
      // The first token expired a minute ago.
      return calls === 1 ? token('heidi', { ttl: -60 }) : token('heidi', { ttl: 3600 });
    },
  });
  const log = record(sb);
  await connected(sb);
  assert.equal(calls, 2);
  assert.equal(log.errors[0].code, 109);
  assert.deepEqual(
    log.states.map((s) => s.state),
    ['connecting', 'connected'],
  );
});

test('a token that expires mid-connection: 3501, a new token from getToken, reconnected', async () => {
  let calls = 0;
  const sb = client('ivan', {
    getToken: async () => {
      calls++;
      // Expires in 1 to 2 s (`exp` is whole seconds).
      if (calls === 1) return token('ivan', { exp: Math.floor(Date.now() / 1000) + 2 });
      // Refresh fails while connected, so the server ends the connection
      // with 3501; then a fresh token reconnects.
      if (sb.state === 'connected') throw new Error('backend unavailable');
      return token('ivan', { ttl: 3600 });
    },
  });
  const log = record(sb);
  const room = sb.subscribe(channel());
  await connected(sb);
  const first = sb.client;
  await waitFor(() => sb.state === 'connected' && sb.client !== first, { timeout: 6000, message: 'reconnected' });
  const drop = log.states.find((s) => s.state === 'connecting' && s.code);
  assert.equal(drop.code, 3501);
  assert.ok(calls >= 3, `getToken calls: ${calls}`);
  await waitFor(() => room.state === 'subscribed', { message: 'resubscribed' });
  assert.equal((await room.publish({ after: 'expiry' })).offset, 1);
});

test('the token is refreshed before it expires; the connection stays up', async () => {
  let calls = 0;
  const sb = client('judy', {
    getToken: async () => {
      calls++;
      return token('judy', { ttl: 2 });
    },
  });
  const log = record(sb);
  await connected(sb);
  const first = sb.client;
  const firstExpiry = Math.floor(Date.now() / 1000) + 2;
  // Past the first token's expiry (the server disconnects at `exp`).
  await waitFor(() => Date.now() / 1000 > firstExpiry + 0.3 && calls >= 2, { timeout: 5000, message: 'past expiry' });
  const room = sb.subscribe(channel());
  assert.equal((await room.publish({ still: 'here' })).offset, 1);
  assert.equal(sb.client, first);
  assert.deepEqual(log.states.map((s) => s.state), ['connecting', 'connected']);
  assert.deepEqual(log.errors, []);
});

test('a server disconnect with reconnect:false stops reconnecting and reports its code', async () => {
  const sb = client('mallory');
  const log = record(sb);
  await connected(sb);
  const result = await server.api('disconnect', { user: 'mallory', reason: 'banned' });
  assert.equal(result.disconnected, 1);
  const state = await waitFor(() => log.states.find((s) => s.state === 'disconnected'), { message: 'disconnected' });
  assert.equal(state.code, 3503);
  assert.equal(state.reason, 'banned');
  // Stays down: several times the largest backoff later, no connection.
  await new Promise((r) => setTimeout(r, 600));
  assert.equal(sb.state, 'disconnected');
  assert.equal(log.states.at(-1).state, 'disconnected');
  assert.equal(log.states.filter((s) => s.state === 'connecting').length, 1);
  // connect() brings it back.
  sb.connect();
  await connected(sb);
});

test('a server disconnect with a reconnect code reconnects by itself', async () => {
  const sb = client('niaj');
  const log = record(sb);
  await connected(sb);
  const first = sb.client;
  await server.api('disconnect', { user: 'niaj', code: 3000, reason: 'move along' });
  await waitFor(() => sb.state === 'connected' && sb.client !== first, { message: 'reconnected' });
  assert.deepEqual(log.states.map((s) => [s.state, s.code]), [
    ['connecting', undefined],
    ['connected', undefined],
    ['connecting', 3000],
    ['connected', undefined],
  ]);
});
