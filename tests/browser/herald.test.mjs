// Unit tests of web/herald.js against a fake WebSocket and mocked timers
// (node --test). No network, no browser.
import { test, beforeEach, afterEach, mock } from 'node:test';
import assert from 'node:assert/strict';
import { Herald, HeraldError, backoffDelay, compareOffsets, parseMessage } from '../../web/herald.js';

/** A scripted stand-in for the browser's WebSocket; every instance is kept. */
class FakeSocket {
  static all = [];
  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.sent = [];
    this.closedWith = null;
    this.onmessage = this.onclose = this.onerror = null;
    FakeSocket.all.push(this);
  }
  send(text) { this.sent.push(JSON.parse(text)); }
  close(code, reason) { this.closedWith = { code, reason }; }
  /** The gateway sends a message. */
  receive(msg) { this.onmessage?.({ data: typeof msg === 'string' ? msg : JSON.stringify(msg) }); }
  /** The gateway accepts the connection. */
  accept(extra = {}) {
    this.receive({ type: 'connected', connectionId: `c${FakeSocket.all.indexOf(this)}`,
                   user: { userId: 'u1', email: null, role: 'admin' },
                   authorizedChannels: ['apps:created', 'announcements'], ...extra });
  }
  /** The connection ends (server close or network loss). */
  drop(code = 1006, reason = '') { this.onclose?.({ code, reason }); }
  sentOfType(type) { return this.sent.filter((m) => m.type === type); }
}

const last = () => FakeSocket.all[FakeSocket.all.length - 1];
/** Lets promise callbacks (getToken, replies) run. */
const flush = async () => { for (let i = 0; i < 10; i++) await Promise.resolve(); };

/** An online/offline + visibility environment the client listens to. */
function fakeEnvironment() {
  const window = new EventTarget();
  const document = new EventTarget();
  document.visibilityState = 'visible';
  const navigator = { onLine: true };
  return { window, document, navigator };
}

function client(options = {}) {
  return new Herald('ws://gw.test/ws', {
    WebSocket: FakeSocket, ...fakeEnvironment(), random: () => 0.5, token: 'tok-1', ...options,
  });
}

/** A client that is connected on its first socket. */
async function connected(options = {}) {
  const h = client(options);
  h.connect();
  await flush();
  last().accept();
  return h;
}

beforeEach(() => {
  FakeSocket.all = [];
  mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
});
afterEach(() => mock.timers.reset());

// ---- backoff ----------------------------------------------------------------

test('backoff delay is full jitter under min(30 s, 1 s * 2^attempt)', () => {
  const top = () => 0.999999;
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6, 10].map((n) => backoffDelay(n, 1000, 30000, top)),
                   [999, 1999, 3999, 7999, 15999, 29999, 29999, 29999]);
  assert.equal(backoffDelay(3, 1000, 30000, () => 0), 0);
  assert.equal(backoffDelay(2, 1000, 30000, () => 0.25), 1000);
  // defaults are base 1 s and cap 30 s
  assert.equal(backoffDelay(0, undefined, undefined, top), 999);
  assert.equal(backoffDelay(20, undefined, undefined, top), 29999);
});

test('reconnect waits exactly the jittered delay of each attempt', async () => {
  const delays = [];
  const h = await connected({ random: () => 0.5 });
  h.on('reconnectAttempt', ({ attempt, delay }) => delays.push([attempt, delay]));
  const expected = [500, 1000, 2000, 4000, 8000, 15000, 15000];
  for (const delay of expected) {
    const before = FakeSocket.all.length;
    last().drop(1006);
    assert.equal(h.state, 'reconnecting');
    mock.timers.tick(delay - 1);
    await flush();
    assert.equal(FakeSocket.all.length, before, `no socket before ${delay} ms`);
    mock.timers.tick(1);
    await flush();
    assert.equal(FakeSocket.all.length, before + 1, `a socket after ${delay} ms`);
  }
  assert.deepEqual(delays, expected.map((d, i) => [i + 1, d]));
});

test('a successful connect resets the backoff to the first step', async () => {
  const h = await connected();
  const delays = [];
  h.on('reconnectAttempt', ({ delay }) => delays.push(delay));
  for (let i = 0; i < 3; i++) { last().drop(); mock.timers.tick(10000); await flush(); }
  last().accept();
  last().drop();
  assert.deepEqual(delays, [500, 1000, 2000, 500]);
});

test('maxAttempts used up: state failed and reconnectFailed, no further sockets', async () => {
  const h = await connected({ maxAttempts: 2 });
  const failed = [];
  h.on('reconnectFailed', (e) => failed.push(e));
  last().drop();
  mock.timers.tick(60000); await flush();
  last().drop();
  mock.timers.tick(60000); await flush();
  assert.equal(FakeSocket.all.length, 3);
  last().drop();
  assert.equal(h.state, 'failed');
  assert.deepEqual(failed, [{ attempts: 2 }]);
  mock.timers.tick(600000); await flush();
  assert.equal(FakeSocket.all.length, 3);
});

test('maxAttempts defaults to unlimited', async () => {
  const h = await connected();
  for (let i = 0; i < 50; i++) { last().drop(); mock.timers.tick(30000); await flush(); }
  assert.equal(FakeSocket.all.length, 51);
  assert.equal(h.state, 'reconnecting');
});

// ---- offline / hidden -----------------------------------------------------

test('offline pauses reconnecting; online resumes at once', async () => {
  const env = fakeEnvironment();
  const h = await connected(env);
  env.navigator.onLine = false;
  env.window.dispatchEvent(new Event('offline'));
  last().drop();
  assert.equal(h.state, 'reconnecting');
  mock.timers.tick(120000); await flush();
  assert.equal(FakeSocket.all.length, 1, 'no attempt while offline');
  env.navigator.onLine = true;
  env.window.dispatchEvent(new Event('online'));
  mock.timers.tick(0); await flush();
  assert.equal(FakeSocket.all.length, 2, 'attempt at once when online');
});

test('going offline cancels an already scheduled reconnect', async () => {
  const env = fakeEnvironment();
  await connected({ ...env, random: () => 0.99 });
  last().drop();
  env.navigator.onLine = false;
  env.window.dispatchEvent(new Event('offline'));
  mock.timers.tick(120000); await flush();
  assert.equal(FakeSocket.all.length, 1);
});

test('a hidden tab pauses reconnecting; visible resumes at once', async () => {
  const env = fakeEnvironment();
  const h = await connected(env);
  const attempts = [];
  h.on('reconnectAttempt', (e) => attempts.push(e));
  env.document.visibilityState = 'hidden';
  env.document.dispatchEvent(new Event('visibilitychange'));
  assert.equal(h.state, 'connected', 'hiding does not close a live connection');
  last().drop();
  mock.timers.tick(120000); await flush();
  assert.equal(FakeSocket.all.length, 1);
  env.document.visibilityState = 'visible';
  env.document.dispatchEvent(new Event('visibilitychange'));
  mock.timers.tick(0); await flush();
  assert.equal(FakeSocket.all.length, 2);
  assert.deepEqual(attempts, [{ attempt: 1, delay: 0 }]);
});

// ---- tokens ---------------------------------------------------------------

test('getToken is called before every connect and reconnect, and sent as subprotocol', async () => {
  let n = 0;
  const h = client({ token: undefined, getToken: async () => `jwt-${++n}` });
  h.connect();
  await flush();
  assert.deepEqual(last().protocols, ['token-jwt-1']);
  last().accept();
  last().drop();
  mock.timers.tick(1000); await flush();
  assert.deepEqual(last().protocols, ['token-jwt-2']);
  last().drop();
  mock.timers.tick(2000); await flush();
  assert.deepEqual(last().protocols, ['token-jwt-3']);
  assert.equal(n, 3);
});

test('no token: anonymous connection without subprotocol', async () => {
  const h = client({ token: undefined });
  h.connect();
  await flush();
  assert.equal(last().protocols, undefined);
});

test('4001 without a new token: state failed with the gateway reason, no retry', async () => {
  const h = client({ token: 'bad' });
  const states = [];
  h.onStateChange((s, prev, reason) => states.push([s, reason]));
  h.connect();
  await flush();
  last().receive({ type: 'error', code: 'unauthorized', message: 'invalid signature' });
  last().drop(4001, 'invalid signature');
  await flush();
  assert.equal(h.state, 'failed');
  assert.equal(h.failureReason, 'invalid signature');
  assert.deepEqual(states.at(-1), ['failed', 'invalid signature']);
  mock.timers.tick(600000); await flush();
  assert.equal(FakeSocket.all.length, 1, 'no retry loop');
});

test('4001 when getToken returns the same token: failed, no retry', async () => {
  const h = client({ token: undefined, getToken: () => 'same' });
  h.connect();
  await flush();
  last().drop(4001, 'token expired');
  await flush();
  assert.equal(h.state, 'failed');
  assert.equal(h.failureReason, 'token expired');
  mock.timers.tick(600000); await flush();
  assert.equal(FakeSocket.all.length, 1);
});

test('4001 with a new token from getToken: one immediate retry, then failed if refused again', async () => {
  let n = 0;
  const h = client({ token: undefined, getToken: () => `t${++n}` });
  h.connect();
  await flush();
  last().drop(4001, 'token expired');
  await flush();
  assert.equal(FakeSocket.all.length, 2);
  assert.deepEqual(last().protocols, ['token-t2']);
  last().drop(4001, 'invalid signature');
  await flush();
  assert.equal(h.state, 'failed');
  mock.timers.tick(600000); await flush();
  assert.equal(FakeSocket.all.length, 2);
});

test('getToken throwing counts as a failed attempt and is retried with backoff', async () => {
  let calls = 0;
  const h = client({ token: undefined, getToken: async () => { if (++calls === 1) throw new Error('auth down'); return 'ok'; } });
  h.connect();
  await flush();
  assert.equal(FakeSocket.all.length, 0);
  assert.equal(h.state, 'reconnecting');
  mock.timers.tick(500); await flush();
  assert.equal(FakeSocket.all.length, 1);
  assert.deepEqual(last().protocols, ['token-ok']);
});

// ---- states and events ----------------------------------------------------

test('states and events through connect, drop, reconnect and disconnect', async () => {
  const h = client();
  const log = [];
  h.onStateChange((s) => log.push(s));
  h.on('connected', (e) => log.push(`connected reconnected=${e.reconnected}`));
  h.on('disconnected', (e) => log.push(`disconnected ${e.code}`));
  h.on('reconnectAttempt', (e) => log.push(`attempt ${e.attempt}`));
  h.connect();
  await flush();
  last().accept();
  assert.equal(h.connectionId, 'c0');
  assert.equal(h.user.userId, 'u1');
  last().drop(1001, 'going away');
  mock.timers.tick(500); await flush();
  last().accept();
  h.disconnect();
  assert.deepEqual(log, ['connecting', 'connected', 'connected reconnected=false',
    'disconnected 1001', 'reconnecting', 'attempt 1', 'connected', 'connected reconnected=true',
    'disconnected', 'disconnected 1000']);
});

test('connect() is idempotent', async () => {
  const h = client();
  h.connect(); h.connect();
  await flush();
  h.connect();
  assert.equal(FakeSocket.all.length, 1);
  last().accept();
  h.connect();
  assert.equal(FakeSocket.all.length, 1);
});

test('disconnect() closes with 1000 and stops reconnecting', async () => {
  const h = await connected();
  const ws = last();
  ws.drop();
  h.disconnect();
  assert.equal(h.state, 'disconnected');
  mock.timers.tick(600000); await flush();
  assert.equal(FakeSocket.all.length, 1);
  const h2 = await connected();
  const ws2 = last();
  h2.disconnect();
  assert.deepEqual(ws2.closedWith, { code: 1000, reason: 'client disconnect' });
});

test('disconnect() during getToken: no socket is opened afterwards', async () => {
  let release;
  const h = client({ token: undefined, getToken: () => new Promise((r) => { release = r; }) });
  h.connect();
  await flush();
  h.disconnect();
  release('late');
  await flush();
  assert.equal(FakeSocket.all.length, 0);
  assert.equal(h.state, 'disconnected');
});

// ---- heartbeat --------------------------------------------------------------

test('heartbeat pings every 25 s and stays up while pongs come back', async () => {
  const h = await connected();
  const ws = last();
  mock.timers.tick(24999);
  assert.equal(ws.sentOfType('ping').length, 0);
  mock.timers.tick(1);
  assert.equal(ws.sentOfType('ping').length, 1);
  ws.receive({ type: 'pong' });
  mock.timers.tick(25000);
  assert.equal(ws.sentOfType('ping').length, 2);
  ws.receive({ type: 'pong' });
  mock.timers.tick(10000);
  assert.equal(h.state, 'connected');
  assert.equal(FakeSocket.all.length, 1);
});

test('no pong within 5 s: the socket is closed and the client reconnects', async () => {
  const h = await connected();
  const ws = last();
  mock.timers.tick(25000);
  mock.timers.tick(4999);
  assert.equal(h.state, 'connected');
  mock.timers.tick(1);
  assert.equal(h.state, 'reconnecting');
  assert.equal(ws.closedWith.code, 4000);
  mock.timers.tick(500); await flush();
  assert.equal(FakeSocket.all.length, 2);
});

// ---- subscriptions ----------------------------------------------------------

test('subscribe resolves on the subscribed reply with its id, not on another id', async () => {
  const h = await connected();
  const ws = last();
  let settled = null;
  const sub = h.subscribe('apps:created', () => {});
  sub.then((m) => { settled = m; });
  const [req] = ws.sentOfType('subscribe');
  assert.equal(req.channel, 'apps:created');
  ws.receive({ type: 'subscribed', channel: 'apps:created', id: 'other' });
  await flush();
  assert.equal(settled, null);
  ws.receive({ type: 'subscribed', channel: 'apps:created', id: req.id });
  await flush();
  assert.equal(settled.type, 'subscribed');
  assert.equal(typeof sub, 'function');
});

test('subscribe rejects on an error with its id; handler removed, error event emitted', async () => {
  const h = await connected();
  const ws = last();
  const errors = [];
  h.on('error', (e) => errors.push(e));
  const sub = h.subscribe('system:alerts', () => {});
  const [req] = ws.sentOfType('subscribe');
  ws.receive({ type: 'error', code: 'forbidden', message: 'Not authorized', id: req.id });
  await assert.rejects(sub.ready, (err) => err instanceof HeraldError && err.code === 'forbidden');
  await assert.rejects(async () => { await sub; }, /Not authorized/);
  assert.deepEqual(h.channels, []);
  assert.equal(errors[0].channel, 'system:alerts');
});

test('events reach every handler of their channel only', async () => {
  const h = await connected();
  const got = [];
  h.subscribe('apps:created', (d) => got.push(['a1', d.n]));
  h.subscribe('apps:created', (d) => got.push(['a2', d.n]));
  h.subscribe('announcements', (d) => got.push(['b', d.n]));
  assert.equal(last().sentOfType('subscribe').length, 2, 'one subscribe per channel');
  last().receive({ type: 'event', channel: 'apps:created', data: { n: 1 } });
  last().receive({ type: 'event', channel: 'announcements', data: { n: 2 } });
  assert.deepEqual(got, [['a1', 1], ['a2', 1], ['b', 2]]);
});

test('the last handler unsubscribing tells the gateway and is not restored', async () => {
  const h = await connected();
  const got = [];
  const off1 = h.subscribe('apps:created', () => got.push(1));
  const off2 = h.subscribe('apps:created', () => got.push(2));
  off1();
  assert.equal(last().sentOfType('unsubscribe').length, 0);
  off2();
  assert.deepEqual(last().sentOfType('unsubscribe'), [{ type: 'unsubscribe', channel: 'apps:created' }]);
  last().receive({ type: 'event', channel: 'apps:created', data: {} });
  assert.deepEqual(got, []);
  last().drop();
  mock.timers.tick(500); await flush();
  last().accept();
  assert.equal(last().sentOfType('subscribe').length, 0);
});

test('every subscription is restored after a reconnect and keeps its handler', async () => {
  const h = await connected();
  const got = [];
  h.subscribe('apps:created', (d) => got.push(d.n));
  h.subscribe('user:u1', () => {});
  last().drop(1001);
  mock.timers.tick(500); await flush();
  const ws = last();
  assert.equal(ws.sentOfType('subscribe').length, 0, 'nothing sent before the connected message');
  ws.accept();
  assert.deepEqual(ws.sentOfType('subscribe').map((m) => m.channel).sort(), ['apps:created', 'user:u1']);
  ws.receive({ type: 'event', channel: 'apps:created', data: { n: 7 } });
  assert.deepEqual(got, [7]);
});

test('subscribe while disconnected is sent on connect and resolves then', async () => {
  const h = client();
  let ok = false;
  h.subscribe('apps:created', () => {}).then(() => { ok = true; });
  h.connect();
  await flush();
  last().accept();
  const [req] = last().sentOfType('subscribe');
  last().receive({ type: 'subscribed', channel: 'apps:created', id: req.id });
  await flush();
  assert.ok(ok);
});

test('a subscription whose reply was lost in a drop resolves after the reconnect', async () => {
  const h = await connected();
  let ok = false;
  h.subscribe('apps:created', () => {}).then(() => { ok = true; });
  last().drop();
  mock.timers.tick(500); await flush();
  last().accept();
  const [req] = last().sentOfType('subscribe');
  last().receive({ type: 'subscribed', channel: 'apps:created', id: req.id });
  await flush();
  assert.ok(ok);
});

test('a refused resubscription after reconnect drops the channel and emits error', async () => {
  const h = await connected();
  h.subscribe('system:alerts', () => {});
  last().drop();
  mock.timers.tick(500); await flush();
  const errors = [];
  h.on('error', (e) => errors.push(e));
  last().accept();
  const [req] = last().sentOfType('subscribe');
  last().receive({ type: 'error', code: 'forbidden', message: 'no', id: req.id });
  assert.deepEqual(h.channels, []);
  assert.equal(errors.length, 1);
  assert.equal(errors[0].code, 'forbidden');
});

// ---- recovery -------------------------------------------------------------------

/** Answers the newest subscribe for channel on ws with a subscribed reply. */
function answerSubscribe(ws, channel, extra = {}) {
  const req = ws.sentOfType('subscribe').filter((m) => m.channel === channel).at(-1);
  ws.receive({ type: 'subscribed', channel, id: req.id, ...extra });
  return req;
}
const event = (channel, offset, n) => ({ type: 'event', channel, data: { n }, offset });

/** Drops the socket and lets the client reconnect on a new one (not yet accepted). */
async function dropAndReconnect() {
  last().drop(1006);
  mock.timers.tick(30000);
  await flush();
  return last();
}

test('compareOffsets orders offsets as two 64-bit numbers, NaN for anything else', () => {
  assert.ok(compareOffsets('1733150000000-0', '1733150000000-1') < 0);
  assert.ok(compareOffsets('1733150000001-0', '1733150000000-9') > 0);
  assert.ok(compareOffsets('99-0', '100-0') < 0, 'not a string comparison');
  assert.ok(compareOffsets('5-10', '5-9') > 0);
  assert.equal(compareOffsets('18446744073709551615-18446744073709551615', '18446744073709551615-18446744073709551615'), 0);
  assert.ok(compareOffsets('18446744073709551614-0', '18446744073709551615-0') < 0, 'beyond 2^53');
  assert.equal(compareOffsets('007-1', '7-1'), 0);
  assert.ok(Number.isNaN(compareOffsets('x', '1-0')));
  assert.ok(Number.isNaN(compareOffsets('1-0', '1')));
});

test('the first subscribe has no since; after a forced disconnect it resubscribes with since and drops repeats', async () => {
  const h = await connected();
  const got = [];
  const flags = [];
  const recovered = [];
  h.on('recovered', (e) => recovered.push(e));
  h.subscribe('apps:created', (d, msg, info) => { got.push(d.n); flags.push(info.recovered); });
  h.subscribe('announcements', () => {});
  let ws = last();
  assert.deepEqual(ws.sentOfType('subscribe').map((m) => m.since), [undefined, undefined]);
  answerSubscribe(ws, 'apps:created', { offset: '100-0', epoch: '1733149000123456' });
  answerSubscribe(ws, 'announcements', { offset: null, epoch: null });
  assert.deepEqual(h.position('apps:created'), { offset: '100-0', epoch: '1733149000123456' });
  ws.receive(event('apps:created', '101-0', 1));
  ws.receive(event('apps:created', '102-0', 2));
  ws.receive(event('apps:created', '102-0', 2)); // a repeat on the same connection
  assert.deepEqual(h.position('apps:created'), { offset: '102-0', epoch: '1733149000123456' });

  ws = await dropAndReconnect();
  ws.accept();
  const bySince = Object.fromEntries(ws.sentOfType('subscribe').map((m) => [m.channel, m.since]));
  assert.deepEqual(bySince, { 'apps:created': { offset: '102-0', epoch: '1733149000123456' },
                              announcements: undefined }, 'no since for a channel without a known epoch');
  answerSubscribe(ws, 'apps:created', { offset: '104-0', epoch: '1733149000123456', recovered: true });
  ws.receive(event('apps:created', '101-0', 1)); // repeats, e.g. from an overlapping read
  ws.receive(event('apps:created', '102-0', 2));
  ws.receive(event('apps:created', '103-0', 3));
  assert.deepEqual(recovered, [], 'recovery not complete before the newest offset arrived');
  ws.receive(event('apps:created', '104-0', 4));
  ws.receive(event('apps:created', '105-0', 5));
  assert.deepEqual(got, [1, 2, 3, 4, 5]);
  assert.deepEqual(flags, [false, false, true, true, false]);
  assert.deepEqual(recovered, [{ channel: 'apps:created', events: 2 }]);
  assert.deepEqual(h.counters, { recovered: 2, duplicates: 3, gaps: 0 });
});

test('recovered with nothing missed: recovered fires with 0 events, no gap', async () => {
  const h = await connected();
  const recovered = [];
  const gaps = [];
  h.on('recovered', (e) => recovered.push(e));
  h.on('gap', (e) => gaps.push(e));
  h.subscribe('apps:created', () => {});
  answerSubscribe(last(), 'apps:created', { offset: '7-0', epoch: '11' });
  const ws = await dropAndReconnect();
  ws.accept();
  answerSubscribe(ws, 'apps:created', { offset: '7-0', epoch: '11', recovered: true });
  assert.deepEqual(recovered, [{ channel: 'apps:created', events: 0 }]);
  assert.deepEqual(gaps, []);
});

test('recovered:false is one gap per channel (the gap message after it is not repeated), and the position restarts', async () => {
  const h = await connected();
  const gaps = [];
  const onGap = [];
  const subscribed = [];
  const got = [];
  h.on('gap', (e) => gaps.push(e.channels));
  h.on('subscribed', (m) => subscribed.push([m.channel, m.recovered]));
  h.subscribe('apps:created', (d) => got.push(d.n), { onGap: (e) => onGap.push(e),
                                                       onSubscribed: (m) => subscribed.push(['hook', m.recovered]) });
  answerSubscribe(last(), 'apps:created', { offset: '500-0', epoch: '1' });
  last().receive(event('apps:created', '501-0', 1));
  const ws = await dropAndReconnect();
  ws.accept();
  assert.deepEqual(ws.sentOfType('subscribe')[0].since, { offset: '501-0', epoch: '1' });
  // the history was lost: another epoch whose offsets are lower than ours
  answerSubscribe(ws, 'apps:created', { offset: '20-0', epoch: '2', recovered: false });
  ws.receive({ type: 'gap', channels: ['apps:created'] });
  ws.receive(event('apps:created', '21-0', 2));
  assert.deepEqual(gaps, [['apps:created']]);
  assert.deepEqual(onGap, [{ channel: 'apps:created' }]);
  assert.deepEqual(got, [1, 2], 'an event of the new epoch is not taken for a repeat');
  assert.deepEqual(h.position('apps:created'), { offset: '21-0', epoch: '2' });
  assert.deepEqual(subscribed, [['apps:created', undefined], ['hook', undefined], ['apps:created', false], ['hook', false]]);
  // a later gap from the gateway (e.g. its Redis was replaced) is reported again
  ws.receive({ type: 'gap', channels: ['apps:created'] });
  assert.deepEqual(gaps, [['apps:created'], ['apps:created']]);
  assert.equal(h.counters.gaps, 2);
});

test('after a gap the next event is taken whatever its offset (offsets of a new epoch start over)', async () => {
  const h = await connected();
  const got = [];
  h.subscribe('apps:created', (d) => got.push(d.n));
  answerSubscribe(last(), 'apps:created', { offset: '900-0', epoch: '1' });
  last().receive({ type: 'gap', channels: ['apps:created', 'not:mine'] });
  last().receive(event('apps:created', '3-0', 1));
  last().receive(event('apps:created', '3-0', 1));
  last().receive(event('apps:created', '4-0', 2));
  assert.deepEqual(got, [1, 2]);
});

test('a channel without a known epoch is resubscribed afresh: a gap only when its history moved meanwhile or it carries raw events', async () => {
  const h = await connected();
  const gaps = [];
  h.on('gap', (e) => gaps.push(...e.channels));
  for (const c of ['idle:a', 'started:b', 'seen:c', 'raw:d']) h.subscribe(c, () => {});
  let ws = last();
  for (const c of ['idle:a', 'started:b', 'seen:c', 'raw:d']) answerSubscribe(ws, c, { offset: null, epoch: null });
  ws.receive(event('seen:c', '5-0', 1)); // history began while connected: the epoch is not on events
  ws.receive({ type: 'event', channel: 'raw:d', data: { n: 1 } });
  ws = await dropAndReconnect();
  ws.accept();
  assert.deepEqual(ws.sentOfType('subscribe').map((m) => m.since), [undefined, undefined, undefined, undefined]);
  answerSubscribe(ws, 'idle:a', { offset: null, epoch: null });               // still nothing: no gap
  answerSubscribe(ws, 'started:b', { offset: '9-0', epoch: '3' });            // history began while away: gap
  answerSubscribe(ws, 'seen:c', { offset: '5-0', epoch: '4' });               // nothing new: no gap
  answerSubscribe(ws, 'raw:d', { offset: null, epoch: null });                // raw events cannot be recovered: gap
  assert.deepEqual(gaps, ['started:b', 'raw:d']);
  assert.deepEqual(h.position('seen:c'), { offset: '5-0', epoch: '4' }, 'the epoch is known from now on');
  ws = await dropAndReconnect();
  ws.accept();
  assert.deepEqual(ws.sentOfType('subscribe').find((m) => m.channel === 'seen:c').since, { offset: '5-0', epoch: '4' });
});

test('history that begins after the subscription: a repeated subscribe learns its epoch, so the next reconnect recovers', async () => {
  const h = await connected();
  const got = [];
  h.subscribe('apps:created', (d) => got.push(d.n));
  let ws = last();
  answerSubscribe(ws, 'apps:created', { offset: null, epoch: null });
  ws.receive(event('apps:created', '5-0', 5));
  const probe = ws.sentOfType('subscribe');
  assert.equal(probe.length, 2, 'one subscribe asks for the epoch');
  ws.receive(event('apps:created', '6-0', 6)); // no second probe while one is in flight
  assert.equal(ws.sentOfType('subscribe').length, 2);
  // the reply may already count an event still on its way: only its epoch is taken
  ws.receive({ type: 'subscribed', channel: 'apps:created', id: probe[1].id, offset: '7-0', epoch: '3' });
  ws.receive(event('apps:created', '7-0', 7));
  assert.deepEqual(got, [5, 6, 7]);
  assert.deepEqual(h.position('apps:created'), { offset: '7-0', epoch: '3' });
  ws = await dropAndReconnect();
  ws.accept();
  assert.deepEqual(ws.sentOfType('subscribe').map((m) => m.since), [{ offset: '7-0', epoch: '3' }]);
});

test('history that begins after the subscription: the epoch comes with its events, no extra subscribe', async () => {
  const h = await connected();
  const got = [];
  h.subscribe('apps:created', (d) => got.push(d.n));
  let ws = last();
  answerSubscribe(ws, 'apps:created', { offset: null, epoch: null });
  ws.receive({ ...event('apps:created', '5-0', 5), epoch: '3' });
  ws.receive({ ...event('apps:created', '6-0', 6), epoch: '3' });
  assert.equal(ws.sentOfType('subscribe').length, 1, 'no subscribe to learn the epoch');
  assert.deepEqual(h.position('apps:created'), { offset: '6-0', epoch: '3' });
  // a new epoch (history lost and begun again): its lower offsets are not repeats
  ws.receive({ ...event('apps:created', '1-0', 7), epoch: '4' });
  assert.deepEqual(got, [5, 6, 7]);
  ws = await dropAndReconnect();
  ws.accept();
  assert.deepEqual(ws.sentOfType('subscribe').map((m) => m.since), [{ offset: '1-0', epoch: '4' }]);
});

test('on event streams the epoch of a channel comes from the stream id', async () => {
  const h = await onStreams({}, (c) => c.subscribe('apps:created', () => {}));
  const es = lastStream();
  es.open();
  es.subscribed('apps:created', { offset: null, epoch: null });
  const ev = { type: 'message', data: JSON.stringify({ type: 'event', channel: 'apps:created', data: {}, offset: '4-0' }),
               lastEventId: '77/4-0' };
  es.onmessage(ev);
  assert.deepEqual(h.position('apps:created'), { offset: '4-0', epoch: '77' });
});

test('events without an offset (raw PUBLISH) are never dropped', async () => {
  const h = await connected();
  const got = [];
  h.subscribe('announcements', (d) => got.push(d.n));
  answerSubscribe(last(), 'announcements', { offset: null, epoch: null });
  last().receive({ type: 'event', channel: 'announcements', data: { n: 1 } });
  last().receive({ type: 'event', channel: 'announcements', data: { n: 1 } });
  assert.deepEqual(got, [1, 1]);
});

test('subscribe with a stored since asks the gateway to recover from it on the first subscribe', async () => {
  const h = await connected();
  h.subscribe('apps:created', () => {}, { since: { offset: '42-0', epoch: '9' } });
  assert.deepEqual(last().sentOfType('subscribe')[0].since, { offset: '42-0', epoch: '9' });
  assert.deepEqual(h.position('apps:created'), { offset: '42-0', epoch: '9' });
  assert.equal(h.position('announcements'), null);
});

test('a channel unsubscribed and subscribed again starts afresh (no since)', async () => {
  const h = await connected();
  const off = h.subscribe('apps:created', () => {});
  answerSubscribe(last(), 'apps:created', { offset: '1-0', epoch: '1' });
  off();
  h.subscribe('apps:created', () => {});
  const subs = last().sentOfType('subscribe');
  assert.equal(subs.length, 2);
  assert.equal(subs[1].since, undefined);
});

// ---- Server-Sent Events fallback ---------------------------------------------------

/** A scripted stand-in for the browser's EventSource; every instance is kept. */
class FakeEventSource {
  static all = [];
  constructor(url) {
    this.url = url;
    this.closed = false;
    this.listeners = {};
    this.onmessage = this.onerror = null;
    FakeEventSource.all.push(this);
  }
  addEventListener(type, fn) { (this.listeners[type] ||= []).push(fn); }
  close() { this.closed = true; }
  /** The gateway sends a message under an event name ('message': unnamed). */
  emit(msg, event = 'message') {
    const ev = { type: event, data: JSON.stringify(msg), lastEventId: '' };
    if (event === 'message') this.onmessage?.(ev);
    for (const fn of this.listeners[event] || []) fn(ev);
  }
  /** The stream's head: `event: connected`. */
  open() {
    this.emit({ type: 'connected', connectionId: `s${FakeEventSource.all.indexOf(this)}`,
                user: { userId: 'u1', email: null, role: null },
                authorizedChannels: ['apps:created', 'apps:updated', 'announcements'] }, 'connected');
  }
  subscribed(channel, extra = {}) { this.emit({ type: 'subscribed', channel, ...extra }, 'subscribed'); }
  fail() { this.onerror?.({ type: 'error' }); }
  get channels() { return new URL(this.url).searchParams.getAll('channel'); }
  param(name) { return new URL(this.url).searchParams.get(name); }
}
const lastStream = () => FakeEventSource.all[FakeEventSource.all.length - 1];
const openStreams = () => FakeEventSource.all.filter((es) => !es.closed);

/** A fetch that answers /healthz with health.status and /events with events(url). */
function fakeFetch(health = { status: 200 }, events = () => ({ status: 200 })) {
  const calls = [];
  const fetch = async (url) => {
    calls.push(String(url));
    const reply = new URL(url).pathname === '/healthz' ? health : events(String(url));
    if (reply.throws) throw new TypeError('Failed to fetch');
    return { ok: reply.status >= 200 && reply.status < 300, status: reply.status,
             text: async () => reply.body || '' };
  };
  fetch.calls = calls;
  return fetch;
}

/** A client whose WebSocket never connects, on event streams after fallbackAfter attempts. */
async function onStreams(options = {}, subscribe = (h) => h.subscribe('apps:created', () => {})) {
  const fetch = options.fetch || fakeFetch();
  const h = client({ EventSource: FakeEventSource, fetch, fallbackAfter: 2, ...options });
  subscribe(h);
  h.connect();
  await flush();
  for (let i = 0; i < 2; i++) {
    last().drop(1006);
    mock.timers.tick(30000);
    await flush();
  }
  mock.timers.tick(0);
  await flush();
  return h;
}

beforeEach(() => { FakeEventSource.all = []; });

test('WebSocket failing fallbackAfter times while /healthz answers: event streams, transport sse', async () => {
  const fetch = fakeFetch();
  const h = client({ EventSource: FakeEventSource, fetch, fallbackAfter: 3 });
  const transports = [];
  const got = [];
  h.on('transport', (e) => transports.push([e.previous, e.transport]));
  const sub = h.subscribe('apps:created', (d) => got.push(d.n));
  h.subscribe('announcements', () => {});
  h.connect();
  await flush();
  assert.equal(h.transport, 'websocket');
  for (let i = 0; i < 2; i++) { last().drop(1006); mock.timers.tick(30000); await flush(); }
  assert.deepEqual(fetch.calls, [], 'no HTTP check before fallbackAfter failures');
  last().drop(1006);
  await flush();
  mock.timers.tick(0); await flush();
  assert.deepEqual(fetch.calls, ['http://gw.test/healthz']);
  assert.equal(h.transport, 'sse');
  assert.deepEqual(transports, [['websocket', 'sse']]);
  assert.equal(FakeEventSource.all.length, 1);
  const es = lastStream();
  assert.equal(new URL(es.url).pathname, '/events');
  assert.deepEqual(es.channels, ['apps:created', 'announcements']);
  assert.equal(es.param('token'), 'tok-1');
  assert.equal(es.param('lastEventId'), null, 'a fresh stream asks for no recovery');
  assert.equal(h.state, 'reconnecting');
  es.open();
  assert.equal(h.state, 'connected');
  assert.equal(h.connectionId, 's0');
  es.subscribed('apps:created', { offset: '10-0', epoch: '5' });
  es.subscribed('announcements', { offset: null, epoch: null });
  assert.equal((await sub).channel, 'apps:created');
  es.emit({ type: 'event', channel: 'apps:created', data: { n: 1 }, offset: '11-0' });
  es.emit({ type: 'event', channel: 'apps:created', data: { n: 1 }, offset: '11-0' });
  assert.deepEqual(got, [1]);
  assert.deepEqual(h.position('apps:created'), { offset: '11-0', epoch: '5' });
});

test('no fallback while plain HTTP fails too: WebSocket keeps retrying with backoff', async () => {
  const fetch = fakeFetch({ throws: true });
  const h = await onStreams({ fetch });
  assert.ok(fetch.calls.length >= 1);
  assert.equal(h.transport, 'websocket');
  assert.equal(FakeEventSource.all.length, 0);
  mock.timers.tick(30000); await flush();
  assert.equal(FakeSocket.all.length, 3, 'the next WebSocket attempt after its backoff delay');
  assert.equal(h.state, 'reconnecting');
});

test('fallback: false never opens event streams', async () => {
  const fetch = fakeFetch();
  const h = await onStreams({ fetch, fallback: false });
  assert.deepEqual(fetch.calls, []);
  assert.equal(h.transport, 'websocket');
  assert.equal(FakeEventSource.all.length, 0);
});

test('subscribe and unsubscribe on event streams reopen the stream recovering from the last offsets', async () => {
  const got = [];
  let offCreated;
  const h = await onStreams({}, (c) => { offCreated = c.subscribe('apps:created', (d) => got.push(['c', d.n])); });
  let es = lastStream();
  es.open();
  es.subscribed('apps:created', { offset: '10-0', epoch: '5' });
  es.emit({ type: 'event', channel: 'apps:created', data: { n: 11 }, offset: '11-0' });
  const upd = h.subscribe('apps:updated', (d) => got.push(['u', d.n]));
  h.subscribe('announcements', (d) => got.push(['a', d.n]));
  await flush();
  assert.equal(es.closed, true, 'the old stream is closed');
  assert.equal(openStreams().length, 1, 'one stream for the new set (two subscribes, one reopen)');
  es = lastStream();
  assert.deepEqual(es.channels, ['apps:created', 'apps:updated', 'announcements']);
  assert.equal(es.param('lastEventId'), '5/11-0', 'positions for the known channels, new ones after them');
  es.open();
  assert.equal(h.state, 'connected');
  es.subscribed('apps:created', { offset: '12-0', epoch: '5', recovered: true });
  es.subscribed('apps:updated', { offset: null, epoch: '7' });
  es.subscribed('announcements', { offset: null, epoch: null });
  await upd;
  es.emit({ type: 'event', channel: 'apps:created', data: { n: 11 }, offset: '11-0' }); // a repeat
  es.emit({ type: 'event', channel: 'apps:created', data: { n: 12 }, offset: '12-0' }); // missed while reopening
  es.emit({ type: 'event', channel: 'apps:updated', data: { n: 1 }, offset: '1-0' });
  es.emit({ type: 'event', channel: 'announcements', data: { n: 2 } });
  assert.deepEqual(got, [['c', 11], ['c', 12], ['u', 1], ['a', 2]]);
  assert.equal(h.counters.recovered, 1);
  offCreated();
  await flush();
  assert.equal(es.closed, true);
  es = lastStream();
  assert.equal(es.param('lastEventId'), '7/1-0', 'a channel without a known epoch comes after, subscribed afresh');
  assert.deepEqual(es.channels, ['apps:updated', 'announcements']);
});

test('a dropped stream reconnects with backoff, a fresh token and the positions as lastEventId', async () => {
  let n = 0;
  const h = await onStreams({ token: undefined, getToken: () => `t${++n}` });
  const events = [];
  h.on('disconnected', (e) => events.push(e.code));
  let es = lastStream();
  const first = es.param('token');
  es.open();
  es.subscribed('apps:created', { offset: '3-0', epoch: '9' });
  es.fail();
  await flush();
  assert.equal(es.closed, true, 'closed: no automatic EventSource reconnect with a stale token');
  assert.equal(h.state, 'reconnecting');
  assert.deepEqual(events, [1006]);
  mock.timers.tick(30000); await flush();
  es = lastStream();
  assert.equal(FakeEventSource.all.length, 2);
  assert.notEqual(es.param('token'), first);
  assert.equal(es.param('lastEventId'), '9/3-0');
  es.open();
  assert.equal(h.state, 'connected');
});

test('a stream refused with 401 fails like a refused token; a 403 fails only that channel', async () => {
  const refused = new Set(['system:alerts']);
  const fetch = fakeFetch({ status: 200 }, (url) => {
    const channels = new URL(url).searchParams.getAll('channel');
    const bad = channels.find((c) => refused.has(c));
    return bad ? { status: 403, body: `Not authorized: ${bad}` } : { status: 200 };
  });
  const errors = [];
  let alerts;
  const h = await onStreams({ fetch }, (c) => {
    c.subscribe('apps:created', () => {});
    alerts = c.subscribe('system:alerts', () => {});
  });
  h.on('error', (e) => errors.push([e.code, e.channel]));
  let es = lastStream();
  assert.deepEqual(es.channels, ['apps:created', 'system:alerts']);
  es.fail(); // refused before streaming
  await flush();
  await assert.rejects(alerts.ready, (e) => e.code === 'forbidden');
  assert.deepEqual(errors, [['forbidden', 'system:alerts']]);
  es = lastStream();
  assert.deepEqual(es.channels, ['apps:created'], 'reopened without the refused channel');
  es.open();
  assert.equal(h.state, 'connected');

  const fetch401 = fakeFetch({ status: 200 }, () => ({ status: 401, body: 'Invalid signature' }));
  const h2 = await onStreams({ fetch: fetch401 });
  lastStream().fail();
  await flush();
  assert.equal(h2.state, 'failed');
  assert.equal(h2.failureReason, 'Invalid signature');
  const count = FakeEventSource.all.length;
  mock.timers.tick(600000); await flush();
  assert.equal(FakeEventSource.all.length, count, 'no retry loop');
});

test('more channels than sseMaxChannels are spread over several streams', async () => {
  const h = await onStreams({ sseMaxChannels: 2 }, (c) => {
    for (const ch of ['a:1', 'a:2', 'a:3']) c.subscribe(ch, () => {});
  });
  assert.deepEqual(openStreams().map((es) => es.channels), [['a:1', 'a:2'], ['a:3']]);
  openStreams()[0].open();
  assert.equal(h.state, 'connected');
  h.subscribe('a:4', () => {});
  await flush();
  assert.deepEqual(openStreams().map((es) => es.channels), [['a:1', 'a:2'], ['a:3', 'a:4']],
                   'only the stream whose set changed is reopened');
});

test('requests on event streams reject with unsupported_transport', async () => {
  const h = await onStreams();
  const buffered = h.stats();
  lastStream().open();
  await assert.rejects(buffered, (e) => e.code === 'unsupported_transport');
  await assert.rejects(h.listChannels(), (e) => e.code === 'unsupported_transport');
});

test('on event streams WebSocket is probed every probeInterval; when it connects it takes over with since', async () => {
  const h = await onStreams({ probeInterval: 60000 });
  const transports = [];
  const got = [];
  h.on('transport', (e) => transports.push(e.transport));
  h.subscribe('apps:created', (d) => got.push(d.n));
  const es = lastStream();
  es.open();
  es.subscribed('apps:created', { offset: '20-0', epoch: '4' });
  es.emit({ type: 'event', channel: 'apps:created', data: { n: 21 }, offset: '21-0' });
  const sockets = FakeSocket.all.length;
  mock.timers.tick(59999); await flush();
  assert.equal(FakeSocket.all.length, sockets);
  mock.timers.tick(1); await flush();
  assert.equal(FakeSocket.all.length, sockets + 1, 'a probe socket');
  last().drop(1006); // the probe fails: streams stay, another probe later
  await flush();
  assert.equal(h.transport, 'sse');
  assert.equal(es.closed, false);
  mock.timers.tick(60000); await flush();
  const ws = last();
  ws.accept();
  assert.equal(h.transport, 'websocket');
  assert.deepEqual(transports, ['websocket']);
  assert.equal(es.closed, true);
  assert.equal(h.state, 'connected');
  assert.deepEqual(ws.sentOfType('subscribe').map((m) => [m.channel, m.since]),
                   [['apps:created', { offset: '21-0', epoch: '4' }]]);
  answerSubscribe(ws, 'apps:created', { offset: '22-0', epoch: '4', recovered: true });
  ws.receive(event('apps:created', '22-0', 22));
  assert.deepEqual(got, [21, 22]);
  mock.timers.tick(25000);
  assert.equal(ws.sentOfType('ping').length, 1, 'the heartbeat runs on the adopted socket');
});

// ---- requests ---------------------------------------------------------------

test('listChannels and stats resolve with the replies matching their ids', async () => {
  const h = await connected();
  const ws = last();
  const channels = h.listChannels();
  const stats = h.stats();
  const [lc] = ws.sentOfType('list_channels');
  const [st] = ws.sentOfType('stats');
  assert.notEqual(lc.id, st.id);
  ws.receive({ type: 'stats', id: st.id, worker: { pid: 1 }, cluster: { gateways: 2 } });
  ws.receive({ type: 'channels', id: lc.id, channels: ['announcements'] });
  assert.deepEqual(await channels, ['announcements']);
  assert.equal((await stats).cluster.gateways, 2);
});

test('stats rejects with the error code of its reply', async () => {
  const h = await connected();
  const p = h.stats();
  const [st] = last().sentOfType('stats');
  last().receive({ type: 'error', code: 'forbidden', message: 'admins only', id: st.id });
  await assert.rejects(p, (e) => e.code === 'forbidden');
});

test('a request without a reply times out', async () => {
  const h = await connected({ requestTimeout: 3000 });
  const p = h.listChannels();
  mock.timers.tick(3000);
  await assert.rejects(p, (e) => e.code === 'timeout');
});

test('a request in flight when the connection drops rejects connection_lost', async () => {
  const h = await connected();
  const p = h.stats();
  last().drop();
  await assert.rejects(p, (e) => e.code === 'connection_lost');
});

// ---- buffering ---------------------------------------------------------------

test('messages sent while disconnected are flushed in order on connect, after resubscribing', async () => {
  const h = await connected();
  h.subscribe('apps:created', () => {});
  last().drop();
  assert.equal(h.send({ type: 'ping', n: 1 }), true);
  const channels = h.listChannels();
  h.send({ type: 'ping', n: 2 });
  mock.timers.tick(500); await flush();
  const ws = last();
  assert.deepEqual(ws.sent, []);
  ws.accept();
  assert.deepEqual(ws.sent.map((m) => m.type + (m.n || '')), ['subscribe', 'ping1', 'list_channels', 'ping2']);
  ws.receive({ type: 'channels', id: ws.sent[2].id, channels: ['x:y'] });
  assert.deepEqual(await channels, ['x:y']);
});

test('buffer: false is not buffered: send returns false, requests reject not_connected', async () => {
  const h = client();
  assert.equal(h.send({ type: 'ping' }, { buffer: false }), false);
  await assert.rejects(h.listChannels({ buffer: false }), (e) => e.code === 'not_connected');
  h.connect();
  await flush();
  last().accept();
  assert.deepEqual(last().sent, []);
});

test('the buffer keeps at most maxBufferSize messages, dropping the oldest', async () => {
  const h = client({ maxBufferSize: 2 });
  const first = h.stats();
  h.send({ type: 'ping', n: 2 });
  h.send({ type: 'ping', n: 3 });
  await assert.rejects(first, (e) => e.code === 'buffer_overflow');
  h.connect();
  await flush();
  last().accept();
  assert.deepEqual(last().sent.map((m) => m.n), [2, 3]);
});

test('disconnect() clears the buffer: nothing is flushed on a later connect', async () => {
  const h = client();
  h.send({ type: 'ping' });
  const p = h.stats();
  h.disconnect();
  await assert.rejects(p, (e) => e.code === 'disconnected');
  h.connect();
  await flush();
  last().accept();
  assert.deepEqual(last().sent, []);
});

// ---- parsing and logging ------------------------------------------------------

test('parseMessage strips __proto__, constructor and prototype at any depth', () => {
  const text = '{"type":"event","__proto__":{"polluted":1},"data":{"a":1,"constructor":{"prototype":{"x":1}},'
    + '"nested":[{"__proto__":{"polluted":2},"prototype":3,"ok":true}]}}';
  const msg = parseMessage(text);
  assert.equal(Object.hasOwn(msg, '__proto__'), false);
  assert.equal(Object.hasOwn(msg.data, 'constructor'), false);
  assert.deepEqual(Object.keys(msg.data.nested[0]), ['ok']);
  assert.equal({}.polluted, undefined);
  assert.equal(Object.getPrototypeOf(msg), Object.prototype);
  assert.equal(parseMessage('not json'), undefined);
});

test('handlers receive event data with the forbidden keys removed', async () => {
  const h = await connected();
  let data;
  h.subscribe('apps:created', (d) => { data = d; });
  last().receive('{"type":"event","channel":"apps:created","data":{"name":"x","__proto__":{"admin":true},"constructor":1}}');
  assert.deepEqual(Object.keys(data), ['name']);
  assert.equal(data.admin, undefined);
});

test('non-object and malformed messages are ignored', async () => {
  const h = await connected();
  const seen = [];
  h.on('message', (m) => seen.push(m));
  last().receive('3');
  last().receive('{oops');
  last().receive('[1,2]');
  assert.deepEqual(seen, []);
  assert.equal(h.state, 'connected');
});

test('debug logging is off by default and prefixed [Herald] when on; the token is never logged', async () => {
  const lines = [];
  const original = console.log;
  console.log = (...args) => lines.push(args.join(' '));
  try {
    const quiet = await connected();
    quiet.disconnect();
    assert.deepEqual(lines, []);
    const loud = await connected({ debug: true, token: 'secret-token' });
    loud.disconnect();
  } finally {
    console.log = original;
  }
  assert.ok(lines.length > 0);
  assert.ok(lines.every((l) => l.startsWith('[Herald] ')), lines.join('\n'));
  assert.ok(lines.every((l) => !l.includes('secret-token')));
});

test('a throwing event handler does not stop the other handlers', async () => {
  const h = await connected();
  const got = [];
  h.subscribe('apps:created', () => { throw new Error('boom'); });
  h.subscribe('apps:created', () => got.push('second'));
  last().receive({ type: 'event', channel: 'apps:created', data: {} });
  assert.deepEqual(got, ['second']);
});

// ---- the published types ------------------------------------------------------

test('herald.d.ts declares every export, public member and option of herald.js', async () => {
  const { readFile } = await import('node:fs/promises');
  const dts = await readFile(new URL('../../web/herald.d.ts', import.meta.url), 'utf8');
  const module = await import('../../web/herald.js');
  for (const name of Object.keys(module)) {
    if (name === 'default') continue;
    assert.match(dts, new RegExp(`export (declare )?(class|function) ${name}\\b`), `export ${name}`);
  }
  const classBody = dts.slice(dts.indexOf('export class Herald {'));
  const members = Object.getOwnPropertyNames(Herald.prototype).filter((n) => n !== 'constructor' && !n.startsWith('_'));
  for (const name of members) assert.match(classBody, new RegExp(`\\n  (readonly )?${name}[<(:]`), `Herald.${name}`);
  const h = new Herald('ws://x/ws', { WebSocket: FakeSocket });
  const optionsBody = dts.slice(dts.indexOf('export interface HeraldOptions'), dts.indexOf('export interface StateChange'));
  for (const name of Object.keys(h.options)) assert.match(optionsBody, new RegExp(`\\n  ${name}\\?:`), `option ${name}`);
});
