// The SDK across server failures: a server killed with SIGKILL and restarted
// on the same port and data dir (recovery with `since`, the offline queue),
// and a server that stops answering without closing (heartbeat watchdog).

import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import WebSocket from 'ws';

import { Switchboard } from '../switchboard.js';
import { Server, connected, freePort, record, token, waitFor } from '../test-helpers/server.js';

const servers = [];
const clients = [];

after(async () => {
  for (const sb of clients) sb.disconnect();
  for (const server of servers) await server.stop();
});

function client(server, user, options = {}) {
  const sb = new Switchboard(server.url, {
    WebSocket,
    getToken: async () => token(user),
    backoff: { min: 20, max: 200 },
    timeout: 3000,
    // These tests are about the WebSocket transport (the gate below only
    // covers it); the other transports have their own tests.
    transports: ['websocket'],
    ...options,
  });
  clients.push(sb);
  return sb;
}

test('after SIGKILL and restart: what was published meanwhile arrives once, in order, recovered', async () => {
  const server = await Server.start();
  servers.push(server);
  // While `away` is set, every connection attempt goes to a closed port: the
  // clients stay away until the test lets them back.
  const closedPort = await freePort();
  let away = false;
  class GatedWebSocket extends WebSocket {
    constructor(url, ...rest) {
      super(away ? `ws://127.0.0.1:${closedPort}/connection/websocket` : url, ...rest);
    }
  }

  const ch = 'chat:recovery';
  const received = [];
  const subscribed = [];
  const reader = client(server, 'reader', { WebSocket: GatedWebSocket });
  const readerLog = record(reader);
  const room = reader.subscribe(ch, {
    onPublication: (p) => received.push([p.offset, p.data.n]),
    onSubscribed: (s) => subscribed.push(s),
  });
  const writer = client(server, 'writer', { WebSocket: GatedWebSocket });
  const writerRoom = writer.subscribe(ch);
  await connected(writer);
  await waitFor(() => room.state === 'subscribed', { message: 'reader subscribed' });

  for (let n = 1; n <= 3; n++) await server.api('publish', { channel: ch, data: { n } });
  await waitFor(() => received.length === 3, { message: 'three live publications' });

  away = true;
  await server.kill('SIGKILL');
  await waitFor(() => reader.state === 'connecting' && writer.state === 'connecting', { message: 'both lost' });

  // Queued by the writer while it is away.
  const queued = [writerRoom.publish({ n: 7 }), writerRoom.publish({ n: 8 })];

  await server.start();
  for (let n = 4; n <= 6; n++) await server.api('publish', { channel: ch, data: { n } });

  away = false;
  const positions = await Promise.all(queued);
  assert.deepEqual(positions.map((p) => p.offset), [7, 8]);
  await waitFor(() => received.length >= 8, { message: 'eight publications at the reader' });

  assert.deepEqual(received, [
    [1, 1],
    [2, 2],
    [3, 3],
    [4, 4],
    [5, 5],
    [6, 6],
    [7, 7],
    [8, 8],
  ]);
  assert.equal(subscribed.length, 2);
  assert.equal(subscribed[0].recovered, false);
  assert.equal(subscribed[1].recovered, true);
  assert.equal(subscribed[1].position.epoch, subscribed[0].position.epoch);
  assert.ok(subscribed[1].position.offset >= 6);
  assert.deepEqual(room.position, { offset: 8, epoch: subscribed[0].position.epoch });

  // Once on the server too: the stream holds eight publications.
  const history = await server.api('history', { channel: ch, limit: 100 });
  assert.deepEqual(history.publications.map((p) => p.data.n), [1, 2, 3, 4, 5, 6, 7, 8]);

  const drop = readerLog.states.find((s) => s.state === 'connecting' && s.code !== undefined);
  assert.equal(drop.code, 1006);
  assert.deepEqual(readerLog.errors, []);
});

test('answers pings; a connection that goes silent is closed and replaced (heartbeat watchdog)', async () => {
  // Pings every 250 ms; a client silent for 500 ms is disconnected (3012).
  const server = await Server.start({
    env: { SWITCHBOARD_CLIENT_PING_INTERVAL: '250ms', SWITCHBOARD_CLIENT_PONG_TIMEOUT: '250ms' },
  });
  servers.push(server);
  const wire = { pings: 0, pongs: 0 };
  class CountingWebSocket extends WebSocket {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', (e) => {
        if (JSON.parse(e.data).type === 'ping') wire.pings++;
      });
    }
    send(data) {
      if (JSON.parse(data).type === 'pong') wire.pongs++;
      super.send(data);
    }
  }
  const sb = client(server, 'pat', { WebSocket: CountingWebSocket, pingMargin: 300, timeout: 1000 });
  const log = record(sb);
  await connected(sb);
  const first = sb.client;

  // Several ping periods, past the server's 500 ms silence limit: still the
  // same connection, every ping answered.
  await waitFor(() => wire.pings >= 4, { message: 'four pings' });
  assert.equal(sb.client, first);
  assert.ok(wire.pongs >= wire.pings - 1, `pings ${wire.pings}, pongs ${wire.pongs}`);

  // The server freezes: the socket stays open but nothing arrives.
  server.signal('SIGSTOP');
  try {
    const drop = await waitFor(() => log.states.find((s) => s.state === 'connecting' && s.code !== undefined), {
      message: 'watchdog closes the connection',
    });
    assert.equal(drop.code, 2);
  } finally {
    server.signal('SIGCONT');
  }
  // A new socket resumes the session (the old one only detached: no close
  // frame reached the server), so the client id stays.
  const again = await waitFor(() => log.states.filter((s) => s.state === 'connected')[1], { message: 'a new connection' });
  assert.equal(again.transport, 'websocket');
  assert.equal(again.resumed, true);
  assert.equal(sb.client, first);
  const room = sb.subscribe('chat:after_freeze');
  assert.equal((await room.publish({ ok: 1 })).offset, 1);
});
