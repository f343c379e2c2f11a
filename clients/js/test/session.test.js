// Sessions, resume and the transport ladder, driven through scripted
// transports (the test plays the server), for exact wire contents and cases
// a real network makes hard to produce on demand.

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';

import { Switchboard } from '../switchboard.js';
import { waitFor } from '../test-helpers/server.js';

const opened = [];

/** A transport class named `name` whose other end is the test. `mode`
 * decides what open() does: 'manual' (the test answers), 'fail' (closes
 * before connected). `probe` (optional) is what probe() resolves to. */
function scriptedType(name, behaviour = {}) {
  return class Scripted {
    static transportName = name;
    static made = [];
    constructor(url, options) {
      this.name = name;
      this.url = url;
      this.options = options;
      this.sent = [];
      this.closed = false;
      this.deliberate = undefined;
      this.connects = [];
      this.drained = 0;
      Scripted.made.push(this);
      opened.push(this);
    }
    probe() {
      this.probed = true;
      return Promise.resolve(typeof behaviour.probe === 'function' ? behaviour.probe() : !!behaviour.probe);
    }
    open(connect, events) {
      this.connects.push(connect);
      this.events = events;
      if ((typeof behaviour.fail === 'function' ? behaviour.fail() : behaviour.fail) === true) {
        setTimeout(() => this.drop(1006), 0);
      }
    }
    reconnect(connect) {
      this.connects.push(connect);
    }
    get connectFrame() {
      return this.connects.at(-1);
    }
    send(frames) {
      if (this.closed) return false;
      this.sent.push(...frames);
      return true;
    }
    drain() {
      this.drained++;
      return Promise.resolve();
    }
    close(deliberate) {
      this.closed = true;
      this.deliberate = deliberate;
    }
    // The server's side.
    frame(f, seq) {
      if (!this.closed) this.events.onFrame(f, seq);
    }
    accept(extra = {}, seq) {
      this.frame({ id: this.connectFrame.id, type: 'connected', client: 'c1', user: 'u', ping: 25, ...extra }, seq);
    }
    refuse(code) {
      this.frame({ id: this.connectFrame.id, type: 'error', code, message: `error ${code}` }, null);
    }
    drop(code = 1006) {
      if (this.closed) return;
      this.closed = true;
      this.events.onClose({ code, reason: '' });
    }
    sentOf(type) {
      return this.sent.filter((f) => f.type === type);
    }
    reply(command, body, seq) {
      this.frame({ id: command.id, ...body }, seq);
    }
  };
}

const made = [];
afterEach(() => {
  for (const sb of made.splice(0)) sb.disconnect();
  opened.length = 0;
});

let urls = 0;
function client(transports, options = {}) {
  const sb = new Switchboard(options.url || `http://session-${++urls}.invalid`, {
    transports,
    getToken: async () => 'token',
    backoff: { min: 1, max: 5 },
    ...options,
  });
  made.push(sb);
  return sb;
}

const nth = (Type, n) => waitFor(() => Type.made[n - 1], { message: `${Type.transportName} #${n}` });

function subscribed(channel, offset, extra = {}) {
  return { type: 'subscribed', channel, position: { offset, epoch: 'E' }, recovered: false, publications: [], ...extra };
}
const pub = (channel, offset) => ({ type: 'publication', channel, offset, epoch: 'E', data: { offset } });

test('a counted session resumes with session and seq; the subscription stays live', async () => {
  const T = scriptedType('t');
  const sb = client([T]);
  const states = [];
  sb.on('state', (s) => states.push(s));
  const got = [];
  const subs = [];
  sb.subscribe('chat:a', { onPublication: (p) => got.push(p.offset), onSubscribed: (s) => subs.push(s) });
  const t1 = await nth(T, 1);
  assert.deepEqual(t1.connectFrame, { id: t1.connectFrame.id, type: 'connect', token: 'token' });
  t1.accept({ session: 'S1' }); // seq 1
  assert.equal(sb.session, 'S1');
  t1.reply(t1.sentOf('subscribe')[0], subscribed('chat:a', 0)); // 2
  t1.frame(pub('chat:a', 1)); // 3
  t1.frame({ type: 'ping' }); // not numbered
  t1.frame(pub('chat:a', 2)); // 4
  t1.drop();
  assert.equal(sb.state, 'connecting');
  assert.equal(sb.session, 'S1');

  const t2 = await nth(T, 2);
  assert.deepEqual(t2.connectFrame, { id: t2.connectFrame.id, type: 'connect', token: 'token', session: 'S1', seq: 4 });
  t2.accept({ session: 'S1', resumed: true }); // not numbered
  // Nothing to send again: no resubscribe.
  assert.deepEqual(t2.sent, []);
  t2.frame(pub('chat:a', 3)); // 5: replayed
  t2.frame(pub('chat:a', 4)); // 6
  assert.deepEqual(got, [1, 2, 3, 4]);
  assert.equal(subs.length, 1);
  assert.deepEqual(
    states.map((s) => [s.state, s.resumed]),
    [
      ['connecting', undefined],
      ['connected', false],
      ['connecting', undefined],
      ['connected', true],
    ],
  );
  assert.equal(sb.client, 'c1');

  t2.drop();
  const t3 = await nth(T, 3);
  assert.equal(t3.connectFrame.seq, 6);
});

test('numbers from the transport: a frame already processed is skipped, an unnumbered one is not counted', async () => {
  const T = scriptedType('t');
  const sb = client([T]);
  const got = [];
  sb.subscribe('chat:b', { onPublication: (p) => got.push(p.offset) });
  const t1 = await nth(T, 1);
  t1.accept({ session: 'S2' }, 1);
  t1.reply(t1.sentOf('subscribe')[0], subscribed('chat:b', 0), 2);
  t1.frame(pub('chat:b', 1), 3);
  t1.frame(pub('chat:b', 1), 3); // the same frame again
  t1.frame({ type: 'publication', channel: 'chat:b', offset: 2, epoch: 'E', data: {} }, 2); // older
  t1.frame({ type: 'join', channel: 'chat:b', info: { user: 'x', client: 'y' } }, null); // unnumbered
  t1.frame(pub('chat:b', 3), 5);
  assert.deepEqual(got, [1, 3]);
  t1.drop();
  const t2 = await nth(T, 2);
  assert.equal(t2.connectFrame.seq, 5);
});

test('a refused resume (114, 115) connects afresh on the same transport and resubscribes with since', async () => {
  for (const code of [114, 115]) {
    const T = scriptedType('t');
    const sb = client([T]);
    const subs = [];
    const room = sb.subscribe('chat:c', { onSubscribed: (s) => subs.push(s) });
    const t1 = await nth(T, 1);
    t1.accept({ session: 'OLD' });
    t1.reply(t1.sentOf('subscribe')[0], subscribed('chat:c', 7));
    const pending = room.history({ limit: 1 });
    t1.drop();
    const t2 = await nth(T, 2);
    assert.equal(t2.connectFrame.session, 'OLD');
    t2.refuse(code);
    // The same transport, a plain connect.
    assert.equal(T.made.length, 2);
    assert.equal(t2.connects.length, 2);
    assert.deepEqual(t2.connectFrame, { id: t2.connectFrame.id, type: 'connect', token: 'token' });
    assert.equal(sb.session, null);
    t2.accept({ session: 'NEW', client: 'c2' });
    assert.equal(sb.session, 'NEW');
    assert.deepEqual(t2.sent.map((f) => f.type), ['subscribe', 'history']);
    assert.deepEqual(t2.sent[0].since, { offset: 7, epoch: 'E' });
    t2.reply(t2.sent[0], subscribed('chat:c', 7, { recovered: true }));
    t2.reply(t2.sent[1], { type: 'history', position: { offset: 7, epoch: 'E' }, publications: [] });
    assert.deepEqual((await pending).position, { offset: 7, epoch: 'E' });
    assert.deepEqual(subs.map((s) => s.recovered), [false, true]);
    assert.equal(sb.client, 'c2');
    sb.disconnect();
  }
});

test('on resume, commands that may not have arrived are sent again; a reply to either settles them once', async () => {
  const T = scriptedType('t');
  const sb = client([T]);
  const room = sb.subscribe('chat:d');
  const t1 = await nth(T, 1);
  t1.accept({ session: 'S' });
  t1.reply(t1.sentOf('subscribe')[0], subscribed('chat:d', 0));
  const first = room.publish({ n: 1 });
  const second = room.publish({ n: 2 });
  const third = room.publish({ n: 3 });
  const [p1, p2, p3] = t1.sentOf('publish');
  // The server took the third (SSE and long-polling say so): its reply will
  // come in the session; no need to send it again.
  t1.events.onAccepted([p3]);
  t1.drop();
  // Made while away, and dropped while away.
  const late = room.publish({ n: 4 });
  sb.subscribe('chat:e');
  sb.subscribe('chat:f').unsubscribe();
  room.unsubscribe();

  const t2 = await nth(T, 2);
  t2.accept({ session: 'S', resumed: true });
  assert.deepEqual(
    t2.sent.map((f) => [f.type, f.channel, f.data]),
    [
      ['publish', 'chat:d', { n: 1 }],
      ['publish', 'chat:d', { n: 2 }],
      ['unsubscribe', 'chat:d', undefined],
      ['subscribe', 'chat:e', undefined],
      ['publish', 'chat:d', { n: 4 }],
    ],
  );
  const [r1, r2] = t2.sent;
  assert.equal(r1.idempotency_key, p1.idempotency_key);
  assert.equal(r2.idempotency_key, p2.idempotency_key);
  assert.notEqual(r1.id, p1.id);
  // The first reached the server before the drop: its reply is replayed
  // (old id); the answer to the repeat changes nothing.
  t2.reply(p1, { type: 'published', position: { offset: 1, epoch: 'E' } });
  t2.reply(r1, { type: 'published', position: { offset: 1, epoch: 'E' } });
  // The second did not: the repeat's reply settles it.
  t2.reply(r2, { type: 'published', position: { offset: 2, epoch: 'E' } });
  t2.reply(p3, { type: 'published', position: { offset: 3, epoch: 'E' } });
  t2.reply(t2.sent[4], { type: 'published', position: { offset: 4, epoch: 'E' } });
  assert.deepEqual(
    (await Promise.all([first, second, third, late])).map((p) => p.offset),
    [1, 2, 3, 4],
  );
  assert.equal(sb._outbox.length, 0);
  // Still waiting: the unsubscribe and the subscribe (one id each).
  assert.deepEqual(
    [...sb._pending.values()].map((r) => [r.body.type, r.body.channel]),
    [
      ['unsubscribe', 'chat:d'],
      ['subscribe', 'chat:e'],
    ],
  );
});

test('a server disconnect ends the session: the next connect is fresh', async () => {
  const T = scriptedType('t');
  const sb = client([T]);
  const t1 = await nth(T, 1);
  t1.accept({ session: 'S' });
  t1.frame({ type: 'disconnect', code: 3000, reason: 'bye', reconnect: true });
  t1.drop(3000);
  const t2 = await nth(T, 2);
  assert.equal(t2.connectFrame.session, undefined);
  assert.equal(sb.session, null);
});

test('disconnect() closes deliberately and forgets the session', async () => {
  const T = scriptedType('t');
  const sb = client([T]);
  const t1 = await nth(T, 1);
  t1.accept({ session: 'S' });
  sb.disconnect();
  assert.equal(t1.deliberate, true);
  assert.equal(sb.session, null);
  sb.connect();
  const t2 = await nth(T, 2);
  assert.equal(t2.connectFrame.session, undefined);
});

test('the ladder: a transport that fails to open makes the next one try at once; the one that worked is remembered', async () => {
  const A = scriptedType('a', { fail: true });
  const B = scriptedType('b');
  const url = 'http://ladder.invalid';
  // The backoff is a minute: only an immediate move can pass this test.
  const sb = client([A, B], { url, backoff: { min: 60000, max: 60000 }, upgradeInterval: 0 });
  const states = [];
  sb.on('state', (s) => states.push(s));
  const b1 = await nth(B, 1);
  assert.equal(A.made.length, 1);
  b1.accept({ session: 'S' });
  assert.equal(sb.transport, 'b');
  assert.equal(states.at(-1).transport, 'b');
  sb.disconnect();

  // A new client for the same URL starts with `b`.
  const again = client([A, B], { url, backoff: { min: 60000, max: 60000 }, upgradeInterval: 0 });
  const b2 = await nth(B, 2);
  b2.accept({ session: 'S2' });
  assert.equal(A.made.length, 1);
  assert.equal(again.transport, 'b');

  // Another URL: from the top.
  client([A, B], { url: 'http://other.invalid', backoff: { min: 60000, max: 60000 }, upgradeInterval: 0 });
  await nth(A, 2);
});

test('the ladder: after every rung failed, the client waits (backoff) before the next round', async () => {
  const A = scriptedType('a', { fail: true });
  const B = scriptedType('b', { fail: true });
  const sb = client([A, B], { backoff: { min: 60000, max: 60000 } });
  await nth(B, 1);
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(A.made.length + B.made.length, 2);
  assert.equal(sb.state, 'connecting');
});

test('a connect timeout counts as a failed rung', async () => {
  const A = scriptedType('a');
  const B = scriptedType('b');
  const sb = client([A, B], { timeout: 50, backoff: { min: 60000, max: 60000 } });
  const b1 = await nth(B, 1);
  assert.equal(A.made[0].closed, true);
  b1.accept({ session: 'S' });
  assert.equal(sb.transport, 'b');
});

test('moving up: the better transport opens, the lower one stops, the session resumes from the exact seq', async () => {
  let aWorks = false;
  const A = scriptedType('a', { fail: () => !aWorks, probe: () => aWorks });
  const B = scriptedType('b');
  const sb = client([A, B], { upgradeInterval: 20, backoff: { min: 60000, max: 60000 } });
  const states = [];
  sb.on('state', (s) => states.push(s));
  const got = [];
  const subs = [];
  sb.subscribe('chat:g', { onPublication: (p) => got.push(p.offset), onSubscribed: (s) => subs.push(s) });
  const b = await nth(B, 1);
  b.accept({ session: 'S', client: 'cb' }, 1);
  b.reply(b.sentOf('subscribe')[0], subscribed('chat:g', 0), 2);
  b.frame(pub('chat:g', 1), 3);
  // Probes fail while `a` does not work.
  await waitFor(() => A.made.length >= 3, { message: 'probes of a' });
  assert.equal(sb.transport, 'b');
  assert.ok(A.made.slice(1).every((t) => t.probed && t.closed));

  aWorks = true;
  const a = await waitFor(() => A.made.find((t) => t.connects.length > 0 && t !== A.made[0]), { message: 'a opened' });
  // The lower one stopped (after draining) before the resume went out.
  assert.equal(b.closed, true);
  assert.ok(b.drained >= 1);
  assert.deepEqual(a.connectFrame, { id: a.connectFrame.id, type: 'connect', token: 'token', session: 'S', seq: 3 });
  // Delivered by `b` now: ignored (it was stopped).
  b.events.onFrame(pub('chat:g', 99), 4);
  // A command made during the switch waits for the resume.
  const presence = sb.getSubscription('chat:g').presence();
  assert.deepEqual(a.sent, []);
  a.accept({ session: 'S', resumed: true, client: 'cb' });
  assert.equal(sb.transport, 'a');
  assert.deepEqual(states.at(-1), { state: 'connected', transport: 'a', client: 'cb', user: 'u', resumed: true });
  assert.deepEqual(a.sent.map((f) => f.type), ['presence']);
  a.frame(pub('chat:g', 2));
  a.reply(a.sent[0], { type: 'presence', clients: {} });
  await presence;
  assert.deepEqual(got, [1, 2]);
  assert.equal(subs.length, 1);
  // No 'connecting' in between.
  assert.deepEqual(states.map((s) => s.state), ['connecting', 'connected', 'connected']);
});

test('a move up that fails goes back down and resumes there', async () => {
  // `a` (no probe) cannot carry the session (a buffering proxy, say).
  let aFails = true;
  const A = scriptedType('a', { fail: () => aFails });
  delete A.prototype.probe;
  const B = scriptedType('b');
  const sb = client([A, B], { upgradeInterval: 20, backoff: { min: 60000, max: 60000 } });
  const states = [];
  sb.on('state', (s) => states.push(s));
  const b1 = await nth(B, 1);
  b1.accept({ session: 'S' }, 1);
  // The upgrade tries `a` with the session; it fails; `b` resumes.
  const b2 = await nth(B, 2);
  assert.ok(A.made.length >= 2);
  assert.deepEqual(A.made[1].connects[0].session, 'S');
  assert.deepEqual(b2.connectFrame, { id: b2.connectFrame.id, type: 'connect', token: 'token', session: 'S', seq: 1 });
  // Meanwhile the state stayed 'connected' (commands wait).
  assert.equal(sb.state, 'connected');
  const room = sb.subscribe('chat:h');
  assert.deepEqual(b2.sent, []);
  aFails = false;
  b2.accept({ session: 'S', resumed: true });
  assert.equal(sb.transport, 'b');
  assert.deepEqual(b2.sent.map((f) => [f.type, f.channel]), [['subscribe', 'chat:h']]);
  assert.equal(room.state, 'subscribing');
  // Back where it was: no state events for the failed move.
  assert.deepEqual(states.map((s) => [s.state, s.transport]), [
    ['connecting', undefined],
    ['connected', 'b'],
  ]);
});

test('a resume that carries no token (long-polling) is followed by a refresh when the token changed meanwhile', async () => {
  const jwt = (claims) => `e30.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.sig`;
  const firstExp = Math.floor(Date.now() / 1000) + 1;
  const tokens = [jwt({ sub: 'u', exp: firstExp }), jwt({ sub: 'u', exp: 4102444800 })];
  let calls = 0;
  const T = scriptedType('t');
  const sb = client([T], { getToken: async () => tokens[Math.min(calls++, 1)] });
  const t1 = await nth(T, 1);
  assert.equal(t1.connectFrame.token, tokens[0]);
  t1.accept({ session: 'S' });
  // Away until the first token has expired: the reconnect fetches another.
  await waitFor(() => Date.now() > firstExp * 1000 + 20, { timeout: 3000, message: 'the first token expired' });
  t1.drop();
  const t2 = await nth(T, 2);
  assert.equal(t2.connectFrame.token, tokens[1]);
  assert.equal(t2.connectFrame.session, 'S');
  // The transport resumed without handing the token over.
  t2.accept({ session: 'S', resumed: true, _local: true });
  assert.deepEqual(t2.sent.map((f) => [f.type, f.token]), [['refresh', tokens[1]]]);
  t2.reply(t2.sent[0], { type: 'refreshed', expires: 4102444800 });
  // A resume that carries it (WebSocket, SSE) needs none.
  t2.drop();
  const t3 = await nth(T, 3);
  t3.accept({ session: 'S', resumed: true });
  assert.deepEqual(t3.sent, []);
  assert.equal(sb.state, 'connected');
});
