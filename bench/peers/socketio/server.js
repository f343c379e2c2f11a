// A Socket.IO server doing what an app would write for the same job:
// clients join a room and publish into it; the server broadcasts to the room
// (Socket.IO encodes a broadcast once and writes the same packet to every
// socket). WebSocket transport only, no compression, like Switchboard's bench.
//
// Besides Socket.IO (under /socket.io/), the HTTP server answers two
// requests the benchmark makes between measurements, never during them:
// GET /health (200 once listening) and GET /metrics (the number of connected
// Socket.IO sockets, in the same text form as Switchboard's gauge).
//
// Many nodes (`switchboard bench --scenario cluster`): with REDIS_URL set
// (e.g. redis://127.0.0.1:6379), the node is one of several sharing that
// Redis through the official @socket.io/redis-adapter (createAdapter, a pub
// and a sub client of the `redis` package), which is what Socket.IO's docs
// prescribe: a broadcast is sent to the local sockets and PUBLISHed to
// Redis, and every node's sub client (PSUBSCRIBE <prefix>#/#*) receives it
// and sends it to its own sockets in the room. REDIS_PREFIX (default
// "socket.io") is the adapter's key, the prefix of every Redis channel it
// uses, so that parallel runs and other users of the Redis do not see each
// other's messages. The adapter keeps nothing in Redis (pub/sub only: no
// history, no offsets). The node listens only once both clients are
// connected and subscribed, so /health means ready. Without REDIS_URL the
// server is a single node with Socket.IO's in-memory adapter.
//
// Usage: [REDIS_URL=… [REDIS_PREFIX=…]] node server.js <port>   (listens on 127.0.0.1)
'use strict';
const http = require('http');
const { Server } = require('socket.io');

const port = Number(process.argv[2] || 9000);
const httpServer = http.createServer((req, res) => {
  if (req.url === '/health') {
    res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
  } else if (req.url === '/metrics') {
    const n = io.of('/').sockets.size;
    res.writeHead(200, { 'content-type': 'text/plain' }).end(`socketio_connections ${n}\n`);
  } else {
    res.writeHead(404).end();
  }
});
const io = new Server(httpServer, {
  transports: ['websocket'],
  serveClient: false,
  perMessageDeflate: false,
  maxHttpBufferSize: 1e6,
});

io.on('connection', (socket) => {
  socket.on('subscribe', (room, ack) => {
    socket.join(String(room));
    if (typeof ack === 'function') ack({ ok: true });
  });
  socket.on('publish', (msg, ack) => {
    io.to(String(msg.room)).emit('publication', msg.data);
    if (typeof ack === 'function') ack({ ok: true });
  });
});

const listen = () => {
  httpServer.listen(port, '127.0.0.1', () => {
    console.log(`socket.io peer listening on 127.0.0.1:${port}`);
  });
};

// The Redis clients of a cluster node, closed on exit.
let redisClients = [];

// Connects a pub and a sub client to `url` and installs the Redis adapter
// with channel prefix `key`.
async function attachRedisAdapter(url, key) {
  const { createClient } = require('redis');
  const { createAdapter } = require('@socket.io/redis-adapter');
  const pubClient = createClient({ url });
  const subClient = pubClient.duplicate();
  for (const [name, client] of [['pub', pubClient], ['sub', subClient]]) {
    client.on('error', (err) => console.error(`redis ${name} client: ${err.message}`));
  }
  redisClients = [pubClient, subClient];
  await Promise.all([pubClient.connect(), subClient.connect()]);
  io.adapter(createAdapter(pubClient, subClient, { key }));
  console.log(`socket.io peer: redis adapter on ${url}, channels ${key}#/#*`);
}

if (process.env.REDIS_URL) {
  attachRedisAdapter(process.env.REDIS_URL, process.env.REDIS_PREFIX || 'socket.io')
    .then(listen)
    .catch((err) => {
      console.error(`socket.io peer: cannot attach the redis adapter: ${err.message}`);
      process.exit(1);
    });
} else {
  listen();
}

const stop = () =>
  io.close(() => {
    Promise.allSettled(redisClients.map((c) => c.quit())).then(() => process.exit(0));
  });
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
