// A Socket.IO server doing what an app would write for the same job:
// clients join a room and publish into it; the server broadcasts to the room
// (Socket.IO encodes a broadcast once and writes the same packet to every
// socket). WebSocket transport only, no compression, like Switchboard's bench.
//
// Besides Socket.IO (under /socket.io/), the HTTP server answers two
// requests the benchmark makes between measurements, never during them:
// GET /health (200 once listening) and GET /metrics (the number of connected
// Socket.IO sockets, in the same text form as Switchboard's gauge).
// Usage: node server.js <port>   (listens on 127.0.0.1)
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

httpServer.listen(port, '127.0.0.1', () => {
  console.log(`socket.io peer listening on 127.0.0.1:${port}`);
});

const stop = () => io.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
