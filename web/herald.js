/**
 * herald.js: the browser client for a Herald gateway (an ES module, no dependencies).
 *
 *   import { Herald } from '/herald.js';
 *   const herald = new Herald('wss://rt.example.com/ws', { getToken: () => fetchToken() });
 *   herald.onStateChange((state) => console.log(state));
 *   const off = herald.subscribe('apps:created', (data) => console.log(data));
 *   herald.connect();
 *
 * What it takes care of: reconnection with full-jitter exponential backoff
 * (paused while the browser is offline or the tab hidden), a fresh token
 * before every (re)connect, a heartbeat that notices dead connections,
 * subscriptions restored after every reconnect with recovery of the events
 * missed meanwhile (each channel's last offset and epoch; exactly once, in
 * order, or a `gap` when that cannot be proven), replies matched to requests
 * by `id`, messages buffered while disconnected, and a fallback to
 * Server-Sent Events (GET /events) when WebSocket cannot connect but plain
 * HTTP to the gateway works (WebSocket is probed again later).
 *
 * Wire protocol: see the gateway's README ("Protocol").
 *
 * @module herald
 */

/** Keys dropped from every parsed message, at any depth. */
const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

/** An event offset: a Redis stream entry ID. */
const OFFSET_RE = /^(\d{1,20})-(\d{1,20})$/;

/** Close code of a refused or expired token. */
const CLOSE_UNAUTHORIZED = 4001;

/** Close code this client uses when the heartbeat finds the connection dead. */
const CLOSE_HEARTBEAT_TIMEOUT = 4000;

const DEFAULTS = Object.freeze({
  baseDelay: 1000,
  maxDelay: 30000,
  maxAttempts: Infinity,
  pingInterval: 25000,
  pongTimeout: 5000,
  requestTimeout: 10000,
  maxBufferSize: 100,
  debug: false,
  fallback: true,
  fallbackAfter: 3,
  probeInterval: 60000,
  sseMaxChannels: 16,
});

/**
 * The delay before reconnect attempt `attempt` (0 for the first):
 * full jitter, `random(0, min(maxDelay, baseDelay * 2^attempt))`.
 *
 * @param {number} attempt zero-based attempt number
 * @param {number} [baseDelay=1000] milliseconds
 * @param {number} [maxDelay=30000] milliseconds
 * @param {() => number} [random=Math.random] a number in [0, 1)
 * @returns {number} whole milliseconds, 0 <= delay < cap (or 0 when the cap is 0)
 */
export function backoffDelay(attempt, baseDelay = DEFAULTS.baseDelay, maxDelay = DEFAULTS.maxDelay,
                             random = Math.random) {
  const cap = Math.min(maxDelay, baseDelay * 2 ** attempt);
  return Math.floor(random() * cap);
}

/**
 * Parses one message from the gateway. Keys named `__proto__`, `constructor`
 * or `prototype` are dropped at every depth, so a payload can never reach an
 * object's prototype through code that copies or merges it.
 *
 * @param {string} text
 * @returns {unknown} the parsed value, or undefined when the text is not JSON
 */
export function parseMessage(text) {
  try {
    return JSON.parse(text, (key, value) => (FORBIDDEN_KEYS.has(key) ? undefined : value));
  } catch {
    return undefined;
  }
}

/**
 * Orders two event offsets of one channel (`"<ms>-<seq>"`, two unsigned
 * 64-bit numbers compared in turn). Returns a negative number, 0 or a
 * positive number like a sort comparator, or NaN when either is not an
 * offset (then nothing can be said about their order).
 *
 * @param {string} a
 * @param {string} b
 * @returns {number}
 */
export function compareOffsets(a, b) {
  const pa = OFFSET_RE.exec(a);
  const pb = OFFSET_RE.exec(b);
  if (!pa || !pb) return NaN;
  for (let i = 1; i <= 2; i++) {
    const x = pa[i].replace(/^0+(?=\d)/, '');
    const y = pb[i].replace(/^0+(?=\d)/, '');
    if (x.length !== y.length) return x.length - y.length;
    if (x !== y) return x < y ? -1 : 1;
  }
  return 0;
}

/**
 * A channel's position in an event stream's id (Last-Event-ID): `<epoch>/<offset>`,
 * `<epoch>/` (no event of that epoch seen: from its beginning), or `` (no
 * history: a reconnect reports a gap).
 */
function streamPosition(position) {
  if (!position || !position.epoch) return '';
  return `${position.epoch}/${position.offset || ''}`;
}

/** An `error` reply from the gateway, or a request that could not complete. */
export class HeraldError extends Error {
  /**
   * @param {string} code machine-readable: a gateway error code, or `timeout`,
   *   `not_connected`, `disconnected`, `connection_lost`, `buffer_overflow`, `failed`,
   *   `unsupported_transport`
   * @param {string} message
   * @param {object} [reply] the gateway's error message, when there is one
   */
  constructor(code, message, reply) {
    super(message);
    this.name = 'HeraldError';
    this.code = code;
    this.reply = reply;
  }
}

/**
 * A client for one Herald gateway URL.
 *
 * States: `disconnected` (initial, and after disconnect()), `connecting`,
 * `connected`, `reconnecting`, `failed` (refused token, or maxAttempts used up).
 *
 * Events (see on()): `stateChange {state, previous, reason}`,
 * `connected {reconnected, connectionId, user, authorizedChannels}`,
 * `disconnected {code, reason, intentional}`, `reconnectAttempt {attempt, delay}`,
 * `reconnectFailed {attempts}`, `event` (each event message), `gap {channels}`,
 * `subscribed` (every subscribed reply), `recovered {channel, events}`,
 * `transport {transport, previous, reason}`, `error` (error replies that no
 * request is waiting for, and failed resubscriptions), `message` (every
 * parsed message).
 */
export class Herald {
  /**
   * @param {string} url the gateway's WebSocket URL, e.g. `wss://host/ws`
   * @param {import('./herald').HeraldOptions} [options]
   */
  constructor(url, options = {}) {
    this.url = url;
    this.options = { ...DEFAULTS, ...options };
    const env = globalThis;
    this._WebSocket = options.WebSocket || env.WebSocket;
    this._window = options.window !== undefined ? options.window : env.window;
    this._document = options.document !== undefined ? options.document : env.document;
    this._navigator = options.navigator !== undefined ? options.navigator : env.navigator;
    this._random = options.random || Math.random;
    this._EventSource = options.EventSource || env.EventSource;
    this._fetch = options.fetch || (typeof env.fetch === 'function' ? env.fetch.bind(env) : null);

    this._state = 'disconnected';
    this._failureReason = null;
    this._ws = null;
    this._generation = 0;        // bumped by disconnect(): stale async work checks it
    this._everConnected = false;
    this._attempt = 0;           // reconnect attempts since the last successful connect
    this._reconnectTimer = null;
    this._paused = false;        // a reconnect waits for online/visible
    this._token = null;          // the token the current socket was opened with
    this._authRetried = false;   // 4001 already answered with a fresh token once
    this._lastError = null;      // last `error` message on this socket (4001 reason)
    this._pingTimer = null;
    this._pongTimer = null;
    this._nextId = 1;
    /** @type {Map<string, {resolve: Function, reject: Function, timer: any, survivesClose: boolean}>} */
    this._pending = new Map();
    /** @type {Array<{message: object, request: object | null}>} */
    this._buffer = [];
    /** @type {Map<string, {handlers: Set<Function>, ready: Promise<object>, resolve: Function | null, reject: Function | null}>} */
    this._subs = new Map();
    /** @type {Map<string, Set<Function>>} */
    this._listeners = new Map();
    this._session = null;        // the last `connected` message
    this._recoveredTotal = 0;    // events delivered by recoveries
    this._duplicates = 0;        // repeated events dropped
    this._gaps = 0;              // channel gaps reported
    this._transport = 'websocket';
    this._wsFailures = 0;        // WebSocket attempts in a row that never got `connected`
    this._sseFailures = 0;       // event streams in a row that never got `connected`
    /** @type {Array<{channels: string[], es: any, opened: boolean, url: string}>} */
    this._streams = [];          // SSE: one EventSource per group of at most sseMaxChannels channels
    this._sseReopen = false;     // a reopen for a new channel set is scheduled
    this._probeTimer = null;
    this._probeWs = null;

    this._onOnline = () => this._resume('online');
    this._onOffline = () => this._pause('offline');
    this._onVisibility = () => {
      if (this._isHidden()) this._pause('hidden');
      else this._resume('visible');
    };
    if (typeof options.onStateChange === 'function') this.on('stateChange', options.onStateChange);
  }

  /** @returns {'connecting'|'connected'|'reconnecting'|'disconnected'|'failed'} */
  get state() { return this._state; }

  /** Why the state is `failed` (the gateway's reason for a refused token), else null. */
  get failureReason() { return this._failureReason; }

  /** The `connectionId` of the current connection, or null. */
  get connectionId() { return this._session ? this._session.connectionId : null; }

  /** The user of the current connection (`null` when anonymous or not connected). */
  get user() { return this._session ? this._session.user : null; }

  /** Channels this user may subscribe to, from the last `connected` message. */
  get authorizedChannels() { return this._session ? [...this._session.authorizedChannels] : []; }

  /**
   * Counters since construction: `recovered` (events delivered by
   * recoveries after reconnects), `duplicates` (repeated events dropped),
   * `gaps` (channels reported in `gap`).
   * @returns {{recovered: number, duplicates: number, gaps: number}}
   */
  get counters() {
    return { recovered: this._recoveredTotal, duplicates: this._duplicates, gaps: this._gaps };
  }

  /**
   * The transport in use: `websocket`, or `sse` (Server-Sent Events, the
   * fallback when WebSocket cannot connect but plain HTTP to the gateway works).
   * @returns {'websocket'|'sse'}
   */
  get transport() { return this._transport; }

  /** Channels currently tracked (restored after every reconnect). */
  get channels() { return [...this._subs.keys()]; }

  /**
   * Where a channel stands: `{offset, epoch}` of the last event seen (or of
   * the `subscribed` reply), what a resubscription recovers from; null when
   * the channel is not subscribed or has no reply yet. Store it to resume
   * later with `subscribe(channel, handler, {since})`.
   * @param {string} channel
   * @returns {{offset: string | null, epoch: string | null} | null}
   */
  position(channel) {
    const entry = this._subs.get(channel);
    return entry && entry.position ? { ...entry.position } : null;
  }

  /**
   * Opens the connection. Idempotent: does nothing while connecting,
   * connected or reconnecting. After `failed` or disconnect() it starts over.
   * @returns {this}
   */
  connect() {
    if (this._state === 'connecting' || this._state === 'connected' || this._state === 'reconnecting')
      return this;
    this._failureReason = null;
    this._attempt = 0;
    this._authRetried = false;
    this._everConnected = false;
    this._wsFailures = 0;
    this._sseFailures = 0;
    this._setTransport('websocket', 'connect');
    this._listen(true);
    this._setState('connecting');
    this._open();
    return this;
  }

  /**
   * Closes the connection and stops reconnecting. Buffered messages are
   * dropped and waiting requests rejected (`disconnected`). Subscriptions stay
   * registered: a later connect() restores them.
   * @returns {this}
   */
  disconnect() {
    this._generation++;
    this._clearReconnect();
    this._listen(false);
    for (const item of this._buffer.splice(0)) {
      if (item.request) item.request.reject(new HeraldError('disconnected', 'disconnect() called'));
    }
    const ws = this._ws;
    this._dropSocket();
    this._closeStreams();
    this._stopProbe();
    this._rejectPending('disconnected', 'disconnect() called');
    if (ws) {
      try { ws.close(1000, 'client disconnect'); } catch { /* already closing */ }
    }
    if (this._state !== 'disconnected') {
      const wasUp = this._state !== 'failed';
      this._setState('disconnected');
      if (wasUp) this._emit('disconnected', { code: 1000, reason: 'client disconnect', intentional: true });
    }
    return this;
  }

  /**
   * Subscribes `handler` to a channel. The returned function unsubscribes this
   * handler; it is also a promise (then/catch/finally, and `.ready`) that
   * resolves with the gateway's `subscribed` reply, or rejects with a
   * HeraldError when the gateway answers `error` (then the handler is
   * removed). Several handlers may share a channel; the gateway is told to
   * unsubscribe when the last one goes. The subscription is restored after
   * every reconnect; a call made while disconnected takes effect on connect.
   *
   * Recovery: the client keeps the channel's last offset and epoch and, after
   * every reconnect, subscribes with `since`, so the handler gets every event
   * exactly once and in order; when that cannot be proven the gateway says so
   * and `options.onGap` (and the `gap` event) fires: refetch state then.
   *
   * @param {string} channel
   * @param {(data: unknown, message: object) => void} handler
   * @param {import('./herald').SubscribeOptions} [options] `since` (a position
   *   kept from earlier, e.g. across a page reload; used when the channel is
   *   not subscribed yet), `onGap`, `onSubscribed`, `onRecovered`
   * @returns {import('./herald').Subscription}
   */
  subscribe(channel, handler, options = {}) {
    if (typeof channel !== 'string' || channel === '') throw new TypeError('channel must be a non-empty string');
    if (typeof handler !== 'function') throw new TypeError('handler must be a function');
    let entry = this._subs.get(channel);
    if (!entry) {
      entry = { handlers: new Set(), hooks: new Map(), ready: null, resolve: null, reject: null,
                position: null,       // {offset, epoch} once known: what a resubscription recovers from
                recoverUntil: null,   // while recovering: the gateway's newest offset at `subscribed`
                recoveredCount: 0,
                gapAnnounced: false,  // recovered:false already reported this gap
                checkReply: null,     // subscribed afresh without a known epoch: compare the reply
                sawRaw: false,        // events without an offset (no history) came on this channel
                epochProbe: false,    // a subscribe asking for the epoch is in flight
                afterGap: false };    // the next event starts afresh (no order check)
      entry.ready = new Promise((resolve, reject) => { entry.resolve = resolve; entry.reject = reject; });
      entry.ready.catch(() => {}); // the caller may ignore it; failures also go to the `error` event
      const since = options && options.since;
      if (since && typeof since === 'object') {
        entry.position = { offset: typeof since.offset === 'string' ? since.offset : null,
                           epoch: typeof since.epoch === 'string' ? since.epoch : null };
      }
      this._subs.set(channel, entry);
      // (event streams waiting for a first channel open with this one)
      if (this._state === 'connected' || this._transport === 'sse') this._channelsChanged(channel, entry);
    }
    entry.handlers.add(handler);
    if (options && (options.onGap || options.onSubscribed || options.onRecovered)) entry.hooks.set(handler, options);
    this._log('subscribe', channel);

    const ready = entry.ready;
    const unsubscribe = () => this._removeHandler(channel, entry, handler);
    unsubscribe.channel = channel;
    unsubscribe.ready = ready;
    unsubscribe.then = (onFulfilled, onRejected) => ready.then(onFulfilled, onRejected);
    unsubscribe.catch = (onRejected) => ready.catch(onRejected);
    unsubscribe.finally = (onFinally) => ready.finally(onFinally);
    return unsubscribe;
  }

  /**
   * The channels this user may subscribe to.
   * @param {{buffer?: boolean}} [options] buffer: false rejects at once when not connected
   * @returns {Promise<string[]>}
   */
  listChannels(options = {}) {
    return this.request({ type: 'list_channels' }, options).then((reply) => reply.channels);
  }

  /**
   * The gateway's stats reply `{worker, cluster}` (admins only; others get a
   * HeraldError with code `forbidden`).
   * @param {{buffer?: boolean}} [options]
   * @returns {Promise<object>}
   */
  stats(options = {}) {
    return this.request({ type: 'stats' }, options);
  }

  /**
   * Sends a message with a fresh `id` and resolves with the reply that echoes
   * it; rejects with a HeraldError on an `error` reply, after
   * `requestTimeout` ms without a reply, when the connection drops before the
   * reply, or (with `buffer: false`) at once when not connected.
   *
   * @param {object} message
   * @param {{buffer?: boolean, timeout?: number}} [options]
   * @returns {Promise<object>}
   */
  request(message, options = {}) {
    const id = String(this._nextId++);
    return new Promise((resolve, reject) => {
      const request = { id, resolve, reject, timer: null, survivesClose: false,
                        timeout: options.timeout ?? this.options.requestTimeout };
      const outgoing = { ...message, id };
      if (!this._enqueue(outgoing, request, options.buffer !== false)) {
        reject(new HeraldError('not_connected', 'not connected and buffering is off for this call'));
      }
    });
  }

  /**
   * Sends a raw message. While not connected it is buffered (up to
   * `maxBufferSize`, oldest dropped first) and sent on connect, unless
   * `{buffer: false}`.
   * @param {object} message
   * @param {{buffer?: boolean}} [options]
   * @returns {boolean} true when sent or buffered
   */
  send(message, options = {}) {
    return this._enqueue(message, null, options.buffer !== false);
  }

  /**
   * Adds an event listener; returns a function that removes it.
   * @param {string} event
   * @param {(payload: any) => void} listener
   * @returns {() => void}
   */
  on(event, listener) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(listener);
    return () => this.off(event, listener);
  }

  /** Removes a listener added with on(). */
  off(event, listener) {
    const set = this._listeners.get(event);
    if (set) set.delete(listener);
  }

  /**
   * Calls `listener(state, previous, reason)` on every state change.
   * @returns {() => void} removes the listener
   */
  onStateChange(listener) {
    return this.on('stateChange', ({ state, previous, reason }) => listener(state, previous, reason));
  }

  // ---- connection lifecycle -------------------------------------------------

  async _open(prefetchedToken) {
    const generation = this._generation;
    let token;
    try {
      token = prefetchedToken !== undefined ? prefetchedToken : await this._fetchToken();
    } catch (err) {
      if (generation !== this._generation) return;
      this._log('getToken failed:', err && err.message);
      this._scheduleReconnect();
      return;
    }
    if (generation !== this._generation) return; // disconnect() meanwhile
    this._token = token || null;
    this._lastError = null;
    if (this._transport === 'sse') {
      this._openStreams();
      return;
    }
    this._log('opening', this.url, `(attempt ${this._attempt})`);
    let ws;
    try {
      ws = this._token ? new this._WebSocket(this.url, [`token-${this._token}`]) : new this._WebSocket(this.url);
    } catch (err) {
      this._log('WebSocket constructor failed:', err && err.message);
      this._scheduleReconnect();
      return;
    }
    this._ws = ws;
    ws.onmessage = (ev) => { if (this._ws === ws) this._onMessage(ev.data); };
    ws.onclose = (ev) => { if (this._ws === ws) this._onClose(ev.code, ev.reason); };
    ws.onerror = () => this._log('socket error');
  }

  /** The token for the next connection: getToken() when given, else the token option. */
  async _fetchToken() {
    if (typeof this.options.getToken === 'function') return this.options.getToken();
    return this.options.token;
  }

  _onMessage(raw) {
    if (typeof raw !== 'string') return;
    const msg = parseMessage(raw);
    if (!msg || typeof msg !== 'object' || Array.isArray(msg)) return; // e.g. the text heartbeat "3"
    this._dispatch(msg);
  }

  _dispatch(msg) {
    this._emit('message', msg);
    const pending = msg.id !== undefined && msg.id !== null ? this._pending.get(String(msg.id)) : undefined;
    switch (msg.type) {
      case 'connected':
        this._onConnected(msg);
        return;
      case 'event':
        this._onEvent(msg);
        return;
      case 'subscribed':
        if (pending) this._settle(msg.id, msg, null);
        else this._emit('subscribed', msg);
        return;
      case 'pong':
        clearTimeout(this._pongTimer);
        this._pongTimer = null;
        break;
      case 'gap':
        this._onGap(Array.isArray(msg.channels) ? msg.channels.filter((c) => typeof c === 'string') : []);
        return;
      case 'error':
        this._lastError = msg;
        if (pending) {
          this._settle(msg.id, null, new HeraldError(msg.code, msg.message, msg));
        } else {
          this._log('error', msg.code, msg.message);
          this._emit('error', msg);
        }
        return;
      default:
        break;
    }
    if (pending) this._settle(msg.id, msg, null);
  }

  _onConnected(msg) {
    const reconnected = this._everConnected;
    this._everConnected = true;
    this._attempt = 0;
    this._wsFailures = 0;
    this._authRetried = false;
    this._session = {
      connectionId: msg.connectionId,
      user: msg.user || null,
      authorizedChannels: Array.isArray(msg.authorizedChannels) ? msg.authorizedChannels : [],
    };
    this._log('connected', msg.connectionId, reconnected ? '(reconnected)' : '');
    this._setState('connected');
    for (const [channel, entry] of this._subs) this._sendSubscribe(channel, entry);
    for (const item of this._buffer.splice(0)) this._transmit(item.message, item.request);
    this._startHeartbeat();
    this._emit('connected', { reconnected, ...this._session });
  }

  _onClose(code, reason) {
    const wasConnected = this._state === 'connected';
    if (!wasConnected && code !== CLOSE_UNAUTHORIZED) this._wsFailures++;
    this._dropSocket();
    this._rejectPending('connection_lost', 'the connection closed before the reply');
    this._log('closed', code, reason || '');
    if (wasConnected) this._emit('disconnected', { code, reason, intentional: false });
    if (code === CLOSE_UNAUTHORIZED) {
      this._onUnauthorized(reason);
      return;
    }
    this._scheduleReconnect();
  }

  /**
   * Close 4001: retry once at once when getToken() yields a different token,
   * else fail with the gateway's reason. Never a retry loop.
   */
  async _onUnauthorized(closeReason) {
    const reason = (this._lastError && this._lastError.message) || closeReason || 'unauthorized';
    const generation = this._generation;
    if (typeof this.options.getToken === 'function' && !this._authRetried) {
      this._setState('reconnecting', reason);
      let fresh;
      try { fresh = await this.options.getToken(); } catch { fresh = undefined; }
      if (generation !== this._generation) return;
      if (fresh && fresh !== this._token) {
        this._authRetried = true;
        this._log('token refused; retrying with a new token');
        this._open(fresh);
        return;
      }
    }
    this._fail(reason);
  }

  _fail(reason) {
    this._clearReconnect();
    this._closeStreams();
    this._stopProbe();
    this._listen(false);
    this._failureReason = reason;
    for (const item of this._buffer.splice(0)) {
      if (item.request) item.request.reject(new HeraldError('failed', reason));
    }
    this._log('failed:', reason);
    this._setState('failed', reason);
  }

  _scheduleReconnect() {
    this._clearReconnect();
    if (this._attempt >= this.options.maxAttempts) {
      const attempts = this._attempt;
      this._fail(`gave up after ${attempts} reconnect attempts`);
      this._emit('reconnectFailed', { attempts });
      return;
    }
    this._setState('reconnecting');
    if (this._isOffline() || this._isHidden()) {
      this._paused = true;
      this._log('reconnect paused:', this._isOffline() ? 'offline' : 'hidden');
      return;
    }
    const delay = backoffDelay(this._attempt, this.options.baseDelay, this.options.maxDelay, this._random);
    if (this._transport === 'websocket' && this._wsFailures >= this.options.fallbackAfter && this._canUseSse()) {
      this._tryFallback(delay);
      return;
    }
    if (this._transport === 'sse' && this._sseFailures >= this.options.fallbackAfter) {
      this._sseFailures = 0; // the streams do not work either: WebSocket again, then maybe back
      this._wsFailures = 0;
      this._setTransport('websocket', 'event stream unavailable');
    }
    this._startAttempt(delay);
  }

  _startAttempt(delay) {
    this._paused = false;
    this._attempt++;
    const attempt = this._attempt;
    this._log(`reconnect attempt ${attempt} in ${delay} ms`);
    this._emit('reconnectAttempt', { attempt, delay });
    const generation = this._generation;
    this._reconnectTimer = setTimeout(() => {
      this._reconnectTimer = null;
      if (generation === this._generation) this._open();
    }, delay);
  }

  /** Offline or hidden: a waiting reconnect stops until online and visible again. */
  _pause(why) {
    if (this._state !== 'reconnecting' || !this._reconnectTimer) return;
    this._clearReconnect();
    this._attempt--; // the cancelled attempt never ran
    this._paused = true;
    this._log('reconnect paused:', why);
  }

  _resume(why) {
    if (this._state !== 'reconnecting' || !this._paused || this._isOffline() || this._isHidden()) return;
    this._log('resuming reconnect:', why);
    this._startAttempt(0);
  }

  _clearReconnect() {
    if (this._reconnectTimer) clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    this._paused = false;
  }

  /** Detaches the current socket (its late callbacks are ignored) and stops the heartbeat. */
  _dropSocket() {
    const ws = this._ws;
    this._ws = null;
    this._session = null;
    this._stopHeartbeat();
    if (ws) { ws.onmessage = null; ws.onclose = null; ws.onerror = null; }
  }

  _startHeartbeat() {
    this._stopHeartbeat();
    this._pingTimer = setInterval(() => {
      if (this._state !== 'connected' || this._pongTimer) return;
      this._transmit({ type: 'ping' }, null);
      this._pongTimer = setTimeout(() => {
        this._pongTimer = null;
        this._log(`no pong within ${this.options.pongTimeout} ms: reconnecting`);
        const ws = this._ws;
        if (!ws) return;
        try { ws.close(CLOSE_HEARTBEAT_TIMEOUT, 'heartbeat timeout'); } catch { /* ignore */ }
        this._onClose(CLOSE_HEARTBEAT_TIMEOUT, 'heartbeat timeout'); // a dead socket may never report close
      }, this.options.pongTimeout);
    }, this.options.pingInterval);
  }

  _stopHeartbeat() {
    clearInterval(this._pingTimer);
    clearTimeout(this._pongTimer);
    this._pingTimer = null;
    this._pongTimer = null;
  }

  // ---- messages and requests -----------------------------------------------

  /**
   * Subscribes a channel on the gateway; with a known position it asks to
   * recover from it (`since`).
   */
  _sendSubscribe(channel, entry) {
    const id = String(this._nextId++);
    const request = {
      id, timer: null, timeout: 0, survivesClose: true, // a reconnect sends it again
      resolve: (reply) => {
        if (this._subs.get(channel) === entry) this._onSubscribed(channel, entry, reply);
        if (entry.resolve) { entry.resolve(reply); entry.resolve = entry.reject = null; }
      },
      reject: (err) => {
        if (this._subs.get(channel) === entry) this._subs.delete(channel);
        if (entry.reject) { entry.reject(err); entry.resolve = entry.reject = null; }
        this._emit('error', { ...(err.reply || {}), type: 'error', code: err.code, message: err.message, channel });
      },
    };
    const message = { type: 'subscribe', channel, id };
    if (this._prepareResubscribe(entry)) message.since = { offset: entry.position.offset, epoch: entry.position.epoch };
    this._transmit(message, request);
  }

  /**
   * Before a (re)subscription: true when the gateway can be asked to recover
   * (`since`: the channel's epoch is known). A channel without a known epoch
   * (no history when subscribed, or history that began since, whose epoch no
   * event carries) is subscribed afresh and checked on the reply instead.
   */
  _prepareResubscribe(entry) {
    entry.recoverUntil = null;
    entry.gapAnnounced = false;
    entry.checkReply = null;
    if (!entry.position) return false;
    if (entry.position.epoch) return true;
    entry.checkReply = { offset: entry.position.offset, sawRaw: entry.sawRaw };
    return false;
  }

  /**
   * A `subscribed` reply: recovered, the events after our offset follow (up
   * to the gateway's newest, `reply.offset`); otherwise the channel starts
   * again from the reply's position, and recovered:false is a gap.
   */
  _onSubscribed(channel, entry, reply) {
    const offset = typeof reply.offset === 'string' ? reply.offset : null;
    const epoch = typeof reply.epoch === 'string' ? reply.epoch : null;
    // Subscribed afresh without a known epoch: events were missed when the
    // channel's newest offset moved meanwhile, or when it carries events
    // without history (those are never recoverable).
    const check = entry.checkReply;
    entry.checkReply = null;
    const missed = !!check && reply.recovered === undefined && (check.sawRaw || offset !== check.offset);
    if (reply.recovered === true && entry.position) {
      entry.position.epoch = epoch;
      const from = entry.position.offset;
      if (offset !== null && (from === null || compareOffsets(offset, from) > 0)) {
        entry.recoverUntil = offset;
        entry.recoveredCount = 0;
      }
    } else {
      entry.position = { offset, epoch };
    }
    entry.afterGap = false;
    this._emit('subscribed', reply);
    this._hook(entry, 'onSubscribed', reply);
    if (reply.recovered === true && entry.recoverUntil === null) this._recoveryDone(channel, entry, 0);
    if (reply.recovered === false) {
      entry.gapAnnounced = true; // the gateway's gap message that follows is this same gap
      this._emitGap([channel]);
    } else if (missed) {
      this._emitGap([channel]);
    }
  }

  _recoveryDone(channel, entry, events) {
    entry.recoverUntil = null;
    this._log('recovered', channel, `(${events} events)`);
    const info = { channel, events };
    this._emit('recovered', info);
    this._hook(entry, 'onRecovered', info);
  }

  /**
   * An event: dropped when its offset is not after the last one seen on its
   * channel (a repeat), else handed to the channel's handlers.
   */
  _onEvent(msg) {
    const entry = this._subs.get(msg.channel);
    let recovered = false;
    if (entry) {
      entry.gapAnnounced = false;
      if (typeof msg.offset !== 'string') entry.sawRaw = true;
      else {
        const last = entry.position && entry.position.offset;
        const known = entry.position ? entry.position.epoch : null;
        const epoch = typeof msg.epoch === 'string' ? msg.epoch : known;
        // Offsets of another epoch start over: never compare across epochs.
        const sameEpoch = !known || !epoch || known === epoch;
        if (last && sameEpoch && !entry.afterGap && !(compareOffsets(msg.offset, last) > 0)) {
          this._duplicates++;
          this._log('dropped a repeated event', msg.channel, msg.offset);
          return;
        }
        entry.position = { offset: msg.offset, epoch };
        entry.afterGap = false;
        if (!entry.position.epoch) this._learnEpoch(msg.channel, entry);
        if (entry.recoverUntil !== null) {
          recovered = true;
          entry.recoveredCount++;
          this._recoveredTotal++;
          if (!(compareOffsets(msg.offset, entry.recoverUntil) < 0)) this._recoveryDone(msg.channel, entry, entry.recoveredCount);
        }
      }
      for (const handler of [...entry.handlers]) {
        try { handler(msg.data, msg, { recovered }); } catch (err) { this._log('handler threw:', err); }
      }
    }
    this._emit('event', msg);
  }

  /**
   * An event with an offset but no epoch (a gateway whose events do not carry
   * it) on a channel whose epoch is unknown (its history began after the
   * subscription): a repeated
   * `subscribe` (idempotent) answers with the channel's epoch, which makes the
   * next reconnect recoverable. Only the epoch is taken from that reply.
   */
  _learnEpoch(channel, entry) {
    if (entry.epochProbe || this._state !== 'connected' || this._transport !== 'websocket' || !this._ws) return;
    entry.epochProbe = true;
    const request = {
      id: String(this._nextId++), timer: null, timeout: this.options.requestTimeout, survivesClose: false,
      resolve: (reply) => {
        entry.epochProbe = false;
        if (this._subs.get(channel) === entry && entry.position && !entry.position.epoch && typeof reply.epoch === 'string') {
          entry.position.epoch = reply.epoch;
          this._log('epoch of', channel, 'is', reply.epoch);
        }
      },
      reject: () => { entry.epochProbe = false; },
    };
    this._transmit({ type: 'subscribe', channel, id: request.id }, request);
  }

  /** A gap message: channels on which events may have been lost. */
  _onGap(channels) {
    const fresh = [];
    for (const channel of channels) {
      const entry = this._subs.get(channel);
      if (entry && entry.gapAnnounced) { entry.gapAnnounced = false; continue; }
      if (entry) entry.afterGap = true; // e.g. another history epoch: offsets start over
      fresh.push(channel);
    }
    if (fresh.length) this._emitGap(fresh);
  }

  _emitGap(channels) {
    this._gaps += channels.length;
    this._log('gap on', channels.join(', '));
    this._emit('gap', { channels });
    for (const channel of channels) {
      const entry = this._subs.get(channel);
      if (entry) this._hook(entry, 'onGap', { channel });
    }
  }

  _hook(entry, name, payload) {
    for (const hooks of [...entry.hooks.values()]) {
      if (typeof hooks[name] !== 'function') continue;
      try { hooks[name](payload); } catch (err) { this._log(`${name} threw:`, err); }
    }
  }

  /** The channel set grew by `channel` while connected. */
  _channelsChanged(channel, entry) {
    if (this._transport === 'sse') this._scheduleStreamReopen();
    else this._sendSubscribe(channel, entry);
  }

  _removeHandler(channel, entry, handler) {
    if (!entry.handlers.delete(handler)) return;
    entry.hooks.delete(handler);
    if (entry.handlers.size > 0) return;
    if (this._subs.get(channel) !== entry) return;
    this._subs.delete(channel);
    this._log('unsubscribe', channel);
    // Only a live connection has anything to undo; a new one starts without it.
    if (this._state !== 'connected') return;
    if (this._transport === 'sse') this._scheduleStreamReopen();
    else this._transmit({ type: 'unsubscribe', channel }, null);
  }

  /** Sends now when connected, else buffers (when allowed). */
  _enqueue(message, request, allowBuffer) {
    if (this._state === 'connected' && this._ws) {
      this._transmit(message, request);
      return true;
    }
    if (this._state === 'connected' && this._transport === 'sse' && request) {
      request.reject(new HeraldError('unsupported_transport', 'requests need the WebSocket transport'));
      return true;
    }
    if (!allowBuffer) return false;
    if (this._buffer.length >= this.options.maxBufferSize) {
      const dropped = this._buffer.shift();
      this._log('buffer full: dropping the oldest message');
      if (dropped.request) dropped.request.reject(new HeraldError('buffer_overflow', 'dropped from a full buffer'));
    }
    this._buffer.push({ message, request });
    return true;
  }

  _transmit(message, request) {
    if (request) {
      this._pending.set(request.id, request);
      if (request.timeout > 0) {
        request.timer = setTimeout(() => {
          this._settle(request.id, null, new HeraldError('timeout', `no reply within ${request.timeout} ms`));
        }, request.timeout);
      }
    }
    try {
      this._ws.send(JSON.stringify(message));
    } catch (err) {
      this._log('send failed:', err && err.message); // the close event follows
    }
  }

  _settle(id, reply, error) {
    const key = String(id);
    const request = this._pending.get(key);
    if (!request) return;
    this._pending.delete(key);
    clearTimeout(request.timer);
    if (error) request.reject(error);
    else request.resolve(reply);
  }

  /**
   * Rejects the requests waiting for replies on the closed socket. Subscribe
   * requests are only forgotten: their subscriptions stay registered and the
   * next connection sends them again (settling their promises then).
   */
  _rejectPending(code, message) {
    for (const [id, request] of [...this._pending]) {
      this._pending.delete(id);
      clearTimeout(request.timer);
      if (!request.survivesClose) request.reject(new HeraldError(code, message));
    }
  }

  // ---- Server-Sent Events fallback ------------------------------------------

  /** Whether the event-stream fallback is possible here. */
  _canUseSse() {
    return this.options.fallback !== false && typeof this._EventSource === 'function';
  }

  /** An http(s) URL on the gateway next to the WebSocket URL: /ws -> path. */
  _httpUrl(path) {
    const base = typeof location !== 'undefined' && location.href ? location.href : undefined;
    const u = new URL(this.url, base);
    u.protocol = u.protocol === 'wss:' || u.protocol === 'https:' ? 'https:' : 'http:';
    u.pathname = u.pathname.replace(/\/ws\/?$/, '') + path;
    u.search = '';
    u.hash = '';
    return u.toString();
  }

  _sseUrl() { return this.options.sseUrl || this._httpUrl('/events'); }

  _healthUrl() { return this.options.healthUrl || this._httpUrl('/healthz'); }

  _setTransport(transport, reason) {
    if (transport === this._transport) return;
    const previous = this._transport;
    this._transport = transport;
    this._log('transport', previous, '->', transport, reason ? `(${reason})` : '');
    if (transport === 'sse') this._scheduleProbe();
    else this._stopProbe();
    this._emit('transport', { transport, previous, reason: reason || null });
  }

  /**
   * WebSocket failed fallbackAfter times in a row: when plain HTTP to the
   * gateway works (GET /healthz), the next attempt opens event streams at once.
   */
  async _tryFallback(delay) {
    const generation = this._generation;
    let ok = false;
    if (this._fetch) {
      try {
        const init = { cache: 'no-store' };
        if (typeof AbortSignal !== 'undefined' && typeof AbortSignal.timeout === 'function') init.signal = AbortSignal.timeout(5000);
        const res = await this._fetch(this._healthUrl(), init);
        ok = !!res && res.ok;
      } catch {
        ok = false;
      }
    }
    if (generation !== this._generation || this._state !== 'reconnecting' || this._reconnectTimer || this._paused) return;
    if (ok) {
      this._sseFailures = 0;
      this._setTransport('sse', 'WebSocket cannot connect, HTTP works');
    } else {
      this._log('WebSocket and HTTP both fail: the gateway is unreachable');
    }
    this._startAttempt(ok ? 0 : delay);
  }

  /** Splits the channels into streams, keeping each existing stream's set when it still fits. */
  _planStreams() {
    const want = new Set(this._subs.keys());
    const max = Math.max(1, this.options.sseMaxChannels);
    const plan = this._streams.map((st) => ({ old: st, channels: st.channels.filter((c) => want.has(c)) }));
    const placed = new Set(plan.flatMap((p) => p.channels));
    for (const channel of want) {
      if (placed.has(channel)) continue;
      let target = plan.find((p) => p.channels.length < max);
      if (!target) plan.push(target = { old: null, channels: [] });
      target.channels.push(channel);
    }
    return plan;
  }

  /** Opens the event streams for every channel (a connect or reconnect on SSE). */
  _openStreams() {
    this._closeStreams();
    const plan = this._planStreams();
    if (plan.length === 0) {
      this._log('event streams wait for a subscription'); // GET /events needs a channel
      return;
    }
    for (const { channels } of plan) this._openStream(channels);
  }

  _scheduleStreamReopen() {
    if (this._sseReopen) return;
    this._sseReopen = true;
    queueMicrotask(() => {
      this._sseReopen = false;
      if (this._transport !== 'sse') return;
      if (this._state === 'connected') this._reopenStreams();
      else if (this._streams.length === 0 && (this._state === 'connecting' || this._state === 'reconnecting') &&
               !this._reconnectTimer && !this._paused) this._openStreams();
    });
  }

  /** The channel set changed: reopen only the streams whose set changed, recovering from the positions. */
  _reopenStreams() {
    const plan = this._planStreams();
    const next = [];
    for (const { old, channels } of plan) {
      if (old && old.channels.length === channels.length && old.channels.every((c, i) => c === channels[i])) {
        next.push(old);
        continue;
      }
      if (old) this._closeStream(old);
      if (channels.length) next.push(this._openStream(channels, false));
    }
    this._streams = next;
  }

  /**
   * One EventSource for `channels`: channels with a known position first, in
   * the order of the lastEventId that asks to recover them; new ones after.
   */
  _openStream(channels, register = true) {
    const known = [];
    const fresh = [];
    for (const channel of channels) (this._prepareResubscribe(this._subs.get(channel)) ? known : fresh).push(channel);
    const order = [...known, ...fresh];
    const url = new URL(this._sseUrl());
    for (const channel of order) url.searchParams.append('channel', channel);
    if (this._token) url.searchParams.set('token', this._token); // EventSource cannot send headers
    if (known.length) url.searchParams.set('lastEventId', known.map((c) => streamPosition(this._subs.get(c).position)).join(','));
    const stream = { channels: order, es: null, opened: false, url: url.toString() };
    this._log('opening event stream for', order.join(', '));
    let es;
    try {
      es = new this._EventSource(stream.url);
    } catch (err) {
      this._log('EventSource constructor failed:', err && err.message);
      queueMicrotask(() => this._onStreamError(stream));
      if (register) this._streams.push(stream);
      return stream;
    }
    stream.es = es;
    const onMessage = (ev) => { if (stream.es === es) this._onStreamMessage(stream, ev); };
    es.onmessage = onMessage;
    es.addEventListener('connected', onMessage);
    es.addEventListener('subscribed', onMessage);
    es.onerror = () => { if (stream.es === es) this._onStreamError(stream); };
    if (register) this._streams.push(stream);
    return stream;
  }

  _onStreamMessage(stream, ev) {
    if (typeof ev.data !== 'string') return;
    const msg = parseMessage(ev.data);
    if (!msg || typeof msg !== 'object' || Array.isArray(msg)) return;
    if (msg.type === 'connected') {
      stream.opened = true;
      this._onStreamConnected(msg);
      this._emit('message', msg);
      return;
    }
    if (msg.type === 'subscribed' && (msg.id === undefined || msg.id === null)) {
      this._emit('message', msg);
      const entry = this._subs.get(msg.channel);
      if (entry) {
        this._onSubscribed(msg.channel, entry, msg);
        if (entry.resolve) { entry.resolve(msg); entry.resolve = entry.reject = null; }
      } else {
        this._emit('subscribed', msg);
      }
    } else {
      this._dispatch(msg);
    }
    if (typeof ev.lastEventId === 'string' && ev.lastEventId) this._learnStreamEpochs(stream, ev.lastEventId);
  }

  /**
   * The stream's id holds every channel's `<epoch>/<offset>` in URL order:
   * it tells the epoch of a channel whose history began after it was
   * subscribed (only the epoch is taken; offsets come from the events).
   */
  _learnStreamEpochs(stream, id) {
    const positions = id.split(',');
    stream.channels.forEach((channel, i) => {
      const entry = this._subs.get(channel);
      const slash = positions[i] ? positions[i].indexOf('/') : -1;
      if (!entry || !entry.position || entry.position.epoch || slash <= 0) return;
      entry.position.epoch = positions[i].slice(0, slash);
    });
  }

  /** A stream is up: the first one makes the client connected. */
  _onStreamConnected(msg) {
    this._session = {
      connectionId: msg.connectionId,
      user: msg.user || null,
      authorizedChannels: Array.isArray(msg.authorizedChannels) ? msg.authorizedChannels : [],
    };
    this._sseFailures = 0;
    if (this._state === 'connected') return;
    const reconnected = this._everConnected;
    this._everConnected = true;
    this._attempt = 0;
    this._authRetried = false;
    this._log('connected over event streams', msg.connectionId);
    this._setState('connected');
    for (const item of this._buffer.splice(0)) {
      if (item.request) item.request.reject(new HeraldError('unsupported_transport', 'requests need the WebSocket transport'));
      else this._buffer.push(item);
    }
    this._emit('connected', { reconnected, ...this._session });
  }

  /**
   * A stream failed. Before its `connected`: find out why (a refused token
   * fails like close 4001; a refused channel fails that subscription only);
   * otherwise every stream is closed and the client reconnects with backoff.
   */
  async _onStreamError(stream) {
    if (!this._streams.includes(stream)) return; // replaced or closed meanwhile
    const opened = stream.opened;
    this._closeStream(stream);
    if (!opened) {
      const generation = this._generation;
      const refusal = await this._streamRefusal(stream.url);
      if (generation !== this._generation || !this._streams.includes(stream)) return;
      if (refusal && refusal.status === 401) {
        const wasConnected = this._state === 'connected';
        this._closeStreams();
        this._session = null;
        if (wasConnected) this._emit('disconnected', { code: CLOSE_UNAUTHORIZED, reason: refusal.message, intentional: false });
        this._lastError = { type: 'error', code: 'unauthorized', message: refusal.message };
        this._onUnauthorized(refusal.message);
        return;
      }
      if (refusal && (refusal.status === 403 || refusal.status === 400)) {
        const channel = stream.channels.find((c) => refusal.message.endsWith(`: ${c}`)) ||
                        (stream.channels.length === 1 ? stream.channels[0] : null);
        if (channel) {
          this._refuseChannel(channel, refusal);
          this._streams = this._streams.filter((st) => st !== stream);
          if (this._state === 'connected') this._reopenStreams();
          else this._openStreams();
          return;
        }
      }
      this._sseFailures++;
    }
    const wasConnected = this._state === 'connected';
    this._closeStreams();
    this._session = null;
    this._log('event stream closed');
    if (wasConnected) this._emit('disconnected', { code: 1006, reason: 'event stream closed', intentional: false });
    if (this._state === 'disconnected' || this._state === 'failed') return;
    this._scheduleReconnect();
  }

  /** The status and text of a refused stream request, or null (it works, or the network fails). */
  async _streamRefusal(url) {
    if (!this._fetch) return null;
    const abort = typeof AbortController === 'function' ? new AbortController() : null;
    try {
      const res = await this._fetch(url, { headers: { Accept: 'text/event-stream' }, cache: 'no-store',
                                           signal: abort ? abort.signal : undefined });
      if (res.status === 200) return null;
      const text = (await res.text()).trim().slice(0, 500);
      return { status: res.status, message: text || `HTTP ${res.status}` };
    } catch {
      return null;
    } finally {
      if (abort) abort.abort();
    }
  }

  /** The gateway refused to stream a channel: that subscription fails like an error reply. */
  _refuseChannel(channel, refusal) {
    const entry = this._subs.get(channel);
    if (!entry) return;
    this._subs.delete(channel);
    const code = refusal.status === 403 ? 'forbidden' : 'invalid_channel';
    const err = new HeraldError(code, refusal.message);
    if (entry.reject) { entry.reject(err); entry.resolve = entry.reject = null; }
    this._emit('error', { type: 'error', code, message: refusal.message, channel });
  }

  _closeStream(stream) {
    const es = stream.es;
    stream.es = null;
    if (!es) return;
    es.onmessage = null;
    es.onerror = null;
    try { es.close(); } catch { /* ignore */ }
  }

  _closeStreams() {
    for (const stream of this._streams) this._closeStream(stream);
    this._streams = [];
  }

  // ---- probing WebSocket while on event streams ---------------------------------

  _scheduleProbe() {
    this._stopProbe();
    if (!(this.options.probeInterval > 0)) return;
    this._probeTimer = setTimeout(() => {
      this._probeTimer = null;
      this._probeWebSocket();
    }, this.options.probeInterval);
  }

  _stopProbe() {
    if (this._probeTimer) clearTimeout(this._probeTimer);
    this._probeTimer = null;
    const ws = this._probeWs;
    this._probeWs = null;
    if (ws) {
      ws.onmessage = ws.onclose = ws.onerror = null;
      try { ws.close(1000, 'probe'); } catch { /* ignore */ }
    }
  }

  /** Tries WebSocket; when it reaches `connected`, it becomes the connection and the streams close. */
  async _probeWebSocket() {
    if (this._transport !== 'sse' || this._state === 'disconnected' || this._state === 'failed') return;
    const generation = this._generation;
    let token;
    try { token = await this._fetchToken(); } catch { token = undefined; }
    if (generation !== this._generation || this._transport !== 'sse') return;
    let ws;
    try {
      ws = token ? new this._WebSocket(this.url, [`token-${token}`]) : new this._WebSocket(this.url);
    } catch {
      this._scheduleProbe();
      return;
    }
    this._log('probing WebSocket');
    this._probeWs = ws;
    ws.onmessage = (ev) => {
      if (this._probeWs !== ws) return;
      const msg = typeof ev.data === 'string' ? parseMessage(ev.data) : undefined;
      if (!msg || msg.type !== 'connected') return;
      this._probeWs = null;
      this._adoptWebSocket(ws, token, msg);
    };
    ws.onclose = () => {
      if (this._probeWs !== ws) return;
      this._probeWs = null;
      this._log('WebSocket probe failed');
      this._scheduleProbe();
    };
    ws.onerror = () => {};
  }

  _adoptWebSocket(ws, token, connected) {
    this._log('WebSocket works again: leaving the event streams');
    this._closeStreams();
    this._clearReconnect();
    this._setTransport('websocket', 'WebSocket probe connected');
    this._token = token || null;
    this._lastError = null;
    this._ws = ws;
    ws.onmessage = (ev) => { if (this._ws === ws) this._onMessage(ev.data); };
    ws.onclose = (ev) => { if (this._ws === ws) this._onClose(ev.code, ev.reason); };
    ws.onerror = () => this._log('socket error');
    this._dispatch(connected);
  }

  // ---- environment, state and events ---------------------------------------

  _listen(on) {
    const method = on ? 'addEventListener' : 'removeEventListener';
    if (this._window && typeof this._window[method] === 'function') {
      this._window[method]('online', this._onOnline);
      this._window[method]('offline', this._onOffline);
    }
    if (this._document && typeof this._document[method] === 'function') {
      this._document[method]('visibilitychange', this._onVisibility);
    }
  }

  _isOffline() {
    return !!this._navigator && this._navigator.onLine === false;
  }

  _isHidden() {
    return !!this._document && this._document.visibilityState === 'hidden';
  }

  _setState(state, reason = null) {
    if (state === this._state) return;
    const previous = this._state;
    this._state = state;
    this._log('state', previous, '->', state, reason ? `(${reason})` : '');
    this._emit('stateChange', { state, previous, reason });
  }

  _emit(event, payload) {
    const set = this._listeners.get(event);
    if (!set) return;
    for (const listener of [...set]) {
      try { listener(payload); } catch (err) { this._log(`${event} listener threw:`, err); }
    }
  }

  _log(...args) {
    if (!this.options.debug) return;
    if (typeof this.options.debug === 'function') this.options.debug('[Herald]', ...args);
    else console.log('[Herald]', ...args);
  }
}

export default Herald;
