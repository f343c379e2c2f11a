// Test helpers: a real `switchboard serve` process, HS256 tokens, the server
// API, waiting for conditions with a deadline, and a proxy that plays the
// network in between (cuts, refused upgrades, buffering).
//
// The binary: $SWITCHBOARD_BIN, else ../../target/debug/switchboard relative
// to clients/js (build it with `cargo build` at the repository root).

import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer as createHttpServer, request as httpRequest } from 'node:http';
import { connect as connectTcp, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const SECRET = 'js-test-secret-that-is-long-enough-0000';
export const API_KEY = 'js-test-api-key';

const here = dirname(fileURLToPath(import.meta.url));
export const BINARY = process.env.SWITCHBOARD_BIN || resolve(here, '../../../target/debug/switchboard');

const live = new Set();
// Never leave a server behind, whatever ends this process.
process.on('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

const b64url = (value) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');

/** An HS256 connection token: token('42', { ttl: 60, info: { name: 'Asha' } }). */
export function token(sub, { exp, ttl, info, secret = SECRET } = {}) {
  const payload = { sub: String(sub) };
  if (ttl != null) payload.exp = Math.floor(Date.now() / 1000) + ttl;
  if (exp != null) payload.exp = exp;
  if (info !== undefined) payload.info = info;
  const signed = `${b64url({ alg: 'HS256', typ: 'JWT' })}.${b64url(payload)}`;
  const signature = createHmac('sha256', secret).update(signed).digest('base64url');
  return `${signed}.${signature}`;
}

/** A port that was free a moment ago. */
export function freePort() {
  return new Promise((done, fail) => {
    const server = createServer();
    server.unref();
    server.on('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => done(port));
    });
  });
}

/** Polls `check` (sync or async) until it returns a truthy value; returns it.
 * Fails with `message` after `timeout` ms. */
export async function waitFor(check, { timeout = 5000, interval = 10, message = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for: ${message}`);
    await new Promise((r) => setTimeout(r, interval));
  }
}

/** A `switchboard serve` child process on 127.0.0.1. */
export class Server {
  /** Starts a server: a fresh data dir and a free port unless given. */
  static async start({ env = {}, port, dataDir } = {}) {
    const server = new Server(env, port ?? (await freePort()), dataDir);
    await server.start();
    return server;
  }

  constructor(env, port, dataDir) {
    if (!existsSync(BINARY)) {
      throw new Error(`no switchboard binary at ${BINARY}: run \`cargo build\` at the repository root or set SWITCHBOARD_BIN`);
    }
    this.env = env;
    this.port = port;
    this.ownsDataDir = !dataDir;
    this.dataDir = dataDir ?? mkdtempSync(join(tmpdir(), 'switchboard-js-'));
    this.url = `http://127.0.0.1:${port}`;
    this.child = null;
    this.stderr = '';
  }

  /** Starts the process (again, after kill()) and waits for GET /health. */
  async start() {
    const deadline = Date.now() + 15000;
    for (;;) {
      this._spawn();
      try {
        await this._healthy(deadline);
        return;
      } catch (e) {
        const exited = this.child.exitCode !== null || this.child.signalCode !== null;
        await this.kill();
        // The port may still be held a moment after a kill: try again.
        if (!exited || Date.now() > deadline || !/in use/i.test(this.stderr)) {
          throw new Error(`${e.message}\nserver stderr:\n${this.stderr}`);
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  _spawn() {
    this.stderr = '';
    // A clean environment: the server refuses unknown SWITCHBOARD_* variables.
    const child = spawn(BINARY, ['serve', '--listen', `127.0.0.1:${this.port}`, '--data-dir', this.dataDir], {
      env: {
        PATH: process.env.PATH ?? '',
        SWITCHBOARD_AUTH_HMAC_SECRET: SECRET,
        SWITCHBOARD_AUTH_API_KEY: API_KEY,
        SWITCHBOARD_SHUTDOWN_TIMEOUT: '1s',
        ...this.env,
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => {
      if (this.stderr.length < 100000) this.stderr += chunk;
    });
    child.exited = new Promise((r) => child.once('exit', r));
    live.add(child);
    child.exited.then(() => live.delete(child));
    this.child = child;
  }

  async _healthy(deadline) {
    const child = this.child;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error('the server exited at start');
      try {
        const res = await fetch(`${this.url}/health`);
        if (res.status === 200) return;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`the server did not answer /health on ${this.url}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Sends `signal` and waits for the process to end (SIGKILL by default). */
  async kill(signal = 'SIGKILL') {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    child.kill(signal);
    await child.exited;
  }

  /** Sends a signal without waiting (e.g. SIGSTOP, SIGCONT). */
  signal(signal) {
    this.child.kill(signal);
  }

  /** Kills the process and removes its data dir (when it made it). */
  async stop() {
    if (this.child && this.child.signalCode === 'SIGSTOP') this.child.kill('SIGCONT');
    await this.kill('SIGKILL');
    if (this.ownsDataDir) rmSync(this.dataDir, { recursive: true, force: true });
  }

  /** Calls `POST /api/<method>`; returns the `result` (throws on an error). */
  async api(method, body = {}) {
    const res = await fetch(`${this.url}/api/${method}`, {
      method: 'POST',
      headers: { Authorization: `apikey ${API_KEY}`, 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
    const json = await res.json();
    if (!res.ok || json.error) throw new Error(`api ${method}: ${res.status} ${JSON.stringify(json)}`);
    return json.result;
  }
}

/** Records a client's state events (and errors) for assertions. */
export function record(sb) {
  const log = { states: [], errors: [] };
  sb.on('state', (s) => log.states.push(s));
  sb.on('error', (e) => log.errors.push(e));
  return log;
}

/** Waits until `sb` is connected; returns the state event. */
export function connected(sb, options = {}) {
  return waitFor(() => sb.state === 'connected' && sb.client, { message: 'connected', ...options });
}

/**
 * An HTTP proxy in front of a server, to play the network between the
 * client and the server: cut every connection (`cut()`), refuse new ones
 * (`hold = true`), refuse WebSocket upgrades (`refuseWebSocket = true`, as a
 * proxy without WebSocket support does), or hold back SSE responses until
 * they end (`bufferSse = true`, as a buffering proxy does).
 */
export class Proxy {
  static async start(target) {
    const proxy = new Proxy(target);
    await proxy._listen();
    return proxy;
  }

  constructor(target) {
    this.target = new URL(target);
    this.refuseWebSocket = false;
    this.bufferSse = false;
    this.hold = false;
    this.stats = { upgrades: 0, refusedUpgrades: 0, requests: 0, sse: 0, polls: 0, sends: 0 };
    this._sockets = new Set();
    this._server = createHttpServer((req, res) => this._request(req, res));
    this._server.on('upgrade', (req, socket, head) => this._upgrade(req, socket, head));
    this._server.on('connection', (socket) => {
      if (this.hold) {
        socket.destroy();
        return;
      }
      this._track(socket);
    });
  }

  async _listen() {
    await new Promise((done, fail) => {
      this._server.once('error', fail);
      this._server.listen(0, '127.0.0.1', done);
    });
    this.port = this._server.address().port;
    this.url = `http://127.0.0.1:${this.port}`;
  }

  _track(socket) {
    this._sockets.add(socket);
    socket.on('close', () => this._sockets.delete(socket));
    socket.on('error', () => {});
  }

  _request(req, res) {
    this.stats.requests++;
    const path = req.url || '';
    if (path.startsWith('/connection/sse')) this.stats.sse++;
    if (path.startsWith('/connection/poll')) this.stats.polls++;
    if (path.startsWith('/connection/send')) this.stats.sends++;
    const buffer = this.bufferSse && path.startsWith('/connection/sse');
    const upstream = httpRequest(
      {
        host: this.target.hostname,
        port: this.target.port,
        method: req.method,
        path,
        headers: req.headers,
      },
      (up) => {
        if (buffer) {
          // Nothing reaches the client until the response is complete.
          const chunks = [];
          up.on('data', (c) => chunks.push(c));
          up.on('end', () => {
            res.writeHead(up.statusCode, up.headers);
            res.end(Buffer.concat(chunks));
          });
        } else {
          res.writeHead(up.statusCode, up.headers);
          res.flushHeaders();
          up.pipe(res);
        }
        up.on('error', () => res.destroy());
      },
    );
    upstream.on('socket', (s) => this._track(s));
    upstream.on('error', () => res.destroy());
    res.on('close', () => upstream.destroy());
    req.pipe(upstream);
  }

  _upgrade(req, socket, head) {
    this.stats.upgrades++;
    if (this.refuseWebSocket) {
      this.stats.refusedUpgrades++;
      socket.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
      return;
    }
    const upstream = connectTcp(Number(this.target.port), this.target.hostname, () => {
      const lines = [`${req.method} ${req.url} HTTP/1.1`];
      for (let i = 0; i < req.rawHeaders.length; i += 2) lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
      upstream.write(lines.join('\r\n') + '\r\n\r\n');
      if (head && head.length) upstream.write(head);
      socket.pipe(upstream);
      upstream.pipe(socket);
    });
    this._track(upstream);
    upstream.on('close', () => socket.destroy());
    socket.on('close', () => upstream.destroy());
  }

  /** Drops every connection through the proxy, both ways, at once. */
  cut() {
    for (const socket of this._sockets) socket.destroy();
    this._sockets.clear();
  }

  async stop() {
    this.cut();
    await new Promise((done) => this._server.close(() => done()));
  }
}
