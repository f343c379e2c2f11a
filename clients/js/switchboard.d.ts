// TypeScript declarations for the Switchboard JavaScript client
// (switchboard.js). Protocol: docs/protocol.md.

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

export type StateEvent =
  /** Connecting, or reconnecting after a drop (then with its code and reason). */
  | { state: 'connecting'; code?: number; reason?: string }
  | { state: 'connected'; transport: string; client: string; user: string }
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

/** The interface a transport implements (WebSocket now; SSE and
 * long-polling plug in the same way). */
export interface Transport {
  readonly name: string;
  /** Delivers the `connect` command the transport's way, then reports every
   * frame received (replies, the `connected` reply included, and pushes)
   * and, once, the end of the transport (never after close()). */
  open(
    connect: { id: number; type: 'connect'; token: string },
    events: {
      onFrame(frame: Record<string, unknown>): void;
      onClose(event: { code: number; reason: string }): void;
    },
  ): void;
  /** Sends commands in order; false when they could not be sent. */
  send(frames: Record<string, unknown>[]): boolean | void;
  close(): void;
}

export interface TransportConstructor {
  new (baseUrl: string, options: SwitchboardOptions): Transport;
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
  /** Transports in order of preference: names from Switchboard.transports or
   * classes. Default ['websocket']. */
  transports?: Array<string | TransportConstructor>;
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
  /** The transport in use ('websocket'), when connected. */
  readonly transport: string | null;
  /** Connects, and keeps reconnecting until disconnect() or a disconnect
   * that forbids it. Does nothing when already started. */
  connect(): void;
  /** Closes and stops reconnecting. Subscriptions and unsent publishes are
   * kept for the next connect(); pending reads are rejected. */
  disconnect(): void;
  /** Subscribes now, or as soon as connected. Throws (code 105) when a
   * subscription to `channel` exists. */
  subscribe<T = unknown>(channel: string, options?: SubscribeOptions<T>): Subscription<T>;
  getSubscription(channel: string): Subscription | null;
  /** Transports by name. */
  static transports: Record<string, TransportConstructor>;
}

export declare class WebSocketTransport implements Transport {
  constructor(baseUrl: string, options?: SwitchboardOptions);
  readonly name: 'websocket';
  readonly url: string;
  open(connect: { id: number; type: 'connect'; token: string }, events: Parameters<Transport['open']>[1]): void;
  send(frames: Record<string, unknown>[]): boolean;
  close(): void;
}

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
