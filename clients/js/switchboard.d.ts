// TypeScript declarations for the Switchboard JavaScript client
// (switchboard.js). Protocol: docs/protocol.md (sessions and the three
// transports: "Sessions and transports").

/** A place in a channel's stream. */
export interface StreamPosition {
  offset: number;
  epoch: string;
}

/** Who published, or who joined or left: the connection token's `sub`, the
 * connection's client id and the token's public `info`. */
export interface ClientInfo {
  user: string;
  client: string;
  data?: unknown;
}

export interface Publication<T = unknown> {
  channel: string;
  offset: number;
  epoch: string;
  data: T;
  /** Absent for publications made through the server API. */
  info?: ClientInfo;
  /** Milliseconds since the Unix epoch when the server accepted it. */
  time: number;
}

export interface JoinLeaveEvent {
  channel: string;
  info: ClientInfo;
}

export interface SubscribedEvent {
  channel: string;
  /** True when the publications missed since the last position were all
   * delivered (resubscribe with `since`); false on a first subscribe, or
   * when the stream could not be recovered (reload state from your backend). */
  recovered: boolean;
  /** The stream's position when the subscription was made. */
  position: StreamPosition;
}

export interface UnsubscribedEvent {
  channel: string;
  /** Set when the server refused the subscription. */
  error?: SwitchboardError;
}

export type State = 'disconnected' | 'connecting' | 'connected';

/** The built-in transports, best first. */
export type TransportName = 'websocket' | 'sse' | 'long-polling';

export type StateEvent =
  /** Connecting, or reconnecting after a drop (then with its code and reason:
   * e.g. 1006, 2 heartbeat timeout, 114 the session was gone). */
  | { state: 'connecting'; code?: number; reason?: string }
  /** Connected; again (state stays 'connected') when the client moved up to
   * a better transport. `resumed`: the session was resumed (its
   * subscriptions kept, what was missed replayed), not created. */
  | { state: 'connected'; transport: TransportName | string; client: string; user: string; resumed: boolean }
  /** Stopped: disconnect() was called (code 0), or the server said not to
   * reconnect (3500–3999: the code of docs/protocol.md). */
  | { state: 'disconnected'; code: number; reason: string };

/** Client-side codes in state events. Other codes are the server's (3000–4999)
 * or the transport's close codes (1006: the connection failed or dropped). */
export declare const CLIENT_CODES: {
  readonly DISCONNECT_CALLED: 0;
  readonly TIMEOUT: 1;
  readonly HEARTBEAT_TIMEOUT: 2;
  readonly TRANSPORT_UNAVAILABLE: 3;
};

/** An error from the server (numeric `code` of docs/protocol.md, e.g. 103
 * permission denied) or from the client: 'timeout' (no reply within
 * `timeout`; a publish may or may not have happened), 'disconnected' (the
 * client stopped), 'token' (getToken failed), 'callback' (a listener threw;
 * the original is `cause`), 'bad_request' (data that is not JSON),
 * 'transport'. */
export declare class SwitchboardError extends Error {
  constructor(message: string, code: number | string, extra?: object);
  code: number | string;
  /** The channel the failed command was about, when it was about one. */
  channel?: string;
  cause?: unknown;
}

export type Listener<A extends unknown[]> = (...args: A) => void;

export declare class Emitter<Events extends Record<string, unknown[]> = Record<string, unknown[]>> {
  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof Events & string>(event: K, fn: Listener<Events[K]>): () => void;
  once<K extends keyof Events & string>(event: K, fn: Listener<Events[K]>): () => void;
  off<K extends keyof Events & string>(event: K, fn: Listener<Events[K]>): void;
  /** Calls the listeners; returns whether there were any. */
  emit<K extends keyof Events & string>(event: K, ...args: Events[K]): boolean;
}

/** The `connect` command a transport delivers: with `session` and `seq`
 * to resume a session. */
export interface ConnectCommand {
  id: number;
  type: 'connect';
  token: string;
  session?: string;
  seq?: number;
}

/** What the client gives a transport to report to. */
export interface TransportEvents {
  /** A frame received. `seq`: its number when the transport carries it (SSE
   * ids, long-poll cursors), null for an unnumbered frame, undefined to let
   * the client count (WebSocket). */
  onFrame(frame: Record<string, unknown>, seq?: number | null): void;
  /** The transport ended or failed to open (once; never after close()). */
  onClose(event: { code: number; reason: string }): void;
  /** Bytes arrived (keep-alive comments, empty polls): the connection lives. */
  onAlive?(): void;
  /** The server took these commands (their replies will come). */
  onAccepted?(frames: Record<string, unknown>[]): void;
  /** The server no longer has the session (114, 115). */
  onSessionLost?(event: { code: number; reason: string }): void;
  /** The current connection token. */
  token?(): string | null;
  /** Fetches a new token with getToken (after a 401 from the server). */
  renewToken?(): Promise<string>;
}

/** The interface a transport implements (the built-in ones and custom
 * classes passed in `transports`). */
export interface Transport {
  readonly name: string;
  /** Delivers the `connect` command the transport's way, then reports every
   * frame received (replies, the `connected` reply included with the
   * connect command's id, and pushes) and, once, the end of the transport
   * (never after close()). */
  open(connect: ConnectCommand, events: TransportEvents): void;
  /** Sends commands in order; false when they could not be sent. */
  send(frames: Record<string, unknown>[]): boolean | void;
  /** Ends it. `deliberate` (disconnect()) ends the session on the server
   * where the transport can say so (a WebSocket close frame). */
  close(deliberate?: boolean): void;
  /** A plain connect on the same transport after a refused resume (114/115). */
  reconnect?(connect: ConnectCommand): void;
  /** Whether it can open at all (used before moving a session up to it). */
  probe?(timeoutMs: number): Promise<boolean>;
  /** Resolves when nothing is being sent (before a session moves away). */
  drain?(): Promise<void>;
  /** Silence in ms that is normal for it (before pingMargin is added). */
  idleLimit?(pingMs: number): number;
}

export interface TransportConstructor {
  new (baseUrl: string, options: SwitchboardOptions): Transport;
  /** The name it is remembered by (default: the class name). */
  transportName?: string;
}

export interface WebSocketConstructorLike {
  new (url: string): {
    readonly readyState: number;
    onopen: ((event: unknown) => void) | null;
    onmessage: ((event: { data: unknown }) => void) | null;
    onclose: ((event: { code: number; reason: string }) => void) | null;
    onerror: ((event: unknown) => void) | null;
    send(data: string): void;
    close(code?: number, reason?: string): void;
  };
}

export interface SwitchboardOptions {
  /** Returns a connection token (a JWT from your backend). Called to
   * connect, again after the token expired (3501), and before `expires` to
   * refresh it. */
  getToken?: () => Promise<string> | string;
  /** A static token instead of getToken (no refresh, no renewal). */
  token?: string;
  /** The WebSocket constructor; default globalThis.WebSocket (Node 20 has
   * none: pass the `ws` package's). */
  WebSocket?: WebSocketConstructorLike | (new (url: string) => unknown);
  /** Reconnect delays in ms: full jitter, exponential, capped. Default {min: 500, max: 20000}. */
  backoff?: { min?: number; max?: number };
  /** Per-command reply timeout in ms (connect, subscribe, publish, reads). Default 10000. */
  timeout?: number;
  /** Extra silence in ms allowed beyond the server's ping period before the
   * connection counts as dead and is replaced. Default 10000. */
  pingMargin?: number;
  /** Refresh the token this many ms before it expires (at most half its
   * remaining life). Default 10000. */
  refreshMargin?: number;
  /** Connect on construction (on the next microtask). Default true. */
  autoConnect?: boolean;
  /** The transport ladder, best first: names from Switchboard.transports or
   * classes. Default ['websocket', 'sse', 'long-polling']. One that fails
   * before `connected` (refused, no answer within `timeout`, SSE buffered)
   * makes the client try the next at once; the one that worked is
   * remembered per URL (localStorage in browsers) and tried first next time.
   * A single name forces that transport. */
  transports?: Array<TransportName | string | TransportConstructor>;
  /** An SSE stream that delivers no event within this many ms counts as
   * failed (a buffering proxy). Default 5000. */
  sseTimeout?: number;
  /** On a lower transport, try to move up this often (ms; also when the page
   * is shown again). 0 turns it off. Default 60000. */
  upgradeInterval?: number;
  /** Long-polling on a hidden page waits this many ms between polls (shown
   * again, it polls at once). Default 2000. */
  hiddenPollDelay?: number;
  /** The server's long-poll hold in ms (`client.poll_hold`), for the
   * heartbeat watchdog. Default 25000. */
  pollHold?: number;
  /** The fetch implementation for SSE and long-polling. Default
   * globalThis.fetch. */
  fetch?: typeof globalThis.fetch;
}

export interface SubscribeOptions<T = unknown> {
  onPublication?: (publication: Publication<T>) => void;
  onJoin?: (event: JoinLeaveEvent) => void;
  onLeave?: (event: JoinLeaveEvent) => void;
  /** Every (re)subscribe, with `recovered`. */
  onSubscribed?: (event: SubscribedEvent) => void;
  /** The server refused the subscription (it is then unsubscribed). */
  onError?: (error: SwitchboardError) => void;
  onUnsubscribed?: (event: UnsubscribedEvent) => void;
  /** Start from this position (recover what was published after it). */
  since?: StreamPosition;
  /** A subscription token (private namespaces). */
  token?: string;
}

export interface HistoryOptions {
  /** At most this many (default and cap: the namespace's history_size). */
  limit?: number;
  /** Only the publications after this position, oldest first. */
  since?: StreamPosition;
  /** Newest first (without `since`). */
  reverse?: boolean;
}

export interface HistoryResult<T = unknown> {
  position: StreamPosition;
  publications: Array<{ channel: string; epoch: string; offset: number; data: T; info?: ClientInfo; time: number }>;
  recovered?: boolean;
}

export type SubscriptionState = 'subscribing' | 'subscribed' | 'unsubscribed';

export type SubscriptionEvents<T = unknown> = {
  publication: [Publication<T>];
  join: [JoinLeaveEvent];
  leave: [JoinLeaveEvent];
  subscribed: [SubscribedEvent];
  unsubscribed: [UnsubscribedEvent];
  error: [SwitchboardError];
};

export declare class Subscription<T = unknown> extends Emitter<SubscriptionEvents<T>> {
  readonly channel: string;
  readonly state: SubscriptionState;
  /** The last position delivered, or null before the first. */
  readonly position: StreamPosition | null;
  /** Publishes; resolves once it is in the stream. Made while disconnected,
   * it is queued and sent once, in order, after reconnecting (with an
   * idempotency key, so a resend publishes once). */
  publish(data: T): Promise<StreamPosition>;
  presence(): Promise<{ clients: Record<string, ClientInfo> }>;
  presenceStats(): Promise<{ numClients: number; numUsers: number }>;
  history(options?: HistoryOptions): Promise<HistoryResult<T>>;
  /** Ends this subscription (subscribe again for a new one). */
  unsubscribe(): void;
}

export type SwitchboardEvents = {
  state: [StateEvent];
  error: [SwitchboardError];
};

export declare class Switchboard extends Emitter<SwitchboardEvents> {
  /** `url`: the server's http(s) base URL, e.g. 'https://rt.example.com'. */
  constructor(url: string, options: SwitchboardOptions);
  readonly url: string;
  readonly state: State;
  /** This connection's client id, when connected. */
  readonly client: string | null;
  readonly user: string | null;
  /** The transport in use ('websocket' | 'sse' | 'long-polling'), when connected. */
  readonly transport: TransportName | string | null;
  /** The session id while it can be resumed (also between transports), or null. */
  readonly session: string | null;
  /** Connects, and keeps reconnecting until disconnect() or a disconnect
   * that forbids it. Does nothing when already started. */
  connect(): void;
  /** Closes (ending the session) and stops reconnecting. Subscriptions and
   * unsent publishes are kept for the next connect(); pending reads are
   * rejected. */
  disconnect(): void;
  /** Subscribes now, or as soon as connected. Throws (code 105) when a
   * subscription to `channel` exists. */
  subscribe<T = unknown>(channel: string, options?: SubscribeOptions<T>): Subscription<T>;
  getSubscription(channel: string): Subscription | null;
  /** Transports by name: 'websocket', 'sse', 'long-polling'. */
  static transports: Record<string, TransportConstructor>;
}

export declare class WebSocketTransport implements Transport {
  constructor(baseUrl: string, options?: SwitchboardOptions);
  readonly name: 'websocket';
  readonly url: string;
  open(connect: ConnectCommand, events: TransportEvents): void;
  send(frames: Record<string, unknown>[]): boolean;
  close(deliberate?: boolean): void;
  reconnect(connect: ConnectCommand): void;
  probe(timeoutMs?: number): Promise<boolean>;
}

/** Server-Sent Events over fetch with a streaming body: GET /connection/sse,
 * commands through POST /connection/send. */
export declare class SseTransport implements Transport {
  constructor(baseUrl: string, options?: SwitchboardOptions);
  readonly name: 'sse';
  readonly url: string;
  open(connect: ConnectCommand, events: TransportEvents): void;
  send(frames: Record<string, unknown>[]): boolean;
  close(): void;
  reconnect(connect: ConnectCommand): void;
  drain(): Promise<void>;
}

/** Long-polling: POST /connection/poll to connect, GET /connection/poll
 * with the cursor in a loop, commands through POST /connection/send. */
export declare class LongPollTransport implements Transport {
  constructor(baseUrl: string, options?: SwitchboardOptions);
  readonly name: 'long-polling';
  readonly url: string;
  open(connect: ConnectCommand, events: TransportEvents): void;
  send(frames: Record<string, unknown>[]): boolean;
  close(): void;
  reconnect(connect: ConnectCommand): void;
  drain(): Promise<void>;
  idleLimit(pingMs: number): number;
}

/** An incremental `text/event-stream` parser: feed text in chunks split
 * anywhere; get the completed events. */
export declare class SseParser {
  constructor();
  /** The last `id:` seen. */
  readonly lastEventId: string;
  /** The last valid `retry:` in ms. */
  readonly retry: number | undefined;
  feed(text: string): Array<{ data: string; event: string; id?: string }>;
}

/** The seq of an SSE event id `<session>.<seq>`, or null. */
export declare function sseSeq(id: string | undefined): number | null;

/** The http(s) URL of `path` (e.g. '/connection/sse') on a server given by
 * its base URL. */
export declare function httpUrl(base: string, path: string): string;

/** The delay in ms before reconnect attempt `attempt` (0-based): uniform in
 * [min, min(max, min·2^(attempt+1))]. */
export declare function backoff(
  attempt: number,
  bounds?: { min?: number; max?: number },
  random?: () => number,
): number;

/** The WebSocket URL (`/connection/websocket`) for an http(s) base URL. */
export declare function websocketUrl(base: string): string;

export default Switchboard;
