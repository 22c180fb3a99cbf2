// Real processes for the browser end-to-end tests: a redis-server and Herald
// gateways on free ports, each stopped by its PID. Every PID started is also
// appended to $BROWSER_OUT/pids so that run.sh can stop leftovers if this
// process itself dies.
import { spawn, execFile } from 'node:child_process';
import { mkdirSync, openSync, closeSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export const BUILD = path.resolve(process.env.HERALD_BUILD || new URL('../../build', import.meta.url).pathname);
export const OUT = path.resolve(process.env.BROWSER_OUT || path.join(BUILD, 'browser'));
export const SECRET = 'browser-test-secret';
mkdirSync(OUT, { recursive: true });

const started = new Set();
const PID_FILE = path.join(OUT, 'pids');

/** Keeps $OUT/pids equal to the processes still running (run.sh reads it). */
function writePids() {
  writeFileSync(PID_FILE, [...started].map((p) => `${p.pid}\n`).join(''));
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` (sync or async) until it returns truthy; throws with `what` after timeoutMs. */
export async function waitFor(what, check, timeoutMs = 10000, everyMs = 50) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try { if (await check()) return; } catch { /* not yet */ }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function redisPing(port) {
  return new Promise((resolve) => {
    const sock = net.connect(port, '127.0.0.1');
    let buf = '';
    const done = (ok) => { sock.destroy(); resolve(ok); };
    sock.setTimeout(500, () => done(false));
    sock.on('error', () => done(false));
    sock.on('connect', () => sock.write('PING\r\n'));
    sock.on('data', (d) => { buf += d; if (buf.includes('\r\n')) done(buf.startsWith('+PONG')); });
  });
}

async function httpStatus(port, urlPath) {
  try {
    const res = await fetch(`http://127.0.0.1:${port}${urlPath}`, { signal: AbortSignal.timeout(1000) });
    await res.arrayBuffer();
    return res.status;
  } catch {
    return 0;
  }
}

/** A child process with its log file; stop() sends SIGTERM (SIGKILL after a grace period). */
class Proc {
  constructor(name, cmd, args) {
    this.name = name;
    this.log = path.join(OUT, `${name}.log`);
    const fd = openSync(this.log, 'a');
    this.child = spawn(cmd, args, { stdio: ['ignore', fd, fd] });
    closeSync(fd);
    this.pid = this.child.pid;
    this.exited = new Promise((resolve) => this.child.once('exit', (code, signal) => resolve({ code, signal })));
    this.running = true;
    this.exited.then(() => { this.running = false; started.delete(this); writePids(); });
    started.add(this);
    writePids();
  }

  async stop(graceMs = 8000) {
    if (!this.running) return this.exited;
    process.kill(this.pid, 'SIGTERM');
    const timer = setTimeout(() => { if (this.running) process.kill(this.pid, 'SIGKILL'); }, graceMs);
    const result = await this.exited;
    clearTimeout(timer);
    return result;
  }

  tail(lines = 30) {
    try { return readFileSync(this.log, 'utf8').trim().split('\n').slice(-lines).join('\n'); } catch { return ''; }
  }
}

export async function startRedis() {
  const port = await freePort();
  const proc = new Proc(`redis-${port}`, 'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no']);
  proc.port = port;
  proc.url = `redis://127.0.0.1:${port}`;
  await waitFor(`redis on ${port}`, () => redisPing(port), 10000);
  return proc;
}

/** A gateway (one worker) on `port`, ready once /readyz says its Redis subscriber is up. */
export async function startGateway({ id, port, redis }) {
  const proc = new Proc(`gateway-${id}`, path.join(BUILD, 'herald-gateway'), [
    '--host', '127.0.0.1', '--port', String(port), '--tls-port', '0', '--redis', redis.url,
    '--jwt-secret', SECRET, '--workers', '1', '--gateway-id', id, '--stats-interval', '0.5',
    '--admin-listen', 'off', // several gateways share this host: no operator port each
  ]);
  proc.port = port;
  proc.id = id;
  try {
    await waitFor(`gateway ${id} ready on ${port}`, async () => {
      if (!proc.running) throw new Error('exited');
      return (await httpStatus(port, '/readyz')) === 200;
    }, 10000);
  } catch (err) {
    await proc.stop();
    throw new Error(`${err.message}\n${proc.tail()}`);
  }
  return proc;
}

export async function token({ user, role, secret = SECRET, ttl = 3600 }) {
  const args = ['--secret', secret, '--user', user, '--ttl', String(ttl)];
  if (role) args.push('--role', role);
  const { stdout } = await run(path.join(BUILD, 'herald-token'), args);
  return stdout.trim();
}

/** Publishes with herald-pub; returns the number of Redis receivers it reported. */
export async function publish(redis, channel, data) {
  const { stdout } = await run(path.join(BUILD, 'herald-pub'),
    ['--redis', redis.url, '-v', channel, JSON.stringify(data)]);
  const m = /(\d+) receiver/.exec(stdout);
  return m ? Number(m[1]) : -1;
}

/** Stops every process still running, newest first. */
export async function stopAll() {
  for (const proc of [...started].reverse()) {
    try { await proc.stop(); } catch { /* already gone */ }
  }
}

process.on('exit', () => {
  for (const proc of started) {
    try { process.kill(proc.pid, 'SIGKILL'); } catch { /* gone */ }
  }
});
