// Switchboard JavaScript client.
//
// An ES module with no runtime dependencies, for browsers and Node 20+. It
// speaks the native protocol (docs/protocol.md): one JSON object per frame,
// commands with ids and replies, pushes without ids, over a WebSocket,
// Server-Sent Events or long-polling.
//
// What the client does on its own:
// - keeps one **session** (docs/protocol.md, "Sessions and transports"): it
//   remembers the session of the `connected` reply and the seq of the last
//   numbered frame it processed, and after a drop it resumes the session on
//   any transport (WebSocket: `connect` with `session` and `seq`; SSE:
//   `?session=…&seq=…`; long-polling: polling on with its cursor). A resumed
//   session keeps its subscriptions: the server replays what was missed and
//   nothing is delivered twice. When the session is gone (114, 115, or a
//   server `disconnect`) it connects afresh and resubscribes;
// - reconnects with exponential backoff and full jitter (capped), except
//   after a disconnect that says `reconnect: false`; after 3501 (token
//   expired) it fetches a new token with `getToken` and reconnects;
// - resubscribes (on a fresh session) every subscription with `since` = the
//   last position it delivered, delivers the recovered publications in order
//   and never delivers an offset twice (per epoch);
// - keeps publishes made while disconnected (and those whose reply was lost)
//   in order and sends them once after the next connect and resubscribe, each
//   with its own idempotency key so a resend publishes once;
// - answers server pings, and closes and reconnects a connection from which
//   nothing arrived for `ping` + `pingMargin` (dead connections that never
//   closed; SSE keep-alive comments and long-poll answers count);
// - refreshes the token with `getToken` before it expires (`refresh`, over
//   SSE and long-polling through POST /connection/send);
// - honours `navigator.onLine`, the `online` event and page visibility when
//   those globals exist.
//
// Transports. `options.transports` is a ladder, best first (default
// ['websocket', 'sse', 'long-polling']). A transport that fails before
// `connected` (refused, no answer within `timeout`, an SSE stream that
// delivers no event within `sseTimeout`: a buffering proxy) makes the client
// try the next one at once; after the whole ladder failed it backs off. The
// transport that worked last is remembered (localStorage
// `switchboard:transport:<url>` in browsers, memory elsewhere) and tried first
// next time. On a lower rung the client tries to move up every
// `upgradeInterval` ms and when the page is shown again: it opens the better
// transport (a WebSocket is opened first and used only once open), lets the
// lower one finish sending, stops its delivery and resumes the session on the
// better one from the exact seq, so nothing is lost or repeated. Meanwhile
// the state stays 'connected' (commands wait); a move that fails (an SSE
// stream that stays silent) goes back down and resumes there, and that rung
// is tried less often (the interval doubles per failure, up to an hour).
// A single name (`transports: ['sse']`) forces that transport.
//
// Long-polling on a hidden page (document.visibilityState 'hidden') waits
// `hiddenPollDelay` ms between polls, and polls at once when shown again.
//
// The client talks to a transport through a small interface (custom classes
// may be passed in `transports`):
//
//   class Transport {
//     constructor(baseUrl, options)   // options: the Switchboard options
//     name                            // 'websocket', 'sse', 'long-polling'
//     open(connect, events)
//         // Deliver the `connect` command (an object with id, type, token,
//         // and session + seq to resume) the way this transport does it,
//         // then call events.onFrame(frame, seq) for every frame received,
//         // replies and pushes alike (the `connected` reply too, with the
//         // connect command's id; an HTTP error before the stream starts as
//         // an `error` reply to it), and events.onClose({ code, reason })
//         // once when the transport ends or fails to open (never after
//         // close()). `seq` is the frame's number when the transport carries
//         // it (SSE ids, long-poll cursors), null for an unnumbered frame, or
//         // undefined to let the client count (WebSocket).
//         // Optional events: onAlive() (bytes arrived), onAccepted(frames)
//         // (the server took these commands), onSessionLost({code, reason}),
//         // token() (the current token), renewToken() (a promise of a new one).
//     send(frames)                    // an array of command objects, in order
//     close(deliberate)               // end it; no more callbacks after this
//     // optional:
//     reconnect(connect)              // a plain connect after a refused resume
//     probe(timeoutMs)                // a promise: can it open at all? (upgrades)
//     drain()                         // a promise: nothing being sent
//     idleLimit(pingMs)               // silence in ms that is still normal
//   }

/** An error from the server (numeric `code`, as in docs/protocol.md) or from
 * the client (string `code`: 'timeout', 'disconnected', 'token', 'callback',
 * 'bad_request', 'transport'). */
export class SwitchboardError extends Error {
  constructor(message, code, extra) {
    super(message);
    this.name = 'SwitchboardError';
    this.code = code;
    if (extra) Object.assign(this, extra);
  }
}

/** Client-side codes in `state` events (server codes are 3000–4999 and the
 * transport's close codes, such as 1006 for a connection that failed). */
export const CLIENT_CODES = Object.freeze({
  DISCONNECT_CALLED: 0,
  TIMEOUT: 1,
  HEARTBEAT_TIMEOUT: 2,
  TRANSPORT_UNAVAILABLE: 3,
});

const TOKEN_EXPIRED = 3501;
const INVALID_TOKEN = 3500;
const SESSION_NOT_FOUND = 114;
const BAD_CURSOR = 115;
/** Error codes of a refused opening request (SSE, long-poll) that are about
 * the token or the session rather than the transport. */
const CONNECT_ERROR_CODES = new Set([101, 103, 109, SESSION_NOT_FOUND, BAD_CURSOR]);

const DEFAULT_OPTIONS = {
  backoff: { min: 500, max: 20000 },
  timeout: 10000,
  pingMargin: 10000,
  refreshMargin: 10000,
  autoConnect: true,
  transports: ['websocket', 'sse', 'long-polling'],
  sseTimeout: 5000,
  upgradeInterval: 60000,
  hiddenPollDelay: 2000,
  pollHold: 25000,
};

const now = () =>
  globalThis.performance && typeof globalThis.performance.now === 'function'
    ? globalThis.performance.now()
    : Date.now();

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A tiny event emitter. A listener that throws does not stop the others:
 * the error goes to `_listenerError`. */
export class Emitter {
  constructor() {
    this._listeners = new Map();
  }

  /** Adds a listener; returns a function that removes it. */
  on(event, fn) {
    if (typeof fn !== 'function') throw new TypeError('listener must be a function');
    let list = this._listeners.get(event);
    if (!list) this._listeners.set(event, (list = []));
    list.push(fn);
    return () => this.off(event, fn);
  }

  once(event, fn) {
    const off = this.on(event, (...args) => {
      off();
      fn(...args);
    });
    return off;
  }

  off(event, fn) {
    const list = this._listeners.get(event);
    if (!list) return;
    const at = list.indexOf(fn);
    if (at >= 0) list.splice(at, 1);
    if (list.length === 0) this._listeners.delete(event);
  }

  /** Calls the listeners of `event`; returns whether there were any. */
  emit(event, ...args) {
    const list = this._listeners.get(event);
    if (!list) return false;
    for (const fn of list.slice()) {
      try {
        fn(...args);
      } catch (e) {
        this._listenerError(e, event);
      }
    }
    return true;
  }

  _listenerError(e) {
    console.error(e);
  }
}

/**
 * The delay before reconnect attempt `attempt` (0 for the first): full jitter
 * over [min, ceiling], the ceiling doubling from 2×min with each attempt and
 * capped at max. Always min ≤ delay ≤ max.
 */
export function backoff(attempt, { min = 500, max = 20000 } = {}, random = Math.random) {
  min = Math.max(0, Number(min) || 0);
  max = Math.max(min, Number(max) || 0);
  const exponent = Math.min(Math.max(0, attempt) + 1, 30);
  const ceiling = Math.min(max, min * 2 ** exponent);
  const r = Math.min(Math.max(random(), 0), 1);
  return Math.min(max, Math.floor(min + r * (ceiling - min)));
}

function baseUrl(base) {
  return new URL(base, globalThis.location ? globalThis.location.href : undefined);
}

/** The WebSocket URL of a server given by its http(s) base URL. */
export function websocketUrl(base) {
  const url = baseUrl(base);
  if (url.protocol === 'http:') url.protocol = 'ws:';
  else if (url.protocol === 'https:') url.protocol = 'wss:';
  else if (url.protocol !== 'ws:' && url.protocol !== 'wss:') {
    throw new TypeError(`unsupported URL scheme ${url.protocol} (use http(s):// or ws(s)://)`);
  }
  if (!url.pathname.endsWith('/connection/websocket')) {
    url.pathname = url.pathname.replace(/\/+$/, '') + '/connection/websocket';
  }
  url.hash = '';
  return url.toString();
}

/** The http(s) URL of `path` (such as '/connection/sse') on a server given by
 * its base URL (http(s), or ws(s) with or without /connection/websocket). */
export function httpUrl(base, path) {
  const url = baseUrl(base);
  if (url.protocol === 'ws:') url.protocol = 'http:';
  else if (url.protocol === 'wss:') url.protocol = 'https:';
  else if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new TypeError(`unsupported URL scheme ${url.protocol} (use http(s):// or ws(s)://)`);
  }
  url.pathname = url.pathname.replace(/\/connection\/websocket\/?$/, '').replace(/\/+$/, '') + path;
  url.search = '';
  url.hash = '';
  return url.toString();
}

/** The `exp` claim of a JWT (Unix seconds), or undefined. */
function tokenExpiry(token) {
  try {
    const part = token.split('.')[1];
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const json =
      typeof atob === 'function'
        ? decodeURIComponent(
            Array.from(atob(b64), (c) => '%' + c.charCodeAt(0).toString(16).padStart(2, '0')).join(''),
          )
        : '';
    const exp = JSON.parse(json).exp;
    return typeof exp === 'number' ? exp : undefined;
  } catch {
    return undefined;
  }
}

function idempotencyKey() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === 'function') return c.randomUUID();
  let s = '';
  for (let i = 0; i < 4; i++) s += Math.floor(Math.random() * 2 ** 32).toString(36);
  return `${Date.now().toString(36)}-${s}`;
}

function isOffline() {
  const nav = globalThis.navigator;
  return (
    !!nav &&
    nav.onLine === false &&
    typeof globalThis.addEventListener === 'function' // an 'online' event can end it
  );
}

function isHidden() {
  const doc = globalThis.document;
  return !!doc && (doc.visibilityState === 'hidden' || doc.hidden === true);
}

const errorText = (e) => String((e && e.message) || e);

// The transport that worked last, per server URL: localStorage in browsers,
// this map elsewhere (and when storage is unavailable).
const transportMemory = new Map();

function recallTransport(key) {
  try {
    const storage = globalThis.localStorage;
    if (storage && typeof storage.getItem === 'function') {
      const value = storage.getItem(key);
      if (value != null) return value;
    }
  } catch {
    // storage disabled (privacy mode, sandboxed frame)
  }
  return transportMemory.get(key) ?? null;
}

function rememberTransport(key, name) {
  transportMemory.set(key, name);
  try {
    const storage = globalThis.localStorage;
    if (storage && typeof storage.setItem === 'function') storage.setItem(key, name);
  } catch {
    // storage disabled or full: memory only
  }
}

/**
 * An incremental parser of the `text/event-stream` format (the WHATWG
 * Server-Sent Events rules): feed it text as it arrives, in chunks split
 * anywhere; it returns the events completed so far as
 * `{ data, id, event }` (`id` only when the event carried an `id:` line).
 * Lines end with CRLF, LF or CR; `:` starts a comment; one space after the
 * field's colon is dropped; several `data:` lines join with '\n'.
 */
export class SseParser {
  constructor() {
    this._buffer = '';
    this._start = true;
    this._afterCR = false;
    this._data = [];
    this._id = undefined;
    this._event = '';
    /** The last `id:` seen (what a browser would send as Last-Event-ID). */
    this.lastEventId = '';
    /** The last valid `retry:` in ms, if any. */
    this.retry = undefined;
  }

  /** Parses `text`; returns the events it completed. */
  feed(text) {
    let buffer = this._buffer + text;
    if (this._start && buffer.length > 0) {
      if (buffer.charCodeAt(0) === 0xfeff) buffer = buffer.slice(1);
      this._start = false;
    }
    const events = [];
    let pos = 0;
    // A CR ended the previous chunk: an LF first in this one is its CRLF.
    if (this._afterCR && buffer.length > 0) {
      if (buffer.charCodeAt(0) === 10) pos = 1;
      this._afterCR = false;
    }
    for (let i = pos; i < buffer.length; i++) {
      const c = buffer.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      this._line(buffer.slice(pos, i), events);
      if (c === 13) {
        if (i + 1 >= buffer.length) this._afterCR = true;
        else if (buffer.charCodeAt(i + 1) === 10) i++;
      }
      pos = i + 1;
    }
    this._buffer = buffer.slice(pos);
    return events;
  }

  _line(line, events) {
    if (line === '') {
      if (this._data.length > 0) {
        const event = { data: this._data.join('\n'), event: this._event || 'message' };
        if (this._id !== undefined) event.id = this._id;
        events.push(event);
      }
      this._data = [];
      this._id = undefined;
      this._event = '';
      return;
    }
    if (line.charCodeAt(0) === 58 /* : */) return; // a comment
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.charCodeAt(0) === 32) value = value.slice(1);
    switch (field) {
      case 'data':
        this._data.push(value);
        break;
      case 'id':
        if (!value.includes('\0')) {
          this._id = value;
          this.lastEventId = value;
        }
        break;
      case 'event':
        this._event = value;
        break;
      case 'retry':
        if (/^[0-9]+$/.test(value)) this.retry = Number(value);
        break;
      default:
      // Unknown fields are ignored.
    }
  }
}

/** The seq of an SSE event id `<session>.<seq>`, or null. */
export function sseSeq(id) {
  if (typeof id !== 'string') return null;
  const dot = id.lastIndexOf('.');
  const digits = id.slice(dot + 1);
  if (!/^[0-9]+$/.test(digits)) return null;
  return Number(digits);
}

/** The WebSocket transport: `GET /connection/websocket`, one frame per message. */
export class WebSocketTransport {
  constructor(baseUrl, options = {}) {
    this.name = 'websocket';
    this.url = websocketUrl(baseUrl);
    this._WebSocket = options.WebSocket || globalThis.WebSocket;
    this._ws = null;
    this._events = null;
  }

  /** Resolves true once a socket is open (kept for open()), false when it
   * cannot be opened within `timeoutMs`. */
  probe(timeoutMs = 10000) {
    const WS = this._WebSocket;
    if (typeof WS !== 'function') return Promise.resolve(false);
    return new Promise((resolve) => {
      let ws;
      try {
        ws = new WS(this.url);
      } catch {
        resolve(false);
        return;
      }
      this._ws = ws;
      ws.onerror = () => {};
      const done = (ok) => {
        clearTimeout(timer);
        ws.onopen = ws.onclose = null;
        if (!ok) {
          if (this._ws === ws) this._ws = null;
          this._kill(ws, false);
        }
        resolve(ok);
      };
      const timer = setTimeout(() => done(false), timeoutMs);
      ws.onopen = () => done(this._ws === ws);
      ws.onclose = () => done(false);
    });
  }

  open(connect, events) {
    this._events = events;
    const probed = this._ws;
    if (probed) {
      if (probed.readyState !== 1) {
        this._ws = null;
        this._failLater(1006, 'the socket closed before use');
        return;
      }
      this._attach(probed);
      probed.send(JSON.stringify(connect));
      return;
    }
    const WS = this._WebSocket;
    if (typeof WS !== 'function') {
      this._failLater(
        CLIENT_CODES.TRANSPORT_UNAVAILABLE,
        'no WebSocket implementation: pass options.WebSocket (e.g. from the ws package)',
      );
      return;
    }
    let ws;
    try {
      ws = new WS(this.url);
    } catch (e) {
      this._failLater(CLIENT_CODES.TRANSPORT_UNAVAILABLE, errorText(e));
      return;
    }
    this._ws = ws;
    this._attach(ws);
    ws.onopen = () => {
      if (this._ws === ws) ws.send(JSON.stringify(connect));
    };
  }

  _attach(ws) {
    // Keep an error listener at all times: the ws package throws an 'error'
    // event that has none. The close event that follows reports the end.
    ws.onerror = () => {};
    ws.onmessage = (event) => {
      if (this._ws !== ws || typeof event.data !== 'string') return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      this._events.onFrame(frame, undefined);
    };
    ws.onclose = (event) => {
      if (this._ws !== ws) return;
      const events = this._events;
      this._detach();
      events.onClose({ code: event.code, reason: event.reason || '' });
    };
  }

  /** A plain `connect` on the same socket after a refused resume. */
  reconnect(connect) {
    if (!this.send([connect])) {
      const ws = this._ws;
      if (ws) {
        this._detach();
        this._kill(ws, false);
      }
      this._failLater(1006, 'the socket is not open');
    }
  }

  send(frames) {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1) return false;
    for (const frame of frames) ws.send(JSON.stringify(frame));
    return true;
  }

  /** Ends the socket. `deliberate` (disconnect()) sends a close frame, which
   * ends the session on the server; otherwise (a dead connection, a
   * timeout) the session stays resumable. */
  close(deliberate = false) {
    const ws = this._detach();
    if (ws) this._kill(ws, deliberate);
  }

  _kill(ws, deliberate) {
    try {
      if (typeof ws.terminate === 'function') {
        // The ws package: terminate() drops the connection at once with no
        // close frame (a dead connection never answers one).
        if (deliberate && ws.readyState === 1) ws.close(1000);
        else ws.terminate();
      } else if (deliberate || ws.readyState === 0) {
        ws.close(1000);
      }
      // A browser socket cannot go without a close frame, and a close frame
      // ends the session: an open one is left to the server, which closes
      // it when the session resumes elsewhere (3000) or its pings go
      // unanswered. Its handlers are gone already.
    } catch {
      // already closed
    }
  }

  _detach() {
    const ws = this._ws;
    this._ws = null;
    this._events = null;
    if (ws) ws.onopen = ws.onmessage = ws.onclose = null;
    return ws;
  }

  _failLater(code, reason) {
    const events = this._events;
    this._events = null;
    if (events) setTimeout(() => events.onClose({ code, reason }), 0);
  }
}

/** The `{code, message}` of an HTTP error answer (JSON `{"error":{…}}`). */
async function httpError(res) {
  let code;
  let message = `HTTP ${res.status}`;
  try {
    const body = await res.json();
    if (body && body.error && typeof body.error === 'object') {
      if (typeof body.error.code === 'number') code = body.error.code;
      if (typeof body.error.message === 'string') message = body.error.message;
    }
  } catch {
    // not JSON
  }
  return { status: res.status, code, message };
}

function fetchOf(options) {
  const f = options.fetch || globalThis.fetch;
  return typeof f === 'function' ? f : null;
}

/**
 * Commands for SSE and long-polling: `POST /connection/send?session=…` with
 * `Authorization: Bearer <token>` and a JSON array, one request at a time
 * (commands queued meanwhile go together in the next one), so they arrive in
 * order.
 */
class HttpSender {
  constructor(transport) {
    this._t = transport;
    this._queue = [];
    this._busy = false;
    this._closed = false;
    this._abort = null;
    this._idle = [];
  }

  send(frames) {
    if (this._closed) return false;
    this._queue.push(...frames);
    this._flush();
    return true;
  }

  /** Sends what is queued (once the session is known). */
  _flush() {
    this._run().catch((e) => this._t._fail(1006, `send failed: ${errorText(e)}`));
  }

  /** Resolves when nothing is queued or being sent. */
  drain() {
    if (this._closed || (!this._busy && this._queue.length === 0)) return Promise.resolve();
    return new Promise((r) => this._idle.push(r));
  }

  close() {
    this._closed = true;
    this._queue = [];
    if (this._abort) this._abort.abort();
    this._settleIdle();
  }

  _settleIdle() {
    for (const r of this._idle.splice(0)) r();
  }

  async _run() {
    if (this._busy || this._closed || this._queue.length === 0 || !this._t._session) return;
    this._busy = true;
    try {
      while (!this._closed && this._queue.length > 0) {
        const batch = this._queue.splice(0);
        const ok = await this._deliver(batch);
        if (!ok) return;
      }
    } finally {
      this._busy = false;
      if (!this._closed && this._queue.length === 0) this._settleIdle();
    }
  }

  /** Sends `batch`; false when the transport failed. */
  async _deliver(batch) {
    let renewed = 0;
    let failures = 0;
    for (;;) {
      if (this._closed) return false;
      const result = await this.post(batch);
      if (this._closed) return false;
      if (result.ok) {
        this._t._emit('onAccepted', batch);
        return true;
      }
      const { status, code, message } = result;
      if (status === 401 && renewed < 2) {
        // 109: the token expired (or 101, refused): get a new one, send again.
        renewed++;
        try {
          await this._t._renewToken();
          continue;
        } catch (e) {
          // Reconnect (fetching a token again) rather than stop.
          this._t._fail(code === 109 ? TOKEN_EXPIRED : 1006, `send refused (${message}); no new token: ${errorText(e)}`);
          return false;
        }
      }
      if (status === 401) {
        this._t._fail(code === 109 ? TOKEN_EXPIRED : 1006, `send refused: ${message}`);
        return false;
      }
      if (status === 404 || code === SESSION_NOT_FOUND || status === 403) {
        this._t._sessionLost(code || SESSION_NOT_FOUND, message);
        return false;
      }
      if (status === 400 || status === 413) {
        if (batch.length > 1) {
          // One of them is refused: send them one by one, in order, so only
          // that one gets the error.
          for (const frame of batch) {
            if (!(await this._deliver([frame]))) return false;
          }
          return true;
        }
        const [frame] = batch;
        if (frame && frame.id != null) {
          this._t._frame({ id: frame.id, type: 'error', code: code || (status === 413 ? 111 : 107), message }, null);
        }
        return true;
      }
      // A network error or a 5xx: it may or may not have arrived. Try again a
      // little later (a repeat is harmless: replies are matched by id once
      // and publishes carry idempotency keys), then give up on the transport.
      if (++failures > 2) {
        this._t._fail(1006, `send failed: ${message}`);
        return false;
      }
      await sleep(200 * 2 ** failures);
    }
  }

  /** One POST of `body`: {ok} or {ok: false, status, code, message}. */
  async post(body) {
    const t = this._t;
    const fetchFn = fetchOf(t.options);
    const url = `${t._sendUrl}?session=${encodeURIComponent(t._session)}`;
    const controller = new AbortController();
    this._abort = controller;
    const timer = setTimeout(() => controller.abort(), t.options.timeout || 10000);
    try {
      const res = await fetchFn(url, {
        method: 'POST',
        headers: { Authorization: `Bearer ${t._token()}`, 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
        signal: controller.signal,
      });
      if (res.ok) {
        try {
          await res.arrayBuffer();
        } catch {
          // the answer's body does not matter
        }
        return { ok: true };
      }
      return { ok: false, ...(await httpError(res)) };
    } catch (e) {
      return { ok: false, status: undefined, code: undefined, message: errorText(e) };
    } finally {
      clearTimeout(timer);
      if (this._abort === controller) this._abort = null;
    }
  }
}

/** What SSE and long-polling share: the events, the sender, failing once. */
class HttpTransport {
  constructor(baseUrl, options = {}) {
    this.options = options;
    this._sendUrl = httpUrl(baseUrl, '/connection/send');
    this._events = null;
    this._session = null;
    this._gen = 0;
    this._controller = null;
    this._sender = new HttpSender(this);
  }

  send(frames) {
    if (!this._events) return false;
    return this._sender.send(frames);
  }

  drain() {
    return this._sender.drain();
  }

  /** Ends the transport. `deliberate` (disconnect()) also ends the session
   * on the server with a `disconnect` command (kept alive through a page
   * unload), as a WebSocket close frame does. */
  close(deliberate = false) {
    if (deliberate && this._session) this._sendDisconnect();
    this._stop();
    this._events = null;
    this._sender.close();
  }

  _sendDisconnect() {
    const fetchFn = fetchOf(this.options);
    if (!fetchFn) return;
    const url = `${this._sendUrl}?session=${encodeURIComponent(this._session)}`;
    try {
      fetchFn(url, {
        method: 'POST',
        keepalive: true,
        headers: { Authorization: `Bearer ${this._token()}`, 'Content-Type': 'application/json' },
        body: JSON.stringify([{ id: 0, type: 'disconnect' }]),
      }).then((res) => res.arrayBuffer(), () => {}).catch(() => {});
    } catch {
      // best effort: otherwise the session ends after the grace period
    }
  }

  /** Stops the current request (a new generation starts). */
  _stop() {
    this._gen++;
    if (this._controller) {
      this._controller.abort();
      this._controller = null;
    }
  }

  _emit(name, ...args) {
    const events = this._events;
    if (events && typeof events[name] === 'function') return events[name](...args);
    return undefined;
  }

  _frame(frame, seq) {
    if (this._events) this._events.onFrame(frame, seq);
  }

  _token() {
    return this._emit('token') || '';
  }

  async _renewToken() {
    const events = this._events;
    if (!events || typeof events.renewToken !== 'function') throw new Error('no getToken');
    return events.renewToken();
  }

  /** Ends the transport and reports it (once). */
  _fail(code, reason) {
    const events = this._events;
    if (!events) return;
    this.close();
    events.onClose({ code, reason });
  }

  /** The session is gone on the server: report it (once) and end. */
  _sessionLost(code, reason) {
    const events = this._events;
    if (!events) return;
    this.close();
    if (typeof events.onSessionLost === 'function') events.onSessionLost({ code, reason });
    else events.onClose({ code, reason });
  }

  /** The reply to the connect command is an HTTP error. */
  _refused(connect, error, what) {
    if (error.code !== undefined && CONNECT_ERROR_CODES.has(error.code)) {
      this._frame({ id: connect.id, type: 'error', code: error.code, message: error.message }, null);
    } else {
      this._fail(CLIENT_CODES.TRANSPORT_UNAVAILABLE, `${what}: ${error.message} (HTTP ${error.status})`);
    }
  }

  /** Delivers a frame; a `disconnect` ends the transport after it. Returns
   * whether the transport is still on generation `gen`. */
  _deliver(frame, seq, gen) {
    if (!frame || typeof frame !== 'object') return gen === this._gen;
    this._frame(frame, seq);
    if (gen !== this._gen || !this._events) return false;
    if (frame.type === 'disconnect' && frame.id == null) {
      this._fail(typeof frame.code === 'number' ? frame.code : 3000, frame.reason || 'disconnected');
      return false;
    }
    return true;
  }
}

/**
 * Server-Sent Events over `fetch` with a streaming body (not EventSource, so
 * the client sees HTTP errors and buffering): `GET /connection/sse`, commands
 * through `POST /connection/send`.
 */
export class SseTransport extends HttpTransport {
  constructor(baseUrl, options = {}) {
    super(baseUrl, options);
    this.name = 'sse';
    this.url = httpUrl(baseUrl, '/connection/sse');
  }

  open(connect, events) {
    this._events = events;
    this._start(connect);
  }

  /** A plain connect (a new stream without session) after a refused resume. */
  reconnect(connect) {
    if (!this._events) return;
    this._stop();
    this._start(connect);
  }

  _start(connect) {
    const gen = ++this._gen;
    const fetchFn = fetchOf(this.options);
    if (!fetchFn) {
      setTimeout(() => {
        if (gen === this._gen) this._fail(CLIENT_CODES.TRANSPORT_UNAVAILABLE, 'no fetch implementation');
      }, 0);
      return;
    }
    const url = new URL(this.url);
    url.searchParams.set('token', connect.token);
    if (connect.session) {
      url.searchParams.set('session', connect.session);
      url.searchParams.set('seq', String(connect.seq));
    }
    this._session = connect.session || null;
    const controller = new AbortController();
    this._controller = controller;
    const sseTimeout = this.options.sseTimeout ?? DEFAULT_OPTIONS.sseTimeout;
    // A stream that brings no event in time sits behind a buffering proxy.
    let deadline = setTimeout(() => {
      deadline = null;
      if (gen === this._gen) {
        this._fail(CLIENT_CODES.TRANSPORT_UNAVAILABLE, `no SSE event within ${sseTimeout} ms (a buffering proxy?)`);
      }
    }, sseTimeout);
    const clearDeadline = () => {
      if (deadline) clearTimeout(deadline);
      deadline = null;
    };
    const run = async () => {
      let res;
      try {
        res = await fetchFn(url.toString(), {
          headers: { Accept: 'text/event-stream' },
          signal: controller.signal,
        });
      } catch (e) {
        if (gen === this._gen) this._fail(1006, `SSE request failed: ${errorText(e)}`);
        return;
      }
      if (gen !== this._gen) return cancel(res);
      if (!res.ok) {
        const error = await httpError(res);
        clearDeadline();
        if (gen !== this._gen) return;
        this._refused(connect, error, 'SSE refused');
        return;
      }
      const type = (res.headers && res.headers.get && res.headers.get('content-type')) || '';
      if (!/^text\/event-stream/i.test(type) || !res.body || typeof res.body.getReader !== 'function') {
        cancel(res);
        this._fail(CLIENT_CODES.TRANSPORT_UNAVAILABLE, `not an event stream (${type || 'no content type'})`);
        return;
      }
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      const parser = new SseParser();
      let connected = false;
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (gen !== this._gen) break;
          if (done) {
            this._fail(1006, 'the event stream ended');
            return;
          }
          this._emit('onAlive');
          for (const event of parser.feed(decoder.decode(value, { stream: true }))) {
            let frame;
            try {
              frame = JSON.parse(event.data);
            } catch {
              continue;
            }
            if (!frame || typeof frame !== 'object') continue;
            const seq = event.id !== undefined ? sseSeq(event.id) : null;
            if (!connected && frame.type === 'connected') {
              connected = true;
              clearDeadline();
              if (typeof frame.session === 'string') this._session = frame.session;
              frame = { ...frame, id: connect.id };
              this._sender._flush();
            }
            if (!this._deliver(frame, seq, gen)) break;
          }
          if (gen !== this._gen) break;
        }
      } catch (e) {
        if (gen === this._gen) this._fail(1006, `the event stream failed: ${errorText(e)}`);
      } finally {
        clearDeadline();
        try {
          reader.cancel().catch(() => {});
        } catch {
          // released already
        }
      }
    };
    run()
      .catch((e) => {
        if (gen === this._gen) this._fail(1006, `the event stream failed: ${errorText(e)}`);
      })
      .finally(() => {
        if (gen !== this._gen) clearDeadline();
      });
  }
}

function cancel(res) {
  try {
    if (res && res.body && typeof res.body.cancel === 'function') res.body.cancel().catch(() => {});
  } catch {
    // locked or gone
  }
}

/**
 * Long-polling: `POST /connection/poll` with the token answers the
 * `connected` reply; then `GET /connection/poll?session=…&cursor=<seq>` in a
 * loop. A failed poll is repeated with the same cursor (the server answers
 * the same frames again). Commands go through `POST /connection/send`.
 */
export class LongPollTransport extends HttpTransport {
  constructor(baseUrl, options = {}) {
    super(baseUrl, options);
    this.name = 'long-polling';
    this.url = httpUrl(baseUrl, '/connection/poll');
    this._cursor = 0;
    this._wake = null;
    this._onVisibility = null;
  }

  /** Silence that is normal: a poll is held up to `pollHold`, and a hidden
   * page waits `hiddenPollDelay` between polls. */
  idleLimit(pingMs) {
    const o = this.options;
    return Math.max(pingMs || 0, o.pollHold ?? DEFAULT_OPTIONS.pollHold) + (o.hiddenPollDelay ?? DEFAULT_OPTIONS.hiddenPollDelay);
  }

  open(connect, events) {
    this._events = events;
    const doc = globalThis.document;
    if (doc && typeof doc.addEventListener === 'function') {
      this._onVisibility = () => {
        if (!isHidden() && this._wake) this._wake();
      };
      doc.addEventListener('visibilitychange', this._onVisibility);
    }
    this._start(connect);
  }

  reconnect(connect) {
    if (!this._events) return;
    this._stop();
    this._start(connect);
  }

  close(deliberate = false) {
    const doc = globalThis.document;
    if (this._onVisibility && doc && typeof doc.removeEventListener === 'function') {
      doc.removeEventListener('visibilitychange', this._onVisibility);
    }
    this._onVisibility = null;
    if (this._wake) this._wake();
    super.close(deliberate);
  }

  _start(connect) {
    const gen = ++this._gen;
    (connect.session ? this._resume(connect, gen) : this._connect(connect, gen)).catch((e) => {
      if (gen === this._gen) this._fail(1006, errorText(e));
    });
  }

  async _connect(connect, gen) {
    const fetchFn = fetchOf(this.options);
    if (!fetchFn) throw new Error('no fetch implementation');
    const controller = new AbortController();
    this._controller = controller;
    let res;
    try {
      res = await fetchFn(this.url, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify({ token: connect.token }),
        signal: controller.signal,
      });
    } catch (e) {
      if (gen === this._gen) this._fail(1006, `poll connect failed: ${errorText(e)}`);
      return;
    }
    if (gen !== this._gen) return cancel(res);
    if (!res.ok) {
      const error = await httpError(res);
      if (gen === this._gen) this._refused(connect, error, 'long-polling refused');
      return;
    }
    let reply;
    try {
      reply = await res.json();
    } catch (e) {
      if (gen === this._gen) this._fail(CLIENT_CODES.TRANSPORT_UNAVAILABLE, `poll connect: ${errorText(e)}`);
      return;
    }
    if (gen !== this._gen) return;
    if (!reply || reply.type !== 'connected' || typeof reply.session !== 'string') {
      if (reply && reply.type === 'error') {
        this._refused(connect, { code: reply.code, message: reply.message || 'refused', status: res.status }, 'long-polling refused');
      } else {
        this._fail(CLIENT_CODES.TRANSPORT_UNAVAILABLE, 'poll connect: not a connected reply');
      }
      return;
    }
    this._session = reply.session;
    this._cursor = 1;
    if (!this._deliver({ ...reply, id: connect.id }, 1, gen)) return;
    this._sender._flush();
    await this._loop(gen);
  }

  /** Continues a session by polling from its seq. A POST of no commands
   * first checks that the session is there (and the token good), so that a
   * session that is gone gets a plain connect at once. */
  async _resume(connect, gen) {
    this._session = connect.session;
    this._cursor = connect.seq;
    let renewed = false;
    for (;;) {
      const result = await this._sender.post([]);
      if (gen !== this._gen) return;
      if (!result.ok && result.status === 401 && !renewed) {
        renewed = true;
        try {
          await this._renewToken();
          if (gen !== this._gen) return;
          continue;
        } catch {
          // fall through: report the refusal
        }
      }
      if (result.ok || (result.status === 400 && result.code === 107)) break;
      if (result.status === undefined || result.status >= 500) {
        this._fail(1006, `poll resume failed: ${result.message}`);
        return;
      }
      const code =
        result.code !== undefined ? result.code : result.status === 404 ? SESSION_NOT_FOUND : result.status === 401 ? 101 : undefined;
      this._refused(connect, { ...result, code }, 'long-polling resume refused');
      return;
    }
    // Made here (no request carries a token): `_local` tells the client the
    // server still holds the session's earlier token.
    const frame = { id: connect.id, type: 'connected', session: connect.session, resumed: true, _local: true };
    if (!this._deliver(frame, null, gen)) return;
    this._sender._flush();
    await this._loop(gen);
  }

  async _loop(gen) {
    const fetchFn = fetchOf(this.options);
    let failures = 0;
    while (gen === this._gen && this._events) {
      if (isHidden()) {
        // A hidden page polls less often (battery); shown again, at once.
        await new Promise((resolve) => {
          const timer = setTimeout(done, this.options.hiddenPollDelay ?? DEFAULT_OPTIONS.hiddenPollDelay);
          function done() {
            clearTimeout(timer);
            resolve();
          }
          this._wake = done;
        });
        this._wake = null;
        if (gen !== this._gen || !this._events) return;
      }
      const cursor = this._cursor;
      const url = `${this.url}?session=${encodeURIComponent(this._session)}&cursor=${cursor}`;
      const controller = new AbortController();
      this._controller = controller;
      let res;
      let body;
      let error;
      try {
        res = await fetchFn(url, { headers: { Accept: 'application/json' }, signal: controller.signal });
        if (res.ok) body = await res.json();
        else error = await httpError(res);
      } catch (e) {
        error = { status: undefined, code: undefined, message: errorText(e) };
      }
      if (gen !== this._gen || !this._events) return;
      if (error) {
        if (error.status === 404 || error.code === SESSION_NOT_FOUND || error.code === BAD_CURSOR) {
          this._sessionLost(error.code || SESSION_NOT_FOUND, error.message);
          return;
        }
        if (error.status !== undefined && error.status < 500 && error.status !== 408 && error.status !== 429) {
          this._fail(CLIENT_CODES.TRANSPORT_UNAVAILABLE, `poll refused: ${error.message} (HTTP ${error.status})`);
          return;
        }
        // Lost on the way: ask again with the same cursor.
        if (++failures > 2) {
          this._fail(1006, `poll failed: ${error.message}`);
          return;
        }
        await sleep(200 * 2 ** failures);
        continue;
      }
      failures = 0;
      this._emit('onAlive');
      const messages = body && Array.isArray(body.messages) ? body.messages : [];
      const next = body && typeof body.cursor === 'number' ? body.cursor : cursor + messages.length;
      const counted = next - cursor === messages.length;
      for (let i = 0; i < messages.length; i++) {
        const seq = counted || i === messages.length - 1 ? next - (messages.length - 1 - i) : undefined;
        if (!this._deliver(messages[i], seq, gen)) return;
      }
      if (next > this._cursor) this._cursor = next;
    }
  }
}

/** A subscription to one channel (made by `Switchboard#subscribe`). */
export class Subscription extends Emitter {
  constructor(client, channel, options = {}) {
    super();
    this._client = client;
    this.channel = channel;
    this._state = 'subscribing';
    this._position = options.since ? { offset: options.since.offset, epoch: options.since.epoch } : null;
    this._token = options.token;
    this._req = null; // the subscribe command in flight, if any
    this._sent = false; // a subscribe went to the current session
    const handlers = {
      publication: options.onPublication,
      join: options.onJoin,
      leave: options.onLeave,
      subscribed: options.onSubscribed,
      error: options.onError,
      unsubscribed: options.onUnsubscribed,
    };
    for (const [event, fn] of Object.entries(handlers)) if (typeof fn === 'function') this.on(event, fn);
  }

  /** 'subscribing' | 'subscribed' | 'unsubscribed' */
  get state() {
    return this._state;
  }

  /** The last position delivered ({offset, epoch}), or null before the first. */
  get position() {
    return this._position ? { ...this._position } : null;
  }

  /** Publishes `data`; resolves with {offset, epoch} once it is in the stream. */
  publish(data) {
    return this._client._publish(this.channel, data);
  }

  /** Resolves with {clients: {clientId: {user, client, data}}}. */
  async presence() {
    const reply = await this._client._request({ type: 'presence', channel: this.channel });
    return { clients: reply.clients || {} };
  }

  /** Resolves with {numClients, numUsers}. */
  async presenceStats() {
    const reply = await this._client._request({ type: 'presence_stats', channel: this.channel });
    return { numClients: reply.num_clients, numUsers: reply.num_users };
  }

  /** Resolves with {position, publications, recovered?}. */
  async history({ limit, since, reverse } = {}) {
    const body = { type: 'history', channel: this.channel };
    if (limit != null) body.limit = limit;
    if (since != null) body.since = { offset: since.offset, epoch: since.epoch };
    if (reverse) body.reverse = true;
    const reply = await this._client._request(body);
    const position = reply.position;
    const epoch = position && position.epoch;
    const result = {
      position,
      publications: (reply.publications || []).map((p) => ({ channel: this.channel, epoch, ...p })),
    };
    if (reply.recovered != null) result.recovered = reply.recovered;
    return result;
  }

  /** Stops the subscription (for good: subscribe again for a new one). */
  unsubscribe() {
    if (this._state === 'unsubscribed') return;
    this._state = 'unsubscribed';
    this._client._unsubscribe(this);
    this.emit('unsubscribed', { channel: this.channel });
  }

  _listenerError(e) {
    this._client._listenerError(e);
  }

  _current() {
    return this._state !== 'unsubscribed' && this._client._subs.get(this.channel) === this;
  }

  _onSubscribed(reply) {
    if (!this._current()) return;
    const position = reply.position || {};
    this._state = 'subscribed';
    this.emit('subscribed', {
      channel: this.channel,
      recovered: !!reply.recovered,
      position: { offset: position.offset, epoch: position.epoch },
    });
    for (const pub of reply.publications || []) {
      if (!this._current()) return;
      this._deliver({ channel: this.channel, epoch: position.epoch, ...pub });
    }
    // Continue from the stream's position (a stream that was not recovered
    // starts over from there).
    const cur = this._position;
    if (typeof position.offset === 'number' && (!cur || cur.epoch !== position.epoch || position.offset > cur.offset)) {
      this._position = { offset: position.offset, epoch: position.epoch };
    }
  }

  _onSubscribeError(error) {
    if (!this._current()) return;
    error.channel = this.channel;
    this._state = 'unsubscribed';
    this._client._subs.delete(this.channel);
    this.emit('error', error);
    this._client._emitError(error);
    this.emit('unsubscribed', { channel: this.channel, error });
  }

  /** Delivers a publication unless its offset was already delivered. */
  _deliver(pub) {
    const { offset, epoch } = pub;
    if (typeof offset === 'number') {
      const cur = this._position;
      if (cur && cur.epoch === epoch && offset <= cur.offset) return;
      this._position = { offset, epoch };
    }
    this.emit('publication', {
      channel: this.channel,
      offset,
      epoch,
      data: pub.data,
      info: pub.info,
      time: pub.time,
    });
  }
}


/** The client: one session, many subscriptions, over the best transport
 * that works. */
export class Switchboard extends Emitter {
  constructor(url, options = {}) {
    super();
    if (typeof options.getToken !== 'function' && typeof options.token !== 'string') {
      throw new TypeError('Switchboard: options.getToken (or a static options.token) is required');
    }
    this.url = url;
    this.options = {
      ...DEFAULT_OPTIONS,
      ...options,
      backoff: { ...DEFAULT_OPTIONS.backoff, ...(options.backoff || {}) },
    };
    const transports = this.options.transports;
    if (!Array.isArray(transports) || transports.length === 0) {
      throw new TypeError('Switchboard: options.transports must list at least one transport');
    }
    this._ladder = transports.map((t) => {
      const Type = typeof t === 'string' ? Switchboard.transports[t] : t;
      if (typeof Type !== 'function') throw new TypeError(`Switchboard: unknown transport ${t}`);
      const name = typeof t === 'string' ? t : Type.transportName || Type.name;
      return { name, Type };
    });
    this._memoryKey = `switchboard:transport:${url}`;
    this._transportIndex = 0;
    this._roundStart = 0; // the rung this round of attempts began on

    this._state = 'disconnected';
    this._info = { client: null, user: null, transport: null };
    this._who = { client: null, user: null }; // the session's, kept across resumes
    this._sess = null; // { id, seq }: the session to resume and the last seq processed
    this._pingMs = 0;
    this._want = false; // connect() was called and no terminal disconnect since
    this._touched = false; // connect() or disconnect() was called
    this._conn = null; // the current connection (attempt)
    this._opening = false; // waiting for getToken before opening a transport
    this._seq = 0; // bumped to make stale async steps give up
    this._attempt = 0; // reconnect attempts since the last `connected`
    this._reconnectTimer = null;
    this._watchdogTimer = null;
    this._refreshTimer = null;
    this._upgradeTimer = null;
    this._upgrading = false;
    this._upgradeBackoff = new Map(); // rung -> { failures, next }: moves up that failed
    this._quietNext = false; // the next attempt goes back down after a failed move up
    this._nextId = 1;
    this._pending = new Map(); // command id -> request (a resent one has several ids)
    this._waiting = []; // requests waiting for a connection
    this._outbox = []; // publishes not yet acknowledged, in order
    this._subs = new Map(); // channel -> Subscription
    this._unsubscribeOnResume = new Set(); // channels dropped while away from the session
    this._token = typeof options.token === 'string' ? options.token : null;
    this._sessToken = null; // the token the server holds for the session
    this._globals = null;

    if (this.options.autoConnect) {
      queueMicrotask(() => {
        if (!this._touched) this.connect();
      });
    }
  }

  /** 'disconnected' | 'connecting' | 'connected' */
  get state() {
    return this._state;
  }

  /** This connection's client id (when connected). */
  get client() {
    return this._info.client;
  }

  get user() {
    return this._info.user;
  }

  /** The transport in use ('websocket' | 'sse' | 'long-polling'), when connected. */
  get transport() {
    return this._info.transport;
  }

  /** The session id (kept while it can be resumed), or null. */
  get session() {
    return this._sess ? this._sess.id : null;
  }

  /** Starts connecting (and reconnecting) until disconnect(). */
  connect() {
    this._touched = true;
    if (this._want) return;
    this._want = true;
    this._attempt = 0;
    const remembered = recallTransport(this._memoryKey);
    const at = this._ladder.findIndex((entry) => entry.name === remembered);
    this._transportIndex = this._roundStart = at >= 0 ? at : 0;
    this._bindGlobals();
    this._setState({ state: 'connecting' });
    this._open();
  }

  /** Closes the connection (ending the session) and stops reconnecting.
   * Subscriptions and unsent publishes are kept for the next connect(). */
  disconnect() {
    this._touched = true;
    this._terminate({ code: CLIENT_CODES.DISCONNECT_CALLED, reason: 'disconnect called' }, true);
  }

  /** Subscribes to `channel` (now, or as soon as connected). */
  subscribe(channel, options = {}) {
    if (typeof channel !== 'string' || channel === '') throw new TypeError('channel must be a non-empty string');
    if (this._subs.has(channel)) {
      throw new SwitchboardError(`already subscribed to ${channel}`, 105, { channel });
    }
    const sub = new Subscription(this, channel, options);
    this._subs.set(channel, sub);
    if (this._ready()) this._conn.transport.send([this._subscribeFrame(sub, this._conn)]);
    return sub;
  }

  /** The subscription to `channel`, if any. */
  getSubscription(channel) {
    return this._subs.get(channel) || null;
  }

  // ---- internals -------------------------------------------------------

  _ready() {
    return !!this._conn && this._conn.connected && !this._conn.switching;
  }

  _setState(event, force = false) {
    if (event.state === this._state && !force) return;
    this._state = event.state;
    if (event.state !== 'connected') this._info = { client: null, user: null, transport: null };
    this.emit('state', event);
  }

  _emitError(error) {
    this.emit('error', error);
  }

  _listenerError(e) {
    const error =
      e instanceof SwitchboardError ? e : new SwitchboardError(`a callback threw: ${(e && e.message) || e}`, 'callback', { cause: e });
    if (this._inErrorListener) {
      console.error(e);
      return;
    }
    this._inErrorListener = true;
    try {
      if (!this.emit('error', error)) console.error(e);
    } finally {
      this._inErrorListener = false;
    }
  }

  async _open() {
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    if (!this._want || this._conn || this._opening) return;
    if (isOffline()) {
      // Wait for the 'online' event (the timer is a fallback).
      this._scheduleReconnect();
      return;
    }
    const seq = ++this._seq;
    let token = this._token;
    const exp = token ? tokenExpiry(token) : undefined;
    if ((!token || (exp !== undefined && exp * 1000 <= Date.now())) && typeof this.options.getToken === 'function') {
      this._opening = true;
      try {
        token = await this.options.getToken();
      } catch (e) {
        token = null;
        if (seq === this._seq) {
          this._emitError(new SwitchboardError(`getToken failed: ${(e && e.message) || e}`, 'token', { cause: e }));
        }
      } finally {
        this._opening = false;
      }
      if (seq !== this._seq || !this._want || this._conn) return;
      if (typeof token !== 'string' || token === '') {
        if (token !== null) this._emitError(new SwitchboardError('getToken returned no token', 'token'));
        this._scheduleReconnect();
        return;
      }
      this._token = token;
    }
    if (!token) {
      this._terminate({ code: TOKEN_EXPIRED, reason: 'token expired' });
      return;
    }

    const index = this._transportIndex % this._ladder.length;
    let transport;
    try {
      transport = new this._ladder[index].Type(this.url, this.options);
    } catch (e) {
      this._emitError(new SwitchboardError(`transport: ${(e && e.message) || e}`, 'transport', { cause: e }));
      if (this._advanceTransport()) this._openSoon();
      else this._scheduleReconnect();
      return;
    }
    const fallback = this._quietNext;
    this._quietNext = false;
    this._start(transport, index, fallback ? 'fallback' : false);
  }

  /** Opens `transport` (rung `index`) with a connect: a resume when there
   * is a session. `move`: 'up' (a move up the ladder), 'fallback' (back down
   * after a move up failed) or false; while moving, the state stays
   * 'connected' (commands wait) and a `connected` event follows only when
   * the transport changed. */
  _start(transport, index, move) {
    const conn = {
      transport,
      index,
      upgrade: !!move,
      fallback: move === 'fallback',
      connected: false,
      resuming: false,
      switching: false,
      disconnect: null,
      connectReq: null,
      pingMs: 0,
      lastSeen: 0,
      expires: null,
    };
    this._conn = conn;
    const frame = this._connectFrame(conn);
    const events = {
      onFrame: (f, seq) => this._onFrame(conn, f, seq),
      onClose: (e) => this._onClose(conn, e),
      onAlive: () => {
        if (conn === this._conn) conn.lastSeen = now();
      },
      onAccepted: (frames) => this._onAccepted(conn, frames),
      onSessionLost: (e) => this._onSessionLost(conn, e),
      token: () => this._token,
      renewToken: () => this._renewToken(),
    };
    try {
      transport.open(frame, events);
    } catch (e) {
      this._abort(conn, { code: CLIENT_CODES.TRANSPORT_UNAVAILABLE, reason: errorText(e) }, true);
    }
  }

  /** The connect command for `conn`: with session and seq to resume. */
  _connectFrame(conn) {
    const body = { type: 'connect', token: this._token };
    if (this._sess) {
      body.session = this._sess.id;
      body.seq = this._sess.seq;
    }
    conn.resuming = !!this._sess;
    conn.sentToken = body.token;
    const req = {
      kind: 'connect',
      body,
      resolve: (reply) => this._onConnected(conn, reply),
      reject: (error) => this._onConnectError(conn, error),
    };
    conn.connectReq = req;
    return this._wire(req, conn);
  }

  _openSoon() {
    if (this._reconnectTimer || !this._want) return;
    this._reconnectTimer = setTimeout(() => {
      this._reconnectTimer = null;
      this._open();
    }, 0);
  }

  /** Moves to the next rung of the ladder; false when that ends the round
   * (back where it began: wait before going on). */
  _advanceTransport() {
    const n = this._ladder.length;
    if (n <= 1) return false;
    this._transportIndex = (this._transportIndex + 1) % n;
    return this._transportIndex !== this._roundStart;
  }

  async _renewToken() {
    if (typeof this.options.getToken !== 'function') throw new Error('no getToken');
    const token = await this.options.getToken();
    if (typeof token !== 'string' || token === '') throw new Error('getToken returned no token');
    this._token = token;
    return token;
  }

  /** Gives `req` an id, registers it as pending and returns its frame.
   * Requests other than reads get a timeout here (reads have one already).
   * A request sent again keeps its earlier ids: the reply to whichever
   * arrives first settles it. */
  _wire(req, conn) {
    const id = this._nextId++;
    req.id = id;
    req.accepted = false;
    (req.ids || (req.ids = [])).push(id);
    this._pending.set(id, req);
    if (req.kind !== 'request') {
      clearTimeout(req.timer);
      req.timer = setTimeout(() => this._timedOut(req, conn), this.options.timeout);
    }
    return { id, ...req.body };
  }

  /** Forgets every id of `req`. */
  _forget(req) {
    if (req.ids) for (const id of req.ids) this._pending.delete(id);
    req.ids = [];
    req.id = null;
    if (req.kind !== 'request') {
      clearTimeout(req.timer);
      req.timer = null;
    }
  }

  /** The pending requests, each once, in the order they were first sent. */
  _pendingRequests() {
    const seen = new Set();
    const list = [];
    for (const req of this._pending.values()) {
      if (seen.has(req)) continue;
      seen.add(req);
      list.push(req);
    }
    return list.sort((a, b) => a.ids[0] - b.ids[0]);
  }

  _timedOut(req, conn) {
    const error = new SwitchboardError(`no reply to ${req.body.type} within ${this.options.timeout} ms`, 'timeout');
    switch (req.kind) {
      case 'connect':
        this._forget(req);
        // The transport is not answering: start over (on the next rung).
        this._abort(conn, { code: CLIENT_CODES.TIMEOUT, reason: 'connect timeout' }, true);
        break;
      case 'subscribe':
        // The connection is not answering: start over. The request stays
        // pending: a resumed session may still answer it.
        clearTimeout(req.timer);
        req.timer = null;
        this._abort(conn, { code: CLIENT_CODES.TIMEOUT, reason: 'subscribe timeout' });
        break;
      case 'publish': {
        this._forget(req);
        const at = this._outbox.indexOf(req);
        if (at >= 0) this._outbox.splice(at, 1);
        error.message += ' (it may or may not have been published)';
        req.reject(error);
        break;
      }
      case 'request': {
        this._forget(req);
        const at = this._waiting.indexOf(req);
        if (at >= 0) this._waiting.splice(at, 1);
        req.reject(error);
        break;
      }
      default:
        this._forget(req);
        req.reject(error);
    }
  }

  _onFrame(conn, frame, seq) {
    if (conn !== this._conn || frame === null || typeof frame !== 'object') return;
    conn.lastSeen = now();
    if (!conn.connected) {
      // Before `connected` only the reply to connect counts (unnumbered
      // when it is an error or a resume; the fresh `connected` is seq 1).
      if (frame.id != null && conn.connectReq && this._pending.get(frame.id) === conn.connectReq) {
        this._reply(frame);
      } else if (frame.type === 'disconnect') {
        conn.disconnect = { code: frame.code, reason: frame.reason || '', reconnect: frame.reconnect !== false };
      }
      return;
    }
    if (frame.type === 'ping' && frame.id == null) {
      conn.transport.send([{ type: 'pong' }]);
      return;
    }
    // A numbered frame: keep count (or take the transport's number), and
    // skip one already processed.
    const sess = this._sess;
    if (sess) {
      if (typeof seq === 'number') {
        if (seq <= sess.seq) return;
        sess.seq = seq;
      } else if (seq === undefined) {
        sess.seq++;
      }
    }
    if (frame.id != null) {
      this._reply(frame);
      return;
    }
    switch (frame.type) {
      case 'publication': {
        const sub = this._subs.get(frame.channel);
        if (sub && sub._state === 'subscribed') sub._deliver(frame);
        break;
      }
      case 'join':
      case 'leave': {
        const sub = this._subs.get(frame.channel);
        if (sub && sub._state === 'subscribed') sub.emit(frame.type, { channel: frame.channel, info: frame.info });
        break;
      }
      case 'disconnect':
        conn.disconnect = {
          code: frame.code,
          reason: frame.reason || '',
          reconnect: frame.reconnect !== false,
        };
        // A server disconnect ends the session.
        this._sess = null;
        break;
      default:
      // Unknown pushes are ignored (forward compatibility).
    }
  }

  _reply(frame) {
    const req = this._pending.get(frame.id);
    if (!req) return;
    this._forget(req);
    if (frame.type === 'error') {
      req.reject(new SwitchboardError(frame.message || `error ${frame.code}`, frame.code));
    } else {
      req.resolve(frame);
    }
  }

  /** The server took these commands (SSE, long-polling): their replies come
   * in the session, so a resume need not send them again. */
  _onAccepted(conn, frames) {
    for (const frame of frames) {
      if (frame.id == null) continue;
      const req = this._pending.get(frame.id);
      if (req && req.id === frame.id) req.accepted = true;
    }
  }

  _onConnected(conn, reply) {
    if (conn !== this._conn) return;
    const resumed = conn.resuming && reply.resumed === true;
    const before = this._state === 'connected' ? this._info.transport : null;
    conn.connected = true;
    conn.connectReq = null;
    this._attempt = 0;
    this._roundStart = conn.index;
    const name = conn.transport.name || this._ladder[conn.index].name;
    if (this._ladder.length > 1) rememberTransport(this._memoryKey, this._ladder[conn.index].name);
    if (!resumed) {
      // A new session: whatever the old one had in flight is void.
      this._resetRequests();
      this._sess = typeof reply.session === 'string' && reply.session ? { id: reply.session, seq: 1 } : null;
    }
    this._who = {
      client: reply.client ?? (resumed ? this._who.client : null),
      user: reply.user ?? (resumed ? this._who.user : null),
    };
    this._info = { client: this._who.client, user: this._who.user, transport: name };
    if (typeof reply.ping === 'number') this._pingMs = reply.ping > 0 ? reply.ping * 1000 : 0;
    else if (!resumed) this._pingMs = 0;
    conn.pingMs = this._pingMs;
    this._armWatchdog(conn);
    // A resume without a token (long-polling) leaves the session's token as
    // it was: if a newer one came meanwhile, refresh with it below.
    const tokenKept = resumed && reply._local === true;
    if (!tokenKept) this._sessToken = conn.sentToken;
    const expires =
      typeof reply.expires === 'number' ? reply.expires : resumed ? tokenExpiry(this._sessToken || this._token) : undefined;
    this._scheduleRefresh(conn, expires);

    // In this order on the wire (the server handles a session's commands in
    // order). Resumed: what may not have reached the server (a reply that
    // comes anyway settles it; a repeat is answered but changes nothing:
    // publishes carry idempotency keys), what changed meanwhile, then the
    // reads that waited and the publishes not sent yet. Fresh: resubscribe,
    // then the reads that waited, then the publishes.
    const frames = [];
    if (resumed) {
      for (const req of this._pendingRequests()) {
        if (req.kind === 'connect' || req.accepted) continue;
        if (req.kind === 'request') {
          const at = this._waiting.indexOf(req);
          if (at >= 0) this._waiting.splice(at, 1);
        }
        frames.push(this._wire(req, conn));
      }
      for (const channel of this._unsubscribeOnResume) frames.push(this._unsubscribeFrame(channel, conn));
      this._unsubscribeOnResume.clear();
      for (const sub of this._subs.values()) {
        if (sub._state === 'subscribing' && !sub._req) frames.push(this._subscribeFrame(sub, conn));
      }
    } else {
      for (const sub of this._subs.values()) frames.push(this._subscribeFrame(sub, conn));
    }
    for (const req of this._waiting.splice(0)) frames.push(this._wire(req, conn));
    for (const req of this._outbox) if (req.id == null) frames.push(this._wire(req, conn));
    if (tokenKept && this._token && this._token !== this._sessToken) frames.push(this._refreshFrame(this._token));
    if (frames.length) conn.transport.send(frames);

    if (conn.upgrade && !conn.fallback) this._upgradeBackoff.delete(conn.index);
    this._setState(
      { state: 'connected', transport: name, client: this._who.client, user: this._who.user, resumed },
      conn.upgrade && (before !== name || !resumed),
    );
    this._scheduleUpgrade(conn);
  }

  _onConnectError(conn, error) {
    if (conn !== this._conn) return;
    const code = error.code;
    if (conn.resuming && (code === SESSION_NOT_FOUND || code === BAD_CURSOR || code === 103)) {
      // The session is gone (or not ours): connect afresh on the same
      // transport and resubscribe with `since`.
      this._sess = null;
      this._resetRequests();
      const frame = this._connectFrame(conn);
      if (typeof conn.transport.reconnect === 'function') {
        try {
          conn.transport.reconnect(frame);
          return;
        } catch {
          // fall through: a new transport
        }
      }
      this._abort(conn, { code, reason: error.message, reconnect: true });
      this._openSoon();
      return;
    }
    this._emitError(error);
    // The server follows a failed connect with a disconnect; act on the
    // reply rather than wait for it.
    const d =
      code === 109
        ? { code: TOKEN_EXPIRED, reason: error.message, reconnect: false }
        : code === 101
          ? { code: INVALID_TOKEN, reason: error.message, reconnect: false }
          : { code: typeof code === 'number' ? code : CLIENT_CODES.TIMEOUT, reason: error.message, reconnect: true };
    this._abort(conn, d);
  }

  _onClose(conn, event) {
    if (conn !== this._conn) return;
    const code = event.code;
    const d = conn.disconnect || {
      code,
      reason: event.reason || (conn.connected ? 'connection closed' : 'connection failed'),
      reconnect: !(code >= 3500 && code <= 3999),
    };
    // A transport that ends before `connected` did not work: next rung.
    this._lost(conn, d, !conn.connected && !conn.disconnect);
  }

  /** SSE or long-polling learned that the session is gone. */
  _onSessionLost(conn, event) {
    if (conn !== this._conn) return;
    this._sess = null;
    this._lost(conn, { code: event.code || SESSION_NOT_FOUND, reason: event.reason || 'session not found', reconnect: true });
  }

  /** Closes `conn` from this side and handles it as lost with `d`. */
  _abort(conn, d, advance = false) {
    if (conn !== this._conn) return;
    conn.transport.close(false);
    if (d.reconnect === undefined) d.reconnect = true;
    this._lost(conn, d, advance);
  }

  /** The connection is gone: keep the session's requests for a resume (or
   * requeue them), then reconnect (the next rung at once when this one
   * failed to open) or stop. */
  _lost(conn, d, advance = false) {
    this._teardown(conn);
    if (!this._want) return;
    if (d.code === TOKEN_EXPIRED && typeof this.options.getToken === 'function') {
      this._token = null; // fetch a new one, then reconnect
    } else if (!d.reconnect) {
      this._terminate(d);
      return;
    }
    // A move up that failed goes straight back down, the state staying
    // 'connected' (if going back fails too, it is a drop like any other).
    const movedUp = conn.upgrade && !conn.fallback && !conn.connected;
    if (movedUp) this._upgradeFailed(conn.index);
    const next = advance && this._advanceTransport();
    if (!(movedUp && next && this._state === 'connected')) {
      this._setState({ state: 'connecting', code: d.code, reason: d.reason });
    }
    if (next) {
      this._quietNext = this._state === 'connected';
      this._openSoon();
    } else {
      this._quietNext = false;
      this._scheduleReconnect();
    }
  }

  _teardown(conn, deliberate = false) {
    if (this._conn !== conn) return;
    this._conn = null;
    try {
      conn.transport.close(deliberate);
    } catch {
      // closed already
    }
    clearTimeout(this._watchdogTimer);
    clearTimeout(this._refreshTimer);
    clearTimeout(this._upgradeTimer);
    this._watchdogTimer = this._refreshTimer = this._upgradeTimer = null;
    if (conn.connectReq) {
      this._forget(conn.connectReq);
      conn.connectReq = null;
    }
    // Requests in flight stay pending (a resume may answer them; their
    // command timeouts restart when they are sent again). Reads keep their
    // own deadline.
    for (const req of this._pending.values()) {
      if (req.kind === 'request') continue;
      clearTimeout(req.timer);
      req.timer = null;
    }
    if (!this._sess) this._resetRequests();
  }

  /** Back to "nothing sent" for a new session: reads wait again, publishes
   * will be sent again (same idempotency key), subscriptions resubscribe. */
  _resetRequests() {
    const reads = [];
    for (const req of this._pendingRequests()) {
      if (req.kind === 'connect' && this._conn && req === this._conn.connectReq) continue;
      this._forget(req);
      if (req.kind === 'request') reads.push(req);
    }
    this._waiting = reads.concat(this._waiting);
    this._unsubscribeOnResume.clear();
    for (const sub of this._subs.values()) {
      sub._req = null;
      sub._sent = false;
      if (sub._state === 'subscribed') sub._state = 'subscribing';
    }
  }

  /** Stops for good (until connect()): state disconnected with `d`. */
  _terminate(d, deliberate = false) {
    this._want = false;
    this._seq++;
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    this._sess = null;
    if (this._conn) this._teardown(this._conn, deliberate);
    this._resetRequests();
    this._unbindGlobals();
    const waiting = this._waiting.splice(0);
    for (const req of waiting) {
      clearTimeout(req.timer);
      req.reject(new SwitchboardError(`disconnected: ${d.reason}`, 'disconnected', { disconnect: d.code }));
    }
    this._setState({ state: 'disconnected', reason: d.reason, code: d.code });
  }

  _scheduleReconnect() {
    if (this._reconnectTimer || !this._want) return;
    const delay = backoff(this._attempt++, this.options.backoff);
    this._reconnectTimer = setTimeout(() => {
      this._reconnectTimer = null;
      this._open();
    }, delay);
  }

  /** Reconnects at once if waiting for the next attempt (online, visible). */
  _reconnectNow() {
    if (!this._want || this._conn || this._opening || !this._reconnectTimer) return;
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    this._attempt = 0;
    this._open();
  }

  _armWatchdog(conn) {
    clearTimeout(this._watchdogTimer);
    this._watchdogTimer = null;
    const t = conn.transport;
    const idle = typeof t.idleLimit === 'function' ? t.idleLimit(conn.pingMs) : conn.pingMs;
    if (!idle) return;
    const limit = idle + this.options.pingMargin;
    conn.lastSeen = now();
    const check = () => {
      if (conn !== this._conn) return;
      const quiet = now() - conn.lastSeen;
      if (quiet >= limit) {
        this._abort(conn, {
          code: CLIENT_CODES.HEARTBEAT_TIMEOUT,
          reason: `nothing from the server for ${Math.round(quiet)} ms`,
          reconnect: true,
        });
      } else {
        this._watchdogTimer = setTimeout(check, limit - quiet + 1);
      }
    };
    this._watchdogTimer = setTimeout(check, limit);
  }

  _scheduleRefresh(conn, expires) {
    clearTimeout(this._refreshTimer);
    this._refreshTimer = null;
    conn.expires = typeof expires === 'number' ? expires : null;
    if (conn.expires == null || typeof this.options.getToken !== 'function') return;
    const left = conn.expires * 1000 - Date.now();
    const delay = Math.max(0, left - Math.min(this.options.refreshMargin, left / 2));
    this._refreshTimer = setTimeout(() => this._refresh(conn), delay);
  }

  async _refresh(conn) {
    this._refreshTimer = null;
    if (conn !== this._conn) return;
    let token;
    try {
      token = await this.options.getToken();
      if (typeof token !== 'string' || token === '') throw new Error('getToken returned no token');
    } catch (e) {
      if (conn !== this._conn) return;
      this._emitError(new SwitchboardError(`token refresh failed: ${(e && e.message) || e}`, 'token', { cause: e }));
      this._retryRefresh(conn);
      return;
    }
    this._token = token; // also the one to reconnect (and resume) with
    if (conn !== this._conn || !this._ready()) return; // a resume carries it
    conn.transport.send([this._refreshFrame(token)]);
  }

  _refreshFrame(token) {
    const conn = this._conn;
    return this._wire(
      {
        kind: 'refresh',
        body: { type: 'refresh', token },
        resolve: (reply) => {
          this._sessToken = token;
          if (this._conn && this._conn.connected) this._scheduleRefresh(this._conn, reply.expires);
        },
        reject: (error) => {
          const current = this._conn;
          if (!current || !current.connected || error.code === 'timeout') return;
          this._emitError(error);
          this._retryRefresh(current);
        },
      },
      conn,
    );
  }

  /** After a failed refresh: try again at half the time left, if any is. */
  _retryRefresh(conn) {
    if (conn.expires == null) return;
    const left = conn.expires * 1000 - Date.now();
    if (left < 1000) return; // the server will disconnect with 3501; reconnect then
    this._refreshTimer = setTimeout(() => this._refresh(conn), left / 2);
  }

  // ---- moving up the ladder ---------------------------------------------

  _scheduleUpgrade(conn) {
    clearTimeout(this._upgradeTimer);
    this._upgradeTimer = null;
    if (conn.index === 0 || this._ladder.length <= 1 || !(this.options.upgradeInterval > 0)) return;
    this._upgradeTimer = setTimeout(() => {
      this._upgradeTimer = null;
      this._tryUpgrade();
    }, this.options.upgradeInterval);
  }

  /** On a lower rung: try the better transports, best first. One that opens
   * takes the session over from the exact seq (the lower one stops
   * delivering first), so nothing is lost or repeated. */
  async _tryUpgrade() {
    const conn = this._conn;
    if (!conn || !this._ready() || this._upgrading || conn.index === 0 || !this._sess || isOffline()) return;
    this._upgrading = true;
    clearTimeout(this._upgradeTimer);
    this._upgradeTimer = null;
    try {
      for (let i = 0; i < conn.index; i++) {
        if (this._conn !== conn || !this._ready()) return;
        const held = this._upgradeBackoff.get(i);
        if (held && now() < held.next) continue;
        let transport;
        try {
          transport = new this._ladder[i].Type(this.url, this.options);
        } catch {
          continue;
        }
        if (typeof transport.probe === 'function') {
          let ok = false;
          try {
            ok = await transport.probe(this.options.timeout);
          } catch {
            ok = false;
          }
          if (!ok || this._conn !== conn || !this._ready()) {
            transport.close(false);
            if (ok) return;
            this._upgradeFailed(i);
            continue;
          }
        }
        await this._switchTo(conn, transport, i);
        return;
      }
    } finally {
      this._upgrading = false;
      if (this._conn === conn && this._ready() && !this._upgradeTimer) this._scheduleUpgrade(conn);
    }
  }

  async _switchTo(conn, transport, index) {
    // Hold new commands, let the lower transport finish sending (so they
    // arrive in order), then stop its delivery and resume from our seq.
    conn.switching = true;
    if (typeof conn.transport.drain === 'function') {
      let timer;
      await Promise.race([
        conn.transport.drain(),
        new Promise((r) => (timer = setTimeout(r, this.options.timeout))),
      ]);
      clearTimeout(timer);
    }
    if (this._conn !== conn || !this._sess) {
      conn.switching = false;
      transport.close(false);
      // A refresh held back for the move goes now.
      if (this._conn === conn && conn.connected && this._token && this._token !== this._sessToken) {
        conn.transport.send([this._refreshFrame(this._token)]);
      }
      return;
    }
    this._teardown(conn);
    this._transportIndex = this._roundStart = index;
    this._start(transport, index, 'up');
  }

  /** A move up to rung `index` failed: wait longer before the next try
   * there (upgradeInterval × 2^failures, at most an hour). */
  _upgradeFailed(index) {
    const held = this._upgradeBackoff.get(index) || { failures: 0, next: 0 };
    held.failures++;
    const wait = Math.min(this.options.upgradeInterval * 2 ** (held.failures - 1), 3600000);
    held.next = now() + wait;
    this._upgradeBackoff.set(index, held);
  }

  // ---- commands ----------------------------------------------------------

  _subscribeFrame(sub, conn) {
    const body = { type: 'subscribe', channel: sub.channel };
    if (sub._position) body.since = { offset: sub._position.offset, epoch: sub._position.epoch };
    if (sub._token) body.token = sub._token;
    sub._state = 'subscribing';
    const req = {
      kind: 'subscribe',
      body,
      resolve: (reply) => {
        if (sub._req === req) sub._req = null;
        sub._onSubscribed(reply);
      },
      reject: (error) => {
        if (sub._req === req) sub._req = null;
        if (error.code !== 'timeout') sub._onSubscribeError(error);
      },
    };
    sub._req = req;
    sub._sent = true; // in this session
    return this._wire(req, conn);
  }

  _unsubscribeFrame(channel, conn) {
    return this._wire({ kind: 'unsubscribe', body: { type: 'unsubscribe', channel }, resolve() {}, reject() {} }, conn);
  }

  _unsubscribe(sub) {
    if (this._subs.get(sub.channel) !== sub) return;
    this._subs.delete(sub.channel);
    if (sub._req) {
      // Its reply, if any, no longer matters.
      this._forget(sub._req);
      sub._req = null;
    }
    if (!sub._sent) return; // the server never heard of it
    if (this._ready()) {
      this._conn.transport.send([this._unsubscribeFrame(sub.channel, this._conn)]);
    } else if (this._sess) {
      // The session may still hold it: drop it when resumed.
      this._unsubscribeOnResume.add(sub.channel);
    }
  }

  _publish(channel, data) {
    return new Promise((resolve, reject) => {
      let ok = data !== undefined;
      try {
        ok = ok && JSON.stringify(data) !== undefined;
      } catch {
        ok = false;
      }
      if (!ok) {
        reject(new SwitchboardError('publish: data must be a JSON value', 'bad_request'));
        return;
      }
      const req = {
        kind: 'publish',
        body: { type: 'publish', channel, data, idempotency_key: idempotencyKey() },
        id: null,
        timer: null,
        resolve: (reply) => {
          const at = this._outbox.indexOf(req);
          if (at >= 0) this._outbox.splice(at, 1);
          const position = reply.position || {};
          resolve({ offset: position.offset, epoch: position.epoch });
        },
        reject: (error) => {
          const at = this._outbox.indexOf(req);
          if (at >= 0) this._outbox.splice(at, 1);
          error.channel = channel;
          reject(error);
        },
      };
      this._outbox.push(req);
      if (this._ready()) this._conn.transport.send([this._wire(req, this._conn)]);
    });
  }

  /** A read (presence, history): sent now or once connected, within `timeout`. */
  _request(body) {
    return new Promise((resolve, reject) => {
      if (this._state === 'disconnected' && this._touched && !this._want) {
        reject(new SwitchboardError('not connected (call connect())', 'disconnected'));
        return;
      }
      const req = { kind: 'request', body, id: null, timer: null, resolve, reject };
      req.timer = setTimeout(() => this._timedOut(req, this._conn), this.options.timeout);
      const settle = (fn) => (value) => {
        clearTimeout(req.timer);
        fn(value);
      };
      req.resolve = settle(resolve);
      req.reject = settle((error) => {
        if (body.channel) error.channel = body.channel;
        reject(error);
      });
      if (this._ready()) this._conn.transport.send([this._wire(req, this._conn)]);
      else this._waiting.push(req);
    });
  }

  _bindGlobals() {
    if (this._globals) return;
    const g = globalThis;
    const onOnline = () => this._reconnectNow();
    const onVisibility = () => {
      if (g.document && !isHidden()) {
        this._reconnectNow();
        this._tryUpgrade();
      }
    };
    if (typeof g.addEventListener === 'function') g.addEventListener('online', onOnline);
    if (g.document && typeof g.document.addEventListener === 'function') {
      g.document.addEventListener('visibilitychange', onVisibility);
    }
    this._globals = { onOnline, onVisibility };
  }

  _unbindGlobals() {
    const bound = this._globals;
    if (!bound) return;
    this._globals = null;
    const g = globalThis;
    if (typeof g.removeEventListener === 'function') g.removeEventListener('online', bound.onOnline);
    if (g.document && typeof g.document.removeEventListener === 'function') {
      g.document.removeEventListener('visibilitychange', bound.onVisibility);
    }
  }
}

/** Transports by name. */
Switchboard.transports = {
  websocket: WebSocketTransport,
  sse: SseTransport,
  'long-polling': LongPollTransport,
};

export default Switchboard;
