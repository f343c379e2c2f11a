// A Socket.IO server doing what an app would write for the same job:
// clients join a room and publish into it; the server broadcasts to the room
// (Socket.IO encodes a broadcast once and writes the same packet to every
// socket). WebSocket transport only, no compression, like Switchboard's bench.
// Usage: node server.js <port>
'use strict';
const { Server } = require('socket.io');

const port = Number(process.argv[2] || 9000);
const io = new Server(port, {
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

const stop = () => io.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
console.log(`socket.io peer listening on ${port}`);
