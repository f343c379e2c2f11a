// Switchboard JavaScript client.
//
// An ES module with no runtime dependencies, for browsers and Node 20+. It
// speaks the native protocol (docs/protocol.md): one JSON object per frame,
// commands with ids and replies, pushes without ids.
//
// What the client does on its own:
// - reconnects with exponential backoff and full jitter (capped), except
//   after a disconnect that says `reconnect: false`; after 3501 (token
//   expired) it fetches a new token with `getToken` and reconnects;
// - resubscribes every subscription with `since` = the last position it
//   delivered, delivers the recovered publications in order and never
//   delivers an offset twice (per epoch);
// - keeps publishes made while disconnected (and those whose reply was lost)
//   in order and sends them once after the next connect and resubscribe, each
//   with its own idempotency key so a resend publishes once;
// - answers server pings, and closes and reconnects a connection from which
//   nothing arrived for `ping` + `pingMargin` (dead connections that never
//   closed);
// - refreshes the token with `getToken` before it expires (`refresh`);
// - honours `navigator.onLine`, the `online` event and page visibility when
//   those globals exist.
//
// Transports. The client talks to a transport through a small interface, so
// the fallback transports (SSE, long-polling) plug in beside the WebSocket:
//
//   class Transport {
//     constructor(baseUrl, options)   // options: the Switchboard options
//     name                            // 'websocket', 'sse', 'long-polling'
//     open(connect, { onFrame, onClose })
//         // Deliver the `connect` command (an object with id, type, token)
//         // the way this transport does it (WebSocket: the first frame once
//         // open), then call onFrame(object) for every frame received,
//         // replies and pushes alike (the `connected` reply too, with the
//         // connect command's id), and onClose({ code, reason }) once when
//         // the transport ends or fails to open (never after close()).
//     send(frames)                    // an array of command objects, in order
//     close()                         // end it; no more callbacks after this
//   }
//
// `options.transports` lists them in order of preference (names from
// `Switchboard.transports`, or classes); a transport that fails before
// `connected` makes the next attempt use the next one.

/** An error from the server (numeric `code`, as in docs/protocol.md) or from
 * the client (string `code`: 'timeout', 'disconnected', 'token', 'callback',
 * 'bad_request'). */
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

const DEFAULT_OPTIONS = {
  backoff: { min: 500, max: 20000 },
  timeout: 10000,
  pingMargin: 10000,
  refreshMargin: 10000,
  autoConnect: true,
  transports: ['websocket'],
};

const now = () =>
  globalThis.performance && typeof globalThis.performance.now === 'function'
    ? globalThis.performance.now()
    : Date.now();

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

/** The WebSocket URL of a server given by its http(s) base URL. */
export function websocketUrl(base) {
  const url = new URL(base, globalThis.location ? globalThis.location.href : undefined);
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

/** The WebSocket transport: `GET /connection/websocket`, one frame per message. */
export class WebSocketTransport {
  constructor(baseUrl, options = {}) {
    this.name = 'websocket';
    this.url = websocketUrl(baseUrl);
    this._WebSocket = options.WebSocket || globalThis.WebSocket;
    this._ws = null;
    this._events = null;
  }

  open(connect, events) {
    this._events = events;
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
      this._failLater(CLIENT_CODES.TRANSPORT_UNAVAILABLE, String((e && e.message) || e));
      return;
    }
    this._ws = ws;
    // Keep an error listener at all times: the ws package throws an 'error'
    // event that has none. The close event that follows reports the end.
    ws.onerror = () => {};
    ws.onopen = () => {
      if (this._ws === ws) ws.send(JSON.stringify(connect));
    };
    ws.onmessage = (event) => {
      if (this._ws !== ws || typeof event.data !== 'string') return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      this._events.onFrame(frame);
    };
    ws.onclose = (event) => {
      if (this._ws !== ws) return;
      const events = this._events;
      this._detach();
      events.onClose({ code: event.code, reason: event.reason || '' });
    };
  }

  send(frames) {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1) return false;
    for (const frame of frames) ws.send(JSON.stringify(frame));
    return true;
  }

  close() {
    const ws = this._detach();
    if (!ws) return;
    try {
      // The ws package's terminate() drops a dead connection at once rather
      // than waiting for a close handshake that will never come.
      if (typeof ws.terminate === 'function') ws.terminate();
      else ws.close(1000);
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
    setTimeout(() => events.onClose({ code, reason }), 0);
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

/** The client: one connection, many subscriptions. */
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
    this._transportTypes = this.options.transports.map((t) => {
      const type = typeof t === 'string' ? Switchboard.transports[t] : t;
      if (typeof type !== 'function') throw new TypeError(`Switchboard: unknown transport ${t}`);
      return type;
    });
    this._transportIndex = 0;

    this._state = 'disconnected';
    this._info = { client: null, user: null, transport: null };
    this._want = false; // connect() was called and no terminal disconnect since
    this._touched = false; // connect() or disconnect() was called
    this._conn = null; // the current connection (attempt)
    this._opening = false; // waiting for getToken before opening a transport
    this._seq = 0; // bumped to make stale async steps give up
    this._attempt = 0; // reconnect attempts since the last `connected`
    this._reconnectTimer = null;
    this._watchdogTimer = null;
    this._refreshTimer = null;
    this._nextId = 1;
    this._pending = new Map(); // command id -> request, on the current connection
    this._waiting = []; // requests waiting for a connection
    this._outbox = []; // publishes not yet acknowledged, in order
    this._subs = new Map(); // channel -> Subscription
    this._token = typeof options.token === 'string' ? options.token : null;
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

  /** The transport in use ('websocket'), when connected. */
  get transport() {
    return this._info.transport;
  }

  /** Starts connecting (and reconnecting) until disconnect(). */
  connect() {
    this._touched = true;
    if (this._want) return;
    this._want = true;
    this._attempt = 0;
    this._bindGlobals();
    this._setState({ state: 'connecting' });
    this._open();
  }

  /** Closes the connection and stops reconnecting. Subscriptions and
   * unsent publishes are kept for the next connect(). */
  disconnect() {
    this._touched = true;
    this._terminate({ code: CLIENT_CODES.DISCONNECT_CALLED, reason: 'disconnect called' });
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
    return !!this._conn && this._conn.connected;
  }

  _setState(event) {
    if (event.state === this._state) return;
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

    const Type = this._transportTypes[this._transportIndex % this._transportTypes.length];
    let transport;
    try {
      transport = new Type(this.url, this.options);
    } catch (e) {
      this._emitError(new SwitchboardError(`transport: ${(e && e.message) || e}`, 'transport', { cause: e }));
      this._scheduleReconnect();
      return;
    }
    const conn = { transport, connected: false, disconnect: null, pingMs: 0, lastSeen: 0, expires: null };
    this._conn = conn;
    const frame = this._wire(
      {
        kind: 'connect',
        body: { type: 'connect', token },
        resolve: (reply) => this._onConnected(conn, reply),
        reject: (error) => this._onConnectError(conn, error),
      },
      conn,
    );
    try {
      transport.open(frame, {
        onFrame: (f) => this._onFrame(conn, f),
        onClose: (e) => this._onClose(conn, e),
      });
    } catch (e) {
      this._abort(conn, { code: CLIENT_CODES.TRANSPORT_UNAVAILABLE, reason: String((e && e.message) || e) });
    }
  }

  /** Gives `req` an id, registers it as pending and returns its frame.
   * Requests other than reads get a timeout here (reads have one already). */
  _wire(req, conn) {
    const id = this._nextId++;
    req.id = id;
    this._pending.set(id, req);
    if (req.kind !== 'request') {
      clearTimeout(req.timer);
      req.timer = setTimeout(() => this._timedOut(req, conn), this.options.timeout);
    }
    return { id, ...req.body };
  }

  _timedOut(req, conn) {
    if (req.id != null) this._pending.delete(req.id);
    req.id = null;
    req.timer = null;
    const error = new SwitchboardError(`no reply to ${req.body.type} within ${this.options.timeout} ms`, 'timeout');
    switch (req.kind) {
      case 'connect':
      case 'subscribe':
        // The connection is not answering: start over.
        this._abort(conn, { code: CLIENT_CODES.TIMEOUT, reason: `${req.body.type} timeout` });
        break;
      case 'publish': {
        const at = this._outbox.indexOf(req);
        if (at >= 0) this._outbox.splice(at, 1);
        error.message += ' (it may or may not have been published)';
        req.reject(error);
        break;
      }
      case 'request': {
        const at = this._waiting.indexOf(req);
        if (at >= 0) this._waiting.splice(at, 1);
        req.reject(error);
        break;
      }
      default:
        req.reject(error);
    }
  }

  _onFrame(conn, frame) {
    if (conn !== this._conn || frame === null || typeof frame !== 'object') return;
    conn.lastSeen = now();
    if (frame.id != null) {
      const req = this._pending.get(frame.id);
      if (!req) return;
      this._pending.delete(frame.id);
      req.id = null;
      if (req.kind !== 'request') {
        clearTimeout(req.timer);
        req.timer = null;
      }
      if (frame.type === 'error') {
        req.reject(new SwitchboardError(frame.message || `error ${frame.code}`, frame.code));
      } else {
        req.resolve(frame);
      }
      return;
    }
    switch (frame.type) {
      case 'ping':
        conn.transport.send([{ type: 'pong' }]);
        break;
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
        break;
      default:
      // Unknown pushes are ignored (forward compatibility).
    }
  }

  _onConnected(conn, reply) {
    if (conn !== this._conn) return;
    conn.connected = true;
    this._attempt = 0;
    this._info = { client: reply.client, user: reply.user, transport: conn.transport.name };
    conn.pingMs = typeof reply.ping === 'number' && reply.ping > 0 ? reply.ping * 1000 : 0;
    this._armWatchdog(conn);
    this._scheduleRefresh(conn, reply.expires);

    // In this order on the wire (the server handles a connection's commands
    // in order): resubscribe, then the reads that waited, then the publishes.
    const frames = [];
    for (const sub of this._subs.values()) frames.push(this._subscribeFrame(sub, conn));
    for (const req of this._waiting.splice(0)) frames.push(this._wire(req, conn));
    for (const req of this._outbox) if (req.id == null) frames.push(this._wire(req, conn));
    if (frames.length) conn.transport.send(frames);

    this._setState({ state: 'connected', transport: conn.transport.name, client: reply.client, user: reply.user });
  }

  _onConnectError(conn, error) {
    if (conn !== this._conn) return;
    this._emitError(error);
    // The server follows a failed connect with a disconnect; act on the
    // reply rather than wait for it.
    const d =
      error.code === 109
        ? { code: TOKEN_EXPIRED, reason: error.message, reconnect: false }
        : error.code === 101
          ? { code: INVALID_TOKEN, reason: error.message, reconnect: false }
          : { code: typeof error.code === 'number' ? error.code : CLIENT_CODES.TIMEOUT, reason: error.message, reconnect: true };
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
    if (!conn.connected && this._transportTypes.length > 1) this._transportIndex++;
    this._lost(conn, d);
  }

  /** Closes `conn` from this side and handles it as lost with `d`. */
  _abort(conn, d) {
    if (conn !== this._conn) return;
    conn.transport.close();
    if (d.reconnect === undefined) d.reconnect = true;
    this._lost(conn, d);
  }

  /** The connection is gone: requeue what was in flight, then reconnect or stop. */
  _lost(conn, d) {
    this._teardown(conn);
    if (!this._want) return;
    if (d.code === TOKEN_EXPIRED && typeof this.options.getToken === 'function') {
      this._token = null; // fetch a new one, then reconnect
    } else if (!d.reconnect) {
      this._terminate(d);
      return;
    }
    this._setState({ state: 'connecting', code: d.code, reason: d.reason });
    this._scheduleReconnect();
  }

  _teardown(conn) {
    if (this._conn !== conn) return;
    this._conn = null;
    conn.transport.close();
    clearTimeout(this._watchdogTimer);
    clearTimeout(this._refreshTimer);
    this._watchdogTimer = this._refreshTimer = null;
    const requeued = [];
    for (const req of this._pending.values()) {
      req.id = null;
      if (req.kind === 'request') {
        requeued.push(req); // its own deadline keeps running
        continue;
      }
      clearTimeout(req.timer);
      req.timer = null;
      // A publish stays in the outbox and is sent again (same idempotency key).
    }
    this._pending.clear();
    this._waiting = requeued.concat(this._waiting);
    for (const sub of this._subs.values()) if (sub._state === 'subscribed') sub._state = 'subscribing';
  }

  /** Stops for good (until connect()): state disconnected with `d`. */
  _terminate(d) {
    this._want = false;
    this._seq++;
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    if (this._conn) this._teardown(this._conn);
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
    if (!conn.pingMs) return;
    const limit = conn.pingMs + this.options.pingMargin;
    conn.lastSeen = now();
    const check = () => {
      if (conn !== this._conn) return;
      const idle = now() - conn.lastSeen;
      if (idle >= limit) {
        this._abort(conn, {
          code: CLIENT_CODES.HEARTBEAT_TIMEOUT,
          reason: `nothing from the server for ${Math.round(idle)} ms`,
          reconnect: true,
        });
      } else {
        this._watchdogTimer = setTimeout(check, limit - idle + 1);
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
    this._token = token; // also the one to reconnect with
    if (conn !== this._conn) return;
    const frame = this._wire(
      {
        kind: 'refresh',
        body: { type: 'refresh', token },
        resolve: (reply) => {
          if (conn === this._conn) this._scheduleRefresh(conn, reply.expires);
        },
        reject: (error) => {
          if (conn !== this._conn || error.code === 'timeout') return;
          this._emitError(error);
          this._retryRefresh(conn);
        },
      },
      conn,
    );
    conn.transport.send([frame]);
  }

  /** After a failed refresh: try again at half the time left, if any is. */
  _retryRefresh(conn) {
    if (conn.expires == null) return;
    const left = conn.expires * 1000 - Date.now();
    if (left < 1000) return; // the server will disconnect with 3501; reconnect then
    this._refreshTimer = setTimeout(() => this._refresh(conn), left / 2);
  }

  _subscribeFrame(sub, conn) {
    const body = { type: 'subscribe', channel: sub.channel };
    if (sub._position) body.since = { offset: sub._position.offset, epoch: sub._position.epoch };
    if (sub._token) body.token = sub._token;
    sub._state = 'subscribing';
    return this._wire(
      {
        kind: 'subscribe',
        body,
        resolve: (reply) => sub._onSubscribed(reply),
        reject: (error) => {
          if (error.code !== 'timeout') sub._onSubscribeError(error);
        },
      },
      conn,
    );
  }

  _unsubscribe(sub) {
    if (this._subs.get(sub.channel) !== sub) return;
    this._subs.delete(sub.channel);
    if (this._ready()) {
      const frame = this._wire(
        { kind: 'unsubscribe', body: { type: 'unsubscribe', channel: sub.channel }, resolve() {}, reject() {} },
        this._conn,
      );
      this._conn.transport.send([frame]);
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
      if (g.document && !g.document.hidden) this._reconnectNow();
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

/** Transports by name (SSE and long-polling join here). */
Switchboard.transports = { websocket: WebSocketTransport };

export default Switchboard;
