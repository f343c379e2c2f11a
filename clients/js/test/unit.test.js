// Client logic without a server: the pure functions, and the client driven
// through a scripted transport (the interface the WebSocket, SSE and
// long-polling transports implement), for cases a correct server never
// produces (duplicates, silence) and exact wire order.

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';

import { Switchboard, backoff, websocketUrl } from '../switchboard.js';
import { waitFor } from '../test-helpers/server.js';

test('backoff: full jitter within [min, min(max, min·2^(attempt+1))], capped at max', () => {
  const opts = { min: 500, max: 20000 };
  for (let attempt = 0; attempt < 60; attempt++) {
    const ceiling = Math.min(opts.max, opts.min * 2 ** (attempt + 1));
    for (const r of [0, 1e-9, 0.25, 0.5, 0.999999, 1]) {
      const d = backoff(attempt, opts, () => r);
      assert.ok(d >= opts.min && d <= ceiling, `attempt ${attempt}, random ${r}: ${d}`);
    }
    for (let i = 0; i < 50; i++) {
      const d = backoff(attempt, opts);
      assert.ok(Number.isInteger(d) && d >= opts.min && d <= ceiling && d <= opts.max, `${d}`);
    }
  }
  // The ceiling doubles, then stays at max.
  assert.deepEqual(
    [0, 1, 2, 3, 4, 5, 6, 100].map((a) => backoff(a, opts, () => 1)),
    [1000, 2000, 4000, 8000, 16000, 20000, 20000, 20000],
  );
  assert.equal(backoff(3, opts, () => 0), 500);
  // Jitter: delays for one attempt spread out.
  const samples = new Set(Array.from({ length: 100 }, () => backoff(4, opts)));
  assert.ok(samples.size > 50, `only ${samples.size} distinct delays`);
  // Defaults and degenerate bounds.
  assert.ok(backoff(0) >= 500 && backoff(0) <= 1000);
  assert.equal(backoff(5, { min: 300, max: 100 }, () => 1), 300);
  assert.equal(backoff(5, { min: 0, max: 1000 }, () => 1), 0);
});

test('websocketUrl derives the WebSocket endpoint from the http(s) base', () => {
  assert.equal(websocketUrl('http://host:8000'), 'ws://host:8000/connection/websocket');
  assert.equal(websocketUrl('https://host'), 'wss://host/connection/websocket');
  assert.equal(websocketUrl('https://host/rt/'), 'wss://host/rt/connection/websocket');
  assert.equal(websocketUrl('ws://host/connection/websocket'), 'ws://host/connection/websocket');
  assert.throws(() => websocketUrl('ftp://host'), TypeError);
});

/** A transport whose other end is the test. */
class ScriptedTransport {
  static all = [];
  constructor(url, options) {
    this.name = 'scripted';
    this.url = url;
    this.options = options;
    this.sent = [];
    this.closed = false;
    ScriptedTransport.all.push(this);
  }
  open(connect, events) {
    this.connectFrame = connect;
    this.events = events;
  }
  send(frames) {
    if (this.closed) return false;
    this.sent.push(...frames);
    return true;
  }
  close() {
    this.closed = true;
  }
  // The server's side.
  frame(f) {
    this.events.onFrame(f);
  }
  accept(extra = {}) {
    this.frame({ id: this.connectFrame.id, type: 'connected', client: `c${ScriptedTransport.all.length}`, user: 'u', ping: 25, ...extra });
  }
  drop(code = 1006) {
    this.closed = true;
    this.events.onClose({ code, reason: '' });
  }
  sentOf(type) {
    return this.sent.filter((f) => f.type === type);
  }
  reply(command, body) {
    this.frame({ id: command.id, ...body });
  }
}

const made = [];
afterEach(() => {
  for (const sb of made.splice(0)) sb.disconnect();
  ScriptedTransport.all = [];
});

function scripted(options = {}) {
  const sb = new Switchboard('http://test.invalid', {
    transports: [ScriptedTransport],
    getToken: async () => 'token',
    backoff: { min: 1, max: 5 },
    ...options,
  });
  made.push(sb);
  return sb;
}

const latest = () => waitFor(() => ScriptedTransport.all.at(-1), { message: 'a transport' });
async function next(count) {
  return waitFor(() => ScriptedTransport.all.length >= count && ScriptedTransport.all[count - 1], {
    message: `transport #${count}`,
  });
}

test('a transport plugs in: connect frame, connected state with its name, ping answered', async () => {
  const sb = scripted();
  const t = await latest();
  assert.equal(t.url, 'http://test.invalid');
  assert.deepEqual(t.connectFrame, { id: t.connectFrame.id, type: 'connect', token: 'token' });
  t.accept();
  assert.equal(sb.state, 'connected');
  assert.equal(sb.transport, 'scripted');
  t.frame({ type: 'ping' });
  assert.deepEqual(t.sent, [{ type: 'pong' }]);
});

test('publications are de-duplicated by offset per epoch', async () => {
  const sb = scripted();
  const t = await latest();
  t.accept();
  const got = [];
  const room = sb.subscribe('chat:a', { onPublication: (p) => got.push([p.offset, p.epoch]) });
  const [sub] = t.sentOf('subscribe');
  t.reply(sub, { type: 'subscribed', channel: 'chat:a', position: { offset: 5, epoch: 'E1' }, recovered: false, publications: [] });
  for (const offset of [6, 6, 5, 3, 7, 7]) t.frame({ type: 'publication', channel: 'chat:a', offset, epoch: 'E1', data: offset });
  // A new epoch starts over.
  t.frame({ type: 'publication', channel: 'chat:a', offset: 1, epoch: 'E2', data: 1 });
  t.frame({ type: 'publication', channel: 'chat:a', offset: 1, epoch: 'E2', data: 1 });
  assert.deepEqual(got, [
    [6, 'E1'],
    [7, 'E1'],
    [1, 'E2'],
  ]);
  assert.deepEqual(room.position, { offset: 1, epoch: 'E2' });
});

test('reconnect: resubscribe with since, recovered ones in order without repeats, then queued publishes', async () => {
  const sb = scripted();
  const t1 = await latest();
  t1.accept();
  const got = [];
  const subscribed = [];
  const room = sb.subscribe('chat:b', { onPublication: (p) => got.push(p.offset), onSubscribed: (s) => subscribed.push(s) });
  t1.reply(t1.sentOf('subscribe')[0], { type: 'subscribed', channel: 'chat:b', position: { offset: 10, epoch: 'E' }, recovered: false, publications: [] });
  t1.frame({ type: 'publication', channel: 'chat:b', offset: 11, epoch: 'E', data: {} });

  // A publish in flight when the connection drops, and two made while down.
  const inFlight = room.publish({ n: 1 });
  const [firstAttempt] = t1.sentOf('publish');
  t1.drop();
  assert.equal(sb.state, 'connecting');
  const queued = [room.publish({ n: 2 }), room.publish({ n: 3 })];
  const history = room.history({ limit: 1 });

  const t2 = await next(2);
  assert.deepEqual(t2.sent, []);
  t2.accept();
  // On the wire, in order: resubscribe from the last delivered offset, the
  // read that waited, then the publishes (the first with its original key).
  assert.deepEqual(
    t2.sent.map((f) => f.type),
    ['subscribe', 'history', 'publish', 'publish', 'publish'],
  );
  const [resub, read, p1, p2, p3] = t2.sent;
  assert.deepEqual(resub.since, { offset: 11, epoch: 'E' });
  assert.equal(p1.idempotency_key, firstAttempt.idempotency_key);
  assert.deepEqual([p1.data, p2.data, p3.data], [{ n: 1 }, { n: 2 }, { n: 3 }]);
  assert.equal(new Set([p1.idempotency_key, p2.idempotency_key, p3.idempotency_key]).size, 3);

  t2.reply(resub, {
    type: 'subscribed',
    channel: 'chat:b',
    position: { offset: 14, epoch: 'E' },
    recovered: true,
    publications: [10, 11, 12, 13, 14].map((offset) => ({ offset, data: {} })),
  });
  assert.deepEqual(got, [11, 12, 13, 14]);
  assert.deepEqual(subscribed.map((s) => s.recovered), [false, true]);
  assert.deepEqual(subscribed[1].position, { offset: 14, epoch: 'E' });

  t2.reply(read, { type: 'history', position: { offset: 14, epoch: 'E' }, publications: [] });
  [p1, p2, p3].forEach((p, i) => t2.reply(p, { type: 'published', position: { offset: 15 + i, epoch: 'E' } }));
  assert.deepEqual(await inFlight, { offset: 15, epoch: 'E' });
  assert.deepEqual(await Promise.all(queued), [
    { offset: 16, epoch: 'E' },
    { offset: 17, epoch: 'E' },
  ]);
  assert.deepEqual((await history).position, { offset: 14, epoch: 'E' });
  assert.equal(sb._outbox.length, 0);
});

test('an error reply rejects with the server code; no reply rejects with timeout', async () => {
  const sb = scripted({ timeout: 50 });
  const t = await latest();
  t.accept();
  const room = sb.subscribe('chat:c');
  const failing = room.publish('x');
  t.reply(t.sentOf('publish')[0], { type: 'error', code: 103, message: 'permission denied' });
  await assert.rejects(failing, (e) => e.code === 103 && e.message === 'permission denied' && e.channel === 'chat:c');
  await assert.rejects(room.presence(), (e) => e.code === 'timeout');
  await assert.rejects(room.publish(undefined), (e) => e.code === 'bad_request');
});

test('the watchdog closes a silent connection and connects again', async () => {
  const sb = scripted({ pingMargin: 200 });
  const states = [];
  sb.on('state', (s) => states.push(s));
  const t1 = await latest();
  // Nothing for ping + margin = 300 ms closes it.
  t1.accept({ ping: 0.1 });
  // Frames keep it alive (well past 300 ms in all)...
  for (let i = 0; i < 40; i++) {
    await new Promise((r) => setTimeout(r, 10));
    t1.frame({ type: 'ping' });
  }
  assert.equal(t1.closed, false);
  // ...silence does not.
  const t2 = await next(2);
  assert.equal(t1.closed, true);
  assert.equal(states.at(-1).state, 'connecting');
  assert.equal(states.at(-1).code, 2);
  t2.accept();
  assert.equal(sb.state, 'connected');
});

test('reconnect:false stops; 3501 fetches a new token; disconnect() keeps unsent publishes', async () => {
  let tokens = 0;
  const sb = scripted({ getToken: async () => `token${++tokens}` });
  const t1 = await latest();
  t1.accept();
  t1.frame({ type: 'disconnect', code: 3501, reason: 'token expired', reconnect: false });
  t1.drop(3501);
  const t2 = await next(2);
  assert.equal(t2.connectFrame.token, 'token2');
  t2.accept();
  t2.frame({ type: 'disconnect', code: 3503, reason: 'bye', reconnect: false });
  t2.drop(3503);
  assert.deepEqual({ state: sb.state }, { state: 'disconnected' });
  await new Promise((r) => setTimeout(r, 30));
  assert.equal(ScriptedTransport.all.length, 2);

  const room = sb.subscribe('chat:d');
  const pending = room.publish('later');
  await assert.rejects(room.presence(), (e) => e.code === 'disconnected');
  sb.connect();
  const t3 = await next(3);
  assert.equal(t3.connectFrame.token, 'token2'); // still good: no new fetch
  t3.accept();
  const publish = t3.sentOf('publish')[0];
  t3.reply(publish, { type: 'published', position: { offset: 1, epoch: 'E' } });
  assert.deepEqual(await pending, { offset: 1, epoch: 'E' });
});

test('a refresh is sent before `expires` with a token from getToken', async () => {
  let tokens = 0;
  const sb = scripted({ getToken: async () => `token${++tokens}` });
  const t = await latest();
  t.accept({ expires: Math.floor(Date.now() / 1000) + 1 });
  const refresh = await waitFor(() => t.sentOf('refresh')[0], { message: 'refresh' });
  assert.equal(refresh.token, 'token2');
  t.reply(refresh, { type: 'refreshed', expires: Math.floor(Date.now() / 1000) + 3600 });
  assert.equal(sb.state, 'connected');
});

test('a listener that throws does not break delivery; it is reported as an error', async () => {
  const sb = scripted();
  const errors = [];
  sb.on('error', (e) => errors.push(e));
  const t = await latest();
  t.accept();
  const got = [];
  sb.subscribe('chat:e', {
    onPublication: (p) => {
      got.push(p.offset);
      if (p.offset === 1) throw new Error('app bug');
    },
  });
  t.reply(t.sentOf('subscribe')[0], { type: 'subscribed', channel: 'chat:e', position: { offset: 0, epoch: 'E' } });
  t.frame({ type: 'publication', channel: 'chat:e', offset: 1, epoch: 'E', data: 1 });
  t.frame({ type: 'publication', channel: 'chat:e', offset: 2, epoch: 'E', data: 2 });
  assert.deepEqual(got, [1, 2]);
  assert.equal(errors.length, 1);
  assert.equal(errors[0].code, 'callback');
  assert.equal(errors[0].cause.message, 'app bug');
});
