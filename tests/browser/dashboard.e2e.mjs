// End-to-end tests of the dashboard (GET /) and herald.js in Debian's Chromium,
// driven by playwright-core, against a real redis-server and real gateways.
// Run by run.sh (node --test); the tests share one browser and run in order.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { OUT, SECRET, childrenOf, freePort, publish, publishMany, sleep, startGateway, startNginx, startRedis, stopAll, token,
  waitFor } from './harness.mjs';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

let browser, redis, gwA, gwB, portA, adminToken;
let page;                 // the admin dashboard, kept open across tests
let pageLog;              // its WebSocket frames and errors
const pageErrors = [];

/** Records every WebSocket a page opens and every JSON frame it receives. */
function recordSockets(p) {
  const log = { sockets: [], frames: [], sent: [] };
  p.on('websocket', (ws) => {
    log.sockets.push(ws);
    ws.on('framereceived', ({ payload }) => {
      try { log.frames.push({ ws, msg: JSON.parse(payload) }); } catch { /* not JSON */ }
    });
    ws.on('framesent', ({ payload }) => {
      try { log.sent.push({ ws, msg: JSON.parse(payload) }); } catch { /* not JSON */ }
    });
  });
  p.on('pageerror', (err) => pageErrors.push(String(err)));
  // a Content-Security-Policy violation is reported on the console only
  p.on('console', (m) => {
    if (m.type() === 'error' && /Content Security Policy/i.test(m.text())) pageErrors.push(m.text());
  });
  return log;
}

/** Waits until the page received a frame matching pred on its newest socket. */
function waitForFrame(log, what, pred, timeoutMs = 10000) {
  return waitFor(what, () => {
    const ws = log.sockets.at(-1);
    return log.frames.some((f) => f.ws === ws && pred(f.msg));
  }, timeoutMs);
}

async function statusOf(p) {
  return p.evaluate(() => ({
    state: document.querySelector('#status').dataset.state,
    text: document.querySelector('#status').textContent.replace(/\s+/g, ' ').trim(),
  }));
}

async function waitForStatus(p, state, timeoutMs = 10000) {
  await waitFor(`indicator "${state}"`, async () => (await statusOf(p)).state === state, timeoutMs);
  return statusOf(p);
}

async function newPage(options = {}) {
  const context = await browser.newContext(options);
  return context.newPage();
}

before(async () => {
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  redis = await startRedis();
  portA = await freePort();
  gwA = await startGateway({ id: 'gw-a', port: portA, redis });
  adminToken = await token({ user: 'browser-admin', role: 'admin' });
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  await stopAll();
});

test('the dashboard connects and shows Live with the authorized channels', { timeout: 30000 }, async () => {
  page = await newPage({ viewport: { width: 1400, height: 900 } });
  pageLog = recordSockets(page);
  await page.goto(`http://127.0.0.1:${portA}/?token=${adminToken}`);
  const status = await waitForStatus(page, 'live');
  assert.equal(status.text, 'Live');
  assert.equal(await page.textContent('#identity'), 'browser-admin (admin)');
  const channels = await page.$$eval('#channels li', (lis) => lis.map((li) => li.dataset.channel));
  assert.ok(channels.includes('apps:created') && channels.includes('system:alerts') && channels.includes('user:browser-admin'),
    channels.join());
  assert.equal(await page.isChecked('#channels li[data-channel="apps:created"] input'), true);
  assert.equal(await page.isChecked('#channels li[data-channel="system:metrics"] input'), false, 'metrics muted by default');
  // the token went as the subprotocol, not in the ws URL
  assert.equal(pageLog.sockets.length, 1);
  assert.equal(new URL(pageLog.sockets[0].url()).search, '');
  // and it was removed from the address bar (and so from history) once read
  assert.equal(page.url(), `http://127.0.0.1:${portA}/`);
  assert.equal(await page.evaluate(() => location.search), '');
});

test('an event published with herald-pub appears in the feed, highlighted and counted', { timeout: 30000 }, async () => {
  await waitForFrame(pageLog, 'subscribed apps:created', (m) => m.type === 'subscribed' && m.channel === 'apps:created');
  const receivers = await publish(redis, 'apps:created', { id: 'e2e-1', name: 'browser-app' });
  assert.equal(receivers, 1);
  const row = page.locator('#feed li[data-channel="apps:created"]', { hasText: 'browser-app' });
  await row.waitFor({ timeout: 5000 });
  assert.match(await row.getAttribute('class'), /\bfresh\b/, 'new row highlighted');
  assert.equal(await page.textContent('#channels li[data-channel="apps:created"] .count'), '1');
  await waitFor('highlight to fade', async () => !/\bfresh\b/.test(await row.getAttribute('class')), 5000);
  // an unsubscribed channel's events do not show
  await page.uncheck('#channels li[data-channel="apps:deleted"] input');
  await waitForFrame(pageLog, 'unsubscribed apps:deleted', (m) => m.type === 'unsubscribed' && m.channel === 'apps:deleted');
  await publish(redis, 'apps:deleted', { id: 'gone-1' });
  await publish(redis, 'apps:created', { id: 'e2e-2', name: 'second-app' });
  await page.locator('#feed li', { hasText: 'second-app' }).waitFor({ timeout: 5000 });
  assert.equal(await page.locator('#feed li', { hasText: 'gone-1' }).count(), 0);
  assert.equal(await page.textContent('#channels li[data-channel="apps:created"] .count'), '2');
});

test('a toast appears for deployments:failed (error) and deployments:completed (success), gone after 5 s', { timeout: 30000 }, async () => {
  await waitForFrame(pageLog, 'subscribed deployments:failed', (m) => m.type === 'subscribed' && m.channel === 'deployments:failed');
  await publish(redis, 'deployments:failed', { deploymentId: 'd-42', appName: 'shop', error: 'build exploded' });
  const failed = page.locator('#toasts .toast.error', { hasText: 'build exploded' });
  await failed.waitFor({ timeout: 5000 });
  assert.match(await failed.textContent(), /Deployment failed/);
  const shownAt = Date.now();
  await publish(redis, 'deployments:completed', { deploymentId: 'd-43', appName: 'shop' });
  await page.locator('#toasts .toast.success', { hasText: 'shop' }).waitFor({ timeout: 5000 });
  // bottom-right corner
  const box = await failed.boundingBox();
  const vp = page.viewportSize();
  assert.ok(box.x + box.width > vp.width - 40 && box.y + box.height > vp.height - 200, JSON.stringify(box));
  await failed.waitFor({ state: 'detached', timeout: 8000 });
  const lived = Date.now() - shownAt;
  assert.ok(lived >= 4000 && lived < 7500, `toast lived ${lived} ms`);
});

test('the admin stats panel shows two gateways when two run', { timeout: 40000 }, async () => {
  assert.equal(await page.isVisible('#stats-panel'), true);
  gwB = await startGateway({ id: 'gw-b', port: await freePort(), redis });
  // a second client on gw-b so its row has a connection
  const other = await newPage();
  await other.goto(`http://127.0.0.1:${gwB.port}/?token=${await token({ user: 'viewer' })}`);
  await waitForStatus(other, 'live');
  assert.equal(await other.isVisible('#stats-panel'), false, 'no stats panel for non-admins');
  await waitFor('two gateway rows', async () =>
    (await page.$$eval('#gateways tbody tr', (trs) => trs.map((tr) => tr.dataset.gateway).join())) === 'gw-a,gw-b', 15000);
  assert.equal(await page.textContent('#t-gateways'), '2');
  await waitFor('a connection counted on each gateway', async () => {
    const conns = await page.$$eval('#gateways tbody tr', (trs) => trs.map((tr) => Number(tr.children[2].textContent)));
    return conns.length === 2 && conns.every((n) => n >= 1);
  }, 10000);
  // traffic makes the delivered-events rate and the chart move
  for (let i = 0; i < 10; i++) await publish(redis, 'apps:updated', { id: `u-${i}`, name: 'busy-app', version: i });
  await waitFor('a non-zero delivered rate', async () => Number(await page.textContent('#t-rate')) > 0, 10000);
  const d = await page.getAttribute('#chart .line', 'd');
  assert.match(d, /^M[\d.]+,[\d.]+(L[\d.]+,[\d.]+)+$/);
  await other.context().close();
});

test('a screenshot of the dashboard is saved (desktop and phone width)', { timeout: 30000 }, async () => {
  await publish(redis, 'announcements', { title: 'Maintenance', message: 'Window tonight at 22:00 UTC' });
  await publish(redis, 'system:alerts', { level: 'warning', message: 'Redis latency above 50 ms' });
  await publish(redis, 'storage:uploaded', { bucket: 'assets', key: 'logo.png', size: 48213 });
  await page.locator('#toasts .toast.info').waitFor({ timeout: 5000 });
  await page.locator('#toasts .toast.warning').waitFor({ timeout: 5000 });
  const file = path.join(OUT, 'dashboard.png');
  await page.screenshot({ path: file, fullPage: true });
  assert.ok(statSync(file).size > 20000, 'screenshot has content');

  const phone = await newPage({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  await phone.goto(`http://127.0.0.1:${portA}/?token=${adminToken}`);
  await waitForStatus(phone, 'live');
  await phone.locator('#gateways tbody tr').first().waitFor({ timeout: 10000 });
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.ok(overflow <= 0, `page ${overflow}px wider than a phone screen`);
  const status = await phone.locator('#status').boundingBox();
  assert.ok(status.x >= 0 && status.x + status.width <= 390, 'indicator on screen');
  const phoneFile = path.join(OUT, 'dashboard-phone.png');
  await phone.screenshot({ path: phoneFile, fullPage: true });
  assert.ok(statSync(phoneFile).size > 10000);
  await phone.context().close();
  await gwB.stop();
});

test('gateway stopped -> Reconnecting; restarted -> Live, subscriptions restored without reload', { timeout: 60000 }, async () => {
  await page.evaluate(() => { window.__sameDocument = true; });
  const socketsBefore = pageLog.sockets.length;
  const subscribedBefore = new Set();
  for (const { ws, msg } of pageLog.frames) {
    if (ws !== pageLog.sockets.at(-1)) continue;
    if (msg.type === 'subscribed') subscribedBefore.add(msg.channel);
    if (msg.type === 'unsubscribed') subscribedBefore.delete(msg.channel);
  }
  assert.ok(subscribedBefore.has('apps:created') && subscribedBefore.has('deployments:failed'));
  const stopped = await gwA.stop();
  assert.equal(stopped.code, 0, 'gateway drained cleanly');
  const down = await waitForStatus(page, 'reconnecting', 10000);
  assert.match(down.text, /^Reconnecting/);
  await page.waitForTimeout(1500); // some attempts fail against the closed port
  assert.equal((await statusOf(page)).state, 'reconnecting');

  gwA = await startGateway({ id: 'gw-a', port: portA, redis });
  const up = await waitForStatus(page, 'live', 40000);
  assert.equal(up.text, 'Live');
  assert.equal(await page.evaluate(() => window.__sameDocument), true, 'no page reload');
  assert.ok(pageLog.sockets.length > socketsBefore);
  // every channel subscribed before the stop is subscribed again on the new socket, and no other
  const newSocket = () => pageLog.frames.filter((f) => f.ws === pageLog.sockets.at(-1)).map((f) => f.msg);
  await waitFor('all subscriptions restored', () =>
    newSocket().filter((m) => m.type === 'subscribed').length >= subscribedBefore.size, 10000);
  const restored = new Set(newSocket().filter((m) => m.type === 'subscribed').map((m) => m.channel));
  assert.deepEqual([...restored].sort(), [...subscribedBefore].sort());
  assert.ok(!restored.has('apps:deleted'), 'a channel unchecked before the restart stays unsubscribed');
  assert.equal(await publish(redis, 'apps:created', { id: 'e2e-3', name: 'after-restart' }), 1);
  await page.locator('#feed li', { hasText: 'after-restart' }).waitFor({ timeout: 5000 });
  assert.equal(await page.textContent('#channels li[data-channel="apps:created"] .count'), '3');
});

test('an invalid token shows Failed with its reason and does not retry', { timeout: 30000 }, async () => {
  const p = await newPage();
  const log = recordSockets(p);
  await p.goto(`http://127.0.0.1:${portA}/`);
  await waitForStatus(p, 'live');
  assert.equal(await p.textContent('#identity'), 'anonymous');
  // a token signed with another secret, typed into the token field
  const forged = await token({ user: 'mallory', role: 'admin', secret: `not-${SECRET}` });
  await p.fill('#token', forged);
  await p.click('#token-form button');
  const failed = await waitForStatus(p, 'failed');
  const error = log.frames.find((f) => f.msg.type === 'error' && f.msg.code === 'unauthorized');
  assert.ok(error, 'the gateway sent an unauthorized error');
  assert.equal(failed.text, `Failed: ${error.msg.message}`);
  assert.ok(error.msg.message.length > 0);
  const sockets = log.sockets.length;
  await p.waitForTimeout(3000);
  assert.equal(log.sockets.length, sockets, 'no retry loop');
  assert.equal((await statusOf(p)).state, 'failed');
  // a good token from the field connects again
  await p.fill('#token', adminToken);
  await p.click('#token-form button');
  await waitForStatus(p, 'live');
  await p.context().close();
});

test('a token too long for the gateway shows Failed and does not retry', { timeout: 30000 }, async () => {
  // Over the gateway's 8 KiB token limit, sent as the subprotocol: the 101
  // must still name it (Chromium fails the connection otherwise, 1006, and
  // the client would retry forever); then the gateway refuses it with 4001.
  const p = await newPage();
  const log = recordSockets(p);
  await p.goto(`http://127.0.0.1:${portA}/`);
  await waitForStatus(p, 'live');
  await p.fill('#token', `${adminToken}${'A'.repeat(9000)}`);
  await p.click('#token-form button');
  const failed = await waitForStatus(p, 'failed');
  const error = log.frames.find((f) => f.msg.type === 'error' && f.msg.code === 'unauthorized');
  assert.ok(error, 'the gateway sent an unauthorized error');
  assert.equal(failed.text, `Failed: ${error.msg.message}`);
  const sockets = log.sockets.length;
  await p.waitForTimeout(3000);
  assert.equal(log.sockets.length, sockets, 'no retry loop');
  assert.equal((await statusOf(p)).state, 'failed');
  await p.context().close();
});

/** The seq numbers of the feed rows of channel, oldest first. */
async function feedSeqs(p, channel) {
  const texts = await p.$$eval(`#feed li.event[data-channel="${channel}"] .data`, (els) => els.map((e) => e.textContent));
  return texts.reverse().map((t) => JSON.parse(t).seq);
}

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

test('herald.js recovers every event missed while its gateway was killed: once each, in order', { timeout: 60000 }, async () => {
  const port = await freePort();
  let gw = await startGateway({ id: 'gw-r', port, redis });
  const p = await newPage();
  p.on('pageerror', (err) => pageErrors.push(String(err)));
  await p.goto(`http://127.0.0.1:${port}/healthz`);
  await p.evaluate(async ({ url, jwt }) => {
    const { Herald } = await import('/herald.js');
    const h = new Herald(url, { token: jwt, baseDelay: 300, maxDelay: 1000 });
    window.__got = [];
    window.__recovered = [];
    window.__gaps = [];
    h.on('recovered', (e) => window.__recovered.push(e));
    h.on('gap', (e) => window.__gaps.push(e.channels));
    const sub = h.subscribe('apps:recovery', (d, msg, info) => window.__got.push([d.seq, info.recovered]));
    h.connect();
    await sub;
    window.__herald = h;
  }, { url: `ws://127.0.0.1:${port}/ws`, jwt: adminToken });
  await publishMany(redis, 'apps:recovery', range(1, 5).map((seq) => ({ seq })));
  await waitFor('5 live events', () => p.evaluate(() => window.__got.length === 5), 5000);

  await gw.kill(); // the gateway drops the client without a close
  await waitFor('the client noticed', () => p.evaluate(() => window.__herald.state === 'reconnecting'), 5000);
  await publishMany(redis, 'apps:recovery', range(6, 25).map((seq) => ({ seq })));
  gw = await startGateway({ id: 'gw-r', port, redis });
  await waitFor('connected again', () => p.evaluate(() => window.__herald.state === 'connected'), 15000);
  // 'connected' is the open socket; the resubscribe (and so the gateway's
  // SUBSCRIBE to Redis) is done only when the recovery has been delivered.
  // An event published before that is in history only and comes recovered.
  await waitFor('the recovery delivered', () => p.evaluate(() => window.__recovered.length === 1), 15000);
  await publishMany(redis, 'apps:recovery', range(26, 30).map((seq) => ({ seq })));
  await waitFor('30 events', () => p.evaluate(() => window.__got.length >= 30), 10000)
    .catch(async (err) => { throw new Error(`${err.message}: ${JSON.stringify(await p.evaluate(() => [window.__got, window.__gaps, window.__herald.counters, window.__herald.position('apps:recovery')]))}`); });
  await sleep(300); // nothing more may come
  const got = await p.evaluate(() => window.__got);
  assert.deepEqual(got.map(([seq]) => seq), range(1, 30), 'every event exactly once, in order');
  assert.deepEqual(got.filter(([, rec]) => rec).map(([seq]) => seq), range(6, 25), 'the missed ones came from history');
  assert.deepEqual(await p.evaluate(() => window.__recovered), [{ channel: 'apps:recovery', events: 20 }]);
  assert.deepEqual(await p.evaluate(() => window.__gaps), []);
  assert.deepEqual(await p.evaluate(() => window.__herald.counters), { recovered: 20, duplicates: 0, gaps: 0 });
  await p.context().close();
  await gw.stop();
});

test('the dashboard keeps a complete feed across a killed gateway behind nginx and shows what it recovered', { timeout: 90000 }, async () => {
  const g1 = await startGateway({ id: 'gw-n1', port: await freePort(), redis });
  const g2 = await startGateway({ id: 'gw-n2', port: await freePort(), redis });
  const lb = await startNginx({ upstreams: [g1.port, g2.port, g2.port] });
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const p = await context.newPage();
  const log = recordSockets(p);
  const channel = 'deployments:status';
  let seq = 0;
  let publishing = true;
  let publisher = null;
  let stopped = [];
  try {
    await p.goto(`http://127.0.0.1:${lb.port}/?token=${adminToken}`);
    await waitForStatus(p, 'live');
    assert.equal(await p.textContent('#transport'), 'WebSocket');
    await waitForFrame(log, `subscribed ${channel}`, (m) => m.type === 'subscribed' && m.channel === channel);
    // which gateway nginx gave the page: the one whose row in the page's own
    // cluster panel counts a connection
    let serving = null;
    await waitFor('the page counted on one gateway', async () => {
      const rows = await p.$$eval('#gateways tbody tr', (trs) =>
        Object.fromEntries(trs.map((tr) => [tr.dataset.gateway, Number(tr.children[2].textContent)])));
      if (rows['gw-n1'] === 1 && !rows['gw-n2']) serving = g1;
      if (rows['gw-n2'] === 1 && !rows['gw-n1']) serving = g2;
      return serving !== null;
    }, 15000);
    const other = serving === g1 ? g2 : g1;

    // a publisher that never stops while the gateway dies and the page reconnects
    publisher = (async () => {
      while (publishing) {
        await publishMany(redis, channel, [{ seq: seq + 1 }, { seq: seq + 2 }]);
        seq += 2;
        await sleep(40);
      }
    })();
    await waitFor('some live events', async () => (await feedSeqs(p, channel)).length >= 6, 10000);
    // The other gateway's worker is frozen for a moment, so that the page's
    // reconnect (through nginx, which retries on the frozen gateway) waits
    // and events are certainly published while it has no connection.
    stopped = childrenOf(other.pid);
    for (const pid of stopped) process.kill(pid, 'SIGSTOP');
    await serving.kill();
    await waitForStatus(p, 'reconnecting', 10000);
    const before = seq;
    await waitFor('events published while the page is away', () => seq >= before + 20, 10000);
    for (const pid of stopped.splice(0)) process.kill(pid, 'SIGCONT');
    await waitForStatus(p, 'live', 30000);
    await sleep(500);
    publishing = false;
    await publisher;
    await waitFor(`all ${seq} events in the feed`, async () => (await feedSeqs(p, channel)).length >= seq, 10000);
    await sleep(300);
    assert.deepEqual(await feedSeqs(p, channel), range(1, seq), 'every event exactly once, in order');
    assert.equal(await p.textContent(`#channels li[data-channel="${channel}"] .count`), String(seq));
    const recovered = Number(/(\d+) recovered/.exec(await p.textContent('#recovered-count'))?.[1]);
    assert.ok(recovered >= 20, `recovered count shown: ${recovered}`);
    assert.equal(await p.locator(`#feed li.recovered[data-channel="${channel}"]`).count(), recovered, 'recovered rows are marked');
    assert.equal(await p.textContent('#gap-channels'), '', 'no channel had a gap');
    // the new socket asked to recover this channel from where it stood, and got it
    const newSocket = log.sockets.at(-1);
    const resubscribe = log.sent.find((f) => f.ws === newSocket && f.msg.type === 'subscribe' && f.msg.channel === channel);
    assert.ok(resubscribe && resubscribe.msg.since && resubscribe.msg.since.epoch, JSON.stringify(resubscribe && resubscribe.msg));
    assert.ok(log.frames.some((f) => f.ws === newSocket && f.msg.type === 'subscribed' && f.msg.channel === channel &&
                                     f.msg.recovered === true));
    await p.screenshot({ path: path.join(OUT, 'dashboard-recovered.png') });
  } finally {
    publishing = false;
    await publisher?.catch(() => {});
    for (const pid of stopped) process.kill(pid, 'SIGCONT');
    await context.close();
    await lb.stop();
    await g1.stop();
    await g2.stop();
  }
});

test('with WebSocket blocked the dashboard falls back to SSE, says so, and shows every event once', { timeout: 90000 }, async () => {
  const g1 = await startGateway({ id: 'gw-s1', port: await freePort(), redis });
  // nginx as shipped, except that its /ws answers 404: the upgrade never succeeds
  const lb = await startNginx({
    upstreams: [g1.port],
    edit: (text) => {
      const out = text.replace(/location = \/ws \{[^}]*\}/, 'location = /ws { return 404; }');
      assert.notEqual(out, text, 'nginx.conf has a /ws location');
      assert.match(out, /location = \/events \{/);
      return out;
    },
  });
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const p = await context.newPage();
  const log = recordSockets(p);
  const streams = [];
  p.on('request', (req) => { if (new URL(req.url()).pathname === '/events') streams.push(req.url()); });
  const channel = 'deployments:status';
  let seq = 0;
  let publishing = false;
  let publisher = null;
  try {
    await p.goto(`http://127.0.0.1:${lb.port}/?token=${adminToken}`);
    const live = await waitForStatus(p, 'live', 40000);
    assert.equal(live.text, 'Live');
    assert.equal(await p.textContent('#transport'), 'SSE (fallback)');
    assert.equal(await p.getAttribute('#transport', 'data-transport'), 'sse');
    assert.ok(log.sockets.length >= 3, `WebSocket tried first (${log.sockets.length} attempts)`);
    assert.equal(await p.textContent('#identity'), 'browser-admin (admin)');
    // every authorized channel but the muted one is streamed: more than one
    // stream holds them (at most 16 channels each), the token in the URL
    await waitFor('the channels streamed', () => {
      const all = new Set(streams.flatMap((u) => new URL(u).searchParams.getAll('channel')));
      return all.has(channel) && all.has('apps:created') && all.has('user:browser-admin');
    }, 15000);
    const sizes = streams.map((u) => new URL(u).searchParams.getAll('channel').length);
    assert.ok(sizes.every((n) => n <= 16) && sizes.includes(16), `channels per stream: ${sizes}`);
    assert.ok(streams.every((u) => !new URL(u).searchParams.getAll('channel').includes('system:metrics')), 'muted stays off');
    assert.ok(streams.every((u) => new URL(u).searchParams.get('token') === adminToken), 'the token in the stream URL');

    const before = await p.$$eval('#feed li.event', (els) => els.length);
    await publish(redis, 'apps:created', { id: 'sse-1', name: 'over-sse' });
    await p.locator('#feed li', { hasText: 'over-sse' }).waitFor({ timeout: 10000 });
    await publish(redis, 'deployments:failed', { deploymentId: 'd-sse', appName: 'sse-app', error: 'sse toast' });
    await p.locator('#toasts .toast.error', { hasText: 'sse toast' }).waitFor({ timeout: 10000 });

    // toggling a channel reopens a stream from the last positions: a channel
    // published to all along loses and repeats nothing
    publishing = true;
    publisher = (async () => {
      while (publishing) {
        await publishMany(redis, channel, [{ seq: seq + 1 }, { seq: seq + 2 }]);
        seq += 2;
        await sleep(50);
      }
    })();
    await waitFor('some events', async () => (await feedSeqs(p, channel)).length >= 4, 10000);
    const opened = streams.length;
    await p.uncheck('#channels li[data-channel="apps:deleted"] input');
    await waitFor('a stream reopened', () => streams.length > opened, 10000);
    const reopened = new URL(streams.at(-1));
    assert.ok(reopened.searchParams.get('lastEventId'), `reopened with positions: ${reopened}`);
    await sleep(400);
    await p.check('#channels li[data-channel="apps:deleted"] input');
    await waitFor('a stream reopened again', () => streams.length > opened + 1, 10000);
    await sleep(400);
    publishing = false;
    await publisher;
    await waitFor(`all ${seq} events`, async () => (await feedSeqs(p, channel)).length >= seq, 10000);
    await sleep(300);
    assert.deepEqual(await feedSeqs(p, channel), range(1, seq), 'every event exactly once, in order');
    assert.ok((await p.$$eval('#feed li.event', (els) => els.length)) > before);
    assert.equal(await p.textContent('#gap-channels'), '', 'no channel had a gap');
    assert.equal((await statusOf(p)).state, 'live');
    await p.screenshot({ path: path.join(OUT, 'dashboard-sse.png') });
  } finally {
    publishing = false;
    await publisher?.catch(() => {});
    await context.close();
    await lb.stop();
    await g1.stop();
  }
});

test('no script errors on any page', () => {
  assert.deepEqual(pageErrors, []);
});
