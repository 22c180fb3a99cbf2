// herald.d.ts: types for herald.js, the browser client of a Herald gateway.

export type HeraldState = 'connecting' | 'connected' | 'reconnecting' | 'disconnected' | 'failed';

/** `sse`: Server-Sent Events (GET /events), the fallback when WebSocket cannot connect. */
export type HeraldTransport = 'websocket' | 'sse';

export interface HeraldUser {
  userId: string;
  email: string | null;
  role: string | null;
}

/** Any message from the gateway (see the README's protocol section). */
export interface HeraldMessage {
  type: string;
  id?: string | number;
  timestamp?: string;
  [key: string]: unknown;
}

export interface ConnectedMessage extends HeraldMessage {
  type: 'connected';
  connectionId: string;
  user: HeraldUser | null;
  authorizedChannels: string[];
}

export interface EventMessage<T = unknown> extends HeraldMessage {
  type: 'event';
  channel: string;
  data: T;
  /** Present on events published with history: unique and increasing per channel (compare with compareOffsets). */
  offset?: string;
}

export interface SubscribedMessage extends HeraldMessage {
  type: 'subscribed';
  channel: string;
  /** The channel's newest offset when subscribed, or null while it has no history. */
  offset?: string | null;
  /** The channel's history epoch, or null while it has none. */
  epoch?: string | null;
  /**
   * Only on a resubscription with `since`: true when every missed event
   * follows (in order, once); false when that cannot be proven (a `gap` is
   * reported for the channel: refetch state).
   */
  recovered?: boolean;
}

/** Where a channel stands: what a resubscription recovers from. */
export interface ChannelPosition {
  offset: string | null;
  epoch: string | null;
}

/** The third argument of a subscription handler. */
export interface EventInfo {
  /** The event was missed while disconnected and delivered by a recovery. */
  recovered: boolean;
}

export interface SubscribeOptions {
  /** Recover from this position on the first subscribe (e.g. one stored with position() before a reload). */
  since?: ChannelPosition;
  /** Events on this channel may have been lost and cannot be recovered: refetch state. */
  onGap?: (info: { channel: string }) => void;
  /** Every `subscribed` reply for this channel (the first one and those after each reconnect). */
  onSubscribed?: (message: SubscribedMessage) => void;
  /** A recovery after a reconnect is complete; `events` were delivered from history. */
  onRecovered?: (info: { channel: string; events: number }) => void;
}

export interface HeraldCounters {
  /** Events delivered by recoveries after reconnects. */
  recovered: number;
  /** Repeated events dropped (an offset not after the last one seen on its channel). */
  duplicates: number;
  /** Channels reported in `gap`. */
  gaps: number;
}

export interface ErrorMessage extends HeraldMessage {
  type: 'error';
  code: string;
  message: string;
  /** Set on the `error` event when a (re)subscription was refused. */
  channel?: string;
}

export interface WorkerStats {
  gatewayId: string;
  worker: number;
  pid: number;
  host: string;
  uptimeSeconds: number;
  connections: number;
  subscriptions: number;
  channels: number;
  messagesIn: number;
  messagesOut: number;
  bytesIn: number;
  bytesOut: number;
  eventsReceived: number;
  eventsDelivered: number;
  eventsDropped: number;
  slowConsumerCloses: number;
  authFailures: number;
  connectionsTotal: number;
  redis: {
    state: string;
    reconnects: number;
    outages: number;
    downSeconds: number;
    lastOutageSeconds: number;
    probeLagMs: number;
    commandConnected: boolean;
  };
  [key: string]: unknown;
}

export interface StatsMessage extends HeraldMessage {
  type: 'stats';
  worker: WorkerStats;
  cluster: {
    workers: WorkerStats[];
    gateways: number;
    totals: {
      connections: number;
      subscriptions: number;
      messagesIn: number;
      messagesOut: number;
      eventsReceived: number;
      eventsDelivered: number;
      eventsDropped: number;
      slowConsumerCloses: number;
      workers: number;
      [key: string]: number;
    };
  };
}

/** The minimal WebSocket this client uses (the browser's, or a fake in tests). */
export interface WebSocketLike {
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

/** The minimal EventSource this client uses (the browser's, or a fake in tests). */
export interface EventSourceLike {
  close(): void;
  addEventListener(type: string, listener: (ev: { data: unknown }) => void): void;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

export interface HeraldOptions {
  /** A fixed JWT, sent as the subprotocol `token-<jwt>`. */
  token?: string;
  /** Called before every connect and reconnect; its result wins over `token`. Null/undefined: anonymous. */
  getToken?: () => string | null | undefined | Promise<string | null | undefined>;
  /** Backoff base in ms (default 1000): delay = random(0, min(maxDelay, baseDelay * 2^attempt)). */
  baseDelay?: number;
  /** Backoff cap in ms (default 30000). */
  maxDelay?: number;
  /** Reconnect attempts before state `failed` and `reconnectFailed` (default Infinity). */
  maxAttempts?: number;
  /** Heartbeat ping period in ms (default 25000). */
  pingInterval?: number;
  /** A ping not answered within this many ms means a dead connection (default 5000). */
  pongTimeout?: number;
  /** Timeout of listChannels(), stats() and request() in ms (default 10000; 0: none). */
  requestTimeout?: number;
  /** Messages kept while disconnected; the oldest is dropped first (default 100). */
  maxBufferSize?: number;
  /** Log to the console with the prefix `[Herald]` (or pass a function to receive the lines). */
  debug?: boolean | ((...args: unknown[]) => void);
  /** Fall back to Server-Sent Events when WebSocket cannot connect but HTTP works (default true). */
  fallback?: boolean;
  /** WebSocket attempts in a row that must fail before /healthz is checked for the fallback (default 3). */
  fallbackAfter?: number;
  /** While on event streams, try WebSocket again this often, ms (default 60000; 0: never). */
  probeInterval?: number;
  /** Channels per event stream (default 16, the gateway's limit); more channels open more streams. */
  sseMaxChannels?: number;
  /** The event-stream URL (default: the WebSocket URL with http(s) and /events instead of /ws). */
  sseUrl?: string;
  /** The URL that tells whether plain HTTP reaches the gateway (default: .../healthz). */
  healthUrl?: string;
  /** Same as `on('stateChange', ...)`. */
  onStateChange?: (change: StateChange) => void;
  /** For tests and non-browser hosts: the WebSocket constructor (default globalThis.WebSocket). */
  WebSocket?: new (url: string, protocols?: string | string[]) => WebSocketLike;
  /** For tests and non-browser hosts: the EventSource constructor (default globalThis.EventSource). */
  EventSource?: new (url: string) => EventSourceLike;
  /** For tests: the fetch used for /healthz and to learn why a stream was refused (default globalThis.fetch). */
  fetch?: (url: string, init?: object) => Promise<{ ok: boolean; status: number; text(): Promise<string> }>;
  /** For tests: where `online`/`offline` fire (default window). */
  window?: EventTarget | null;
  /** For tests: where `visibilitychange` fires and `visibilityState` is read (default document). */
  document?: (EventTarget & { visibilityState?: string }) | null;
  /** For tests: where `onLine` is read (default navigator). */
  navigator?: { onLine?: boolean } | null;
  /** For tests: the random source of the backoff jitter, in [0, 1) (default Math.random). */
  random?: () => number;
}

export interface StateChange {
  state: HeraldState;
  previous: HeraldState;
  /** The failure reason for `failed` (and for the retry after a refused token), else null. */
  reason: string | null;
}

export interface HeraldEvents {
  stateChange: StateChange;
  connected: {
    reconnected: boolean;
    connectionId: string;
    user: HeraldUser | null;
    authorizedChannels: string[];
  };
  disconnected: { code: number; reason: string; intentional: boolean };
  reconnectAttempt: { attempt: number; delay: number };
  reconnectFailed: { attempts: number };
  event: EventMessage;
  /** Events on these channels may have been lost and cannot be recovered: refetch state. */
  gap: { channels: string[] };
  /** Every `subscribed` reply (`recovered` tells how a resubscription went). */
  subscribed: SubscribedMessage;
  /** A channel's recovery is complete: `events` missed events were delivered. */
  recovered: { channel: string; events: number };
  /** The transport changed (to `sse` after the fallback, back to `websocket` after a successful probe). */
  transport: { transport: HeraldTransport; previous: HeraldTransport; reason: string | null };
  error: ErrorMessage;
  message: HeraldMessage;
}

/**
 * What subscribe() returns: call it to unsubscribe the handler; await it (or
 * use `.ready`) for the gateway's `subscribed` reply.
 */
export interface Subscription extends PromiseLike<SubscribedMessage> {
  (): void;
  readonly channel: string;
  readonly ready: Promise<SubscribedMessage>;
  catch<T = never>(onRejected?: ((reason: HeraldError) => T | PromiseLike<T>) | null): Promise<SubscribedMessage | T>;
  finally(onFinally?: (() => void) | null): Promise<SubscribedMessage>;
}

export interface SendOptions {
  /** false: do not buffer while disconnected (send() returns false, requests reject `not_connected`). */
  buffer?: boolean;
}

export interface RequestOptions extends SendOptions {
  /** ms; overrides `requestTimeout`. */
  timeout?: number;
}

export class HeraldError extends Error {
  constructor(code: string, message: string, reply?: ErrorMessage);
  /**
   * A gateway error code, or timeout | not_connected | disconnected | connection_lost | buffer_overflow | failed |
   * unsupported_transport (a request while on event streams, which carry no requests).
   */
  readonly code: string;
  readonly reply?: ErrorMessage;
}

export class Herald {
  constructor(url: string, options?: HeraldOptions);
  readonly url: string;
  readonly state: HeraldState;
  /** The transport in use. */
  readonly transport: HeraldTransport;
  readonly failureReason: string | null;
  readonly connectionId: string | null;
  readonly user: HeraldUser | null;
  readonly authorizedChannels: string[];
  /** Channels tracked for restoration after a reconnect. */
  readonly channels: string[];
  /** Recovery counters since construction. */
  readonly counters: HeraldCounters;

  connect(): this;
  disconnect(): this;
  subscribe<T = unknown>(channel: string, handler: (data: T, message: EventMessage<T>, info: EventInfo) => void,
                         options?: SubscribeOptions): Subscription;
  /** The channel's last offset and epoch (null when not subscribed or not answered yet). */
  position(channel: string): ChannelPosition | null;
  listChannels(options?: RequestOptions): Promise<string[]>;
  stats(options?: RequestOptions): Promise<StatsMessage>;
  request<R extends HeraldMessage = HeraldMessage>(message: { type: string; [key: string]: unknown }, options?: RequestOptions): Promise<R>;
  send(message: { type: string; [key: string]: unknown }, options?: SendOptions): boolean;

  on<K extends keyof HeraldEvents>(event: K, listener: (payload: HeraldEvents[K]) => void): () => void;
  off<K extends keyof HeraldEvents>(event: K, listener: (payload: HeraldEvents[K]) => void): void;
  onStateChange(listener: (state: HeraldState, previous: HeraldState, reason: string | null) => void): () => void;
}

/** Full-jitter backoff: random(0, min(maxDelay, baseDelay * 2^attempt)), whole ms. */
export function backoffDelay(attempt: number, baseDelay?: number, maxDelay?: number, random?: () => number): number;

/** Orders two offsets of one channel like a sort comparator; NaN when either is not an offset. */
export function compareOffsets(a: string, b: string): number;

/** JSON.parse that drops `__proto__`, `constructor` and `prototype` keys; undefined for invalid JSON. */
export function parseMessage(text: string): unknown;

export default Herald;
