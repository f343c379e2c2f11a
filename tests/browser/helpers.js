// Helpers for the browser tests: Debian's Chromium through playwright-core,
// the real switchboard binary (through clients/js/test-helpers), proxies
// that misbehave the way real middleboxes do, and a small in-page harness
// around the SDK served at /client.js.
//
// Nothing here downloads a browser: set CHROMIUM_BIN to use another build.

import { existsSync, readFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { join } from 'node:path';

import { chromium } from 'playwright-core';

import { API_KEY, Server, token, waitFor } from '../../clients/js/test-helpers/server.js';

export { API_KEY, Server, token, waitFor };

export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';

/** Launches headless Chromium (closed by the caller, also on failure). */
export async function launchBrowser() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`no Chromium at ${CHROMIUM}: apt-get install -y chromium, or set CHROMIUM_BIN`);
  }
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
}

/** A page in a context of its own. Uncaught errors of its scripts go to
 * `page.problems`; console errors (failed loads, refused WebSockets: some
 * are expected) to `page.consoleErrors`, for failure messages. */
export async function newPage(browser) {
  const context = await browser.newContext();
  context.setDefaultTimeout(20000);
  const page = await context.newPage();
  page.problems = [];
  page.consoleErrors = [];
  page.on('pageerror', (e) => page.problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && page.consoleErrors.length < 20) page.consoleErrors.push(m.text());
  });
  return page;
}

/** A node in dev mode (no configuration at all: generated secrets, demo
 * tokens); `apiKey` is read from its dev-secrets.json. */
export async function startDevServer(options = {}) {
  const server = await Server.start({
    ...options,
    // Undefined drops the variable: no SWITCHBOARD_* at all means dev mode.
    env: {
      SWITCHBOARD_AUTH_HMAC_SECRET: undefined,
      SWITCHBOARD_AUTH_API_KEY: undefined,
      SWITCHBOARD_SHUTDOWN_TIMEOUT: undefined,
    },
  });
  const secrets = JSON.parse(readFileSync(join(server.dataDir, 'dev-secrets.json'), 'utf8'));
  server.apiKey = secrets.api_key;
  return server;
}

/** POST /api/<method> with `Authorization: apikey <key>`; returns `result`. */
export async function api(baseUrl, method, body, key = API_KEY) {
  const res = await fetch(`${baseUrl}/api/${method}`, {
    method: 'POST',
    headers: { Authorization: `apikey ${key}`, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  const json = await res.json();
  if (!res.ok || json.error) throw new Error(`api ${method}: ${res.status} ${JSON.stringify(json)}`);
  return json.result;
}

/** A unique channel name in the built-in `chat` namespace. */
export function channelName(prefix) {
  return `chat:${prefix}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
}

// ---------------------------------------------------------------- proxies

const HOP_BY_HOP = ['connection', 'keep-alive', 'transfer-encoding', 'proxy-connection', 'upgrade', 'te', 'trailer'];

/**
 * An HTTP proxy in front of `target` (http://host:port), keeping the Host
 * header (as a transparent reverse proxy would).
 * - WebSocket upgrades are refused with 403 (a firewall that drops them).
 * - `buffer: true` holds every response until its body is complete, then
 *   sends it with a Content-Length (a buffering proxy: a stream that never
 *   ends never arrives).
 * `stats.requests` lists "METHOD /path" of every request, `stats.upgrades`
 * counts refused upgrades.
 */
export async function startHttpProxy(target, { buffer = false } = {}) {
  const upstream = new URL(target);
  const agent = new http.Agent({ keepAlive: true });
  const stats = { requests: [], upgrades: 0 };
  const raw = new Set();
  const server = http.createServer((req, res) => {
    stats.requests.push(`${req.method} ${req.url.split('?')[0]}`);
    const headers = { ...req.headers };
    for (const h of HOP_BY_HOP) delete headers[h];
    const out = http.request(
      { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers, agent },
      (answer) => {
        const back = { ...answer.headers };
        for (const h of HOP_BY_HOP) delete back[h];
        answer.on('error', () => res.destroy());
        answer.on('aborted', () => res.destroy());
        if (!buffer) {
          res.writeHead(answer.statusCode, back);
          res.flushHeaders();
          answer.pipe(res);
          return;
        }
        const chunks = [];
        answer.on('data', (chunk) => chunks.push(chunk));
        answer.on('end', () => {
          if (res.destroyed) return;
          const body = Buffer.concat(chunks);
          back['content-length'] = String(body.length);
          res.writeHead(answer.statusCode, back);
          res.end(body);
        });
      },
    );
    out.on('error', () => {
      if (res.headersSent) res.destroy();
      else {
        res.writeHead(502, { 'content-type': 'text/plain' });
        res.end('bad gateway');
      }
    });
    // The browser went away (an aborted stream or poll): so does the upstream request.
    res.on('close', () => {
      if (!res.writableFinished) out.destroy();
    });
    req.pipe(out);
  });
  server.on('upgrade', (req, socket) => {
    stats.upgrades += 1;
    raw.add(socket);
    socket.on('close', () => raw.delete(socket));
    socket.on('error', () => {});
    socket.end('HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 25\r\nConnection: close\r\n\r\nWebSockets are not allowed');
  });
  server.on('clientError', (_e, socket) => socket.destroy());
  await new Promise((done) => server.listen(0, '127.0.0.1', done));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}`,
    stats,
    async close() {
      server.close();
      server.closeAllConnections();
      for (const socket of raw) socket.destroy();
      agent.destroy();
    },
  };
}

/**
 * A TCP relay to 127.0.0.1:`targetPort` (WebSockets and HTTP alike) that can
 * be shut like a gate: `block()` drops every connection and refuses new ones
 * (accepted, then reset) until `unblock()`.
 */
export async function startGate(targetPort) {
  let open = true;
  const sockets = new Set();
  const track = (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
  };
  const server = net.createServer((client) => {
    track(client);
    if (!open) {
      client.destroy();
      return;
    }
    const up = net.connect(targetPort, '127.0.0.1');
    track(up);
    const end = () => {
      client.destroy();
      up.destroy();
    };
    client.on('close', end);
    up.on('close', end);
    client.pipe(up);
    up.pipe(client);
  });
  await new Promise((done) => server.listen(0, '127.0.0.1', done));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}`,
    block() {
      open = false;
      for (const socket of sockets) socket.destroy();
    },
    unblock() {
      open = true;
    },
    async close() {
      open = false;
      server.close();
      for (const socket of sockets) socket.destroy();
    },
  };
}

// ---------------------------------------------------------------- in-page harness

/**
 * Opens a page of `baseUrl`'s origin and starts an SDK client there (the
 * module from `<baseUrl>/client.js`), subscribed to `channel`. The page
 * keeps `window.t = { sb, room, log: { states, pubs, errors } }`.
 */
export async function openClient(page, baseUrl, { token, channel, transports, timeout } = {}) {
  // Any document of the origin will do: /health answers without side effects.
  await page.goto(`${baseUrl}/health`);
  await page.evaluate(
    async ({ token, channel, transports, timeout }) => {
      const { Switchboard } = await import('/client.js');
      const log = { states: [], pubs: [], errors: [] };
      const options = { token, backoff: { min: 100, max: 1000 } };
      if (transports) options.transports = transports;
      if (timeout) options.timeout = timeout;
      const sb = new Switchboard(location.origin, options);
      sb.on('state', (e) => log.states.push({ state: e.state, transport: e.transport, code: e.code, reason: e.reason }));
      sb.on('error', (e) => log.errors.push(`${e && e.code}: ${e && e.message}`));
      const room = sb.subscribe(channel, {
        onPublication: (p) => log.pubs.push({ offset: p.offset, epoch: p.epoch, data: p.data, info: p.info }),
      });
      window.t = { sb, room, log };
    },
    { token, channel, transports: transports ?? null, timeout: timeout ?? null },
  );
}

/** What the in-page client saw, for failure messages. */
export async function clientLog(page) {
  try {
    return await page.evaluate(() => ({
      state: window.t.sb.state,
      transport: window.t.sb.transport,
      room: window.t.room.state,
      ...window.t.log,
    }));
  } catch (e) {
    return `unavailable: ${e.message}`;
  }
}

/** Waits for `fn(arg)` to be truthy in the page; on timeout fails with
 * `message` and what the page saw. */
export async function waitInPage(page, fn, arg, { timeout = 10000, message = 'condition' } = {}) {
  try {
    return await page.waitForFunction(fn, arg, { timeout, polling: 50 });
  } catch (e) {
    const seen = await clientLog(page);
    throw new Error(
      `timed out after ${timeout} ms waiting in the page for: ${message}\n${e.message.split('\n')[0]}\n` +
        `page saw: ${JSON.stringify(seen, null, 1).slice(0, 4000)}\n` +
        `page errors: ${page.problems?.join('\n')}\nconsole errors: ${page.consoleErrors?.join('\n')}`,
    );
  }
}

/** Waits until the in-page client is connected and subscribed; returns the transport. */
export async function connectedAndSubscribed(page, options) {
  await waitInPage(page, () => window.t && window.t.sb.state === 'connected' && window.t.room.state === 'subscribed', null, {
    message: 'connected and subscribed',
    ...options,
  });
  return page.evaluate(() => window.t.sb.transport);
}

/** Waits until the in-page client received as many publications as
 * `texts`; returns them all (the caller compares). */
export async function received(page, texts, options) {
  await waitInPage(
    page,
    (want) => {
      // As many as expected (or more): the caller compares them.
      return window.t.log.pubs.length >= want.length;
    },
    texts,
    { message: `publications ${JSON.stringify(texts)}`, ...options },
  );
  return page.evaluate(() => window.t.log.pubs);
}
