// Real processes for the browser end-to-end tests: a redis-server and Herald
// gateways on free ports, each stopped by its PID. Every PID started is also
// appended to $BROWSER_OUT/pids so that run.sh can stop leftovers if this
// process itself dies.
import { spawn, execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, openSync, closeSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
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

/** The PIDs whose parent is pid (from /proc/<pid>/stat). */
export function childrenOf(pid) {
  const out = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    let stat;
    try { stat = readFileSync(`/proc/${d}/stat`, 'utf8'); } catch { continue; }
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // state, ppid, ...
    if (Number(fields[1]) === pid) out.push(Number(d));
  }
  return out;
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

  /**
   * SIGKILL to the process and its children (a gateway's workers, which hold
   * the connections): they die at once, their connections drop without a close.
   */
  async kill() {
    if (!this.running) return this.exited;
    const children = childrenOf(this.pid);
    process.kill(this.pid, 'SIGKILL'); // first, so that it cannot start a new worker
    for (const pid of children) {
      try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
    }
    return this.exited;
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

/** Publishes several events in one herald-pub run (one per stdin line); returns their offsets. */
export function publishMany(redis, channel, datas) {
  return new Promise((resolve, reject) => {
    const child = execFile(path.join(BUILD, 'herald-pub'), ['--redis', redis.url, channel],
      (err, stdout) => (err ? reject(err) : resolve(stdout.trim().split('\n').filter(Boolean))));
    child.stdin.end(datas.map((d) => `${JSON.stringify(d)}\n`).join(''));
  });
}

const NGINX_CONF = new URL('../../deploy/nginx.conf', import.meta.url).pathname;

/**
 * Debian's nginx in the foreground with deploy/nginx.conf as shipped, only
 * its upstream servers (gateway1..3) pointed at the given loopback ports,
 * its listen port free, and its temp files in a directory of its own.
 * `edit(text)` may change the rendered configuration further (e.g. a test
 * that refuses WebSocket upgrades).
 */
export async function startNginx({ upstreams, edit = (t) => t }) {
  const binary = ['/usr/sbin/nginx', '/usr/local/sbin/nginx'].find((p) => existsSync(p));
  if (!binary) throw new Error('nginx is missing (apt-get install nginx)');
  const port = await freePort();
  const dir = mkdtempSync(path.join(OUT, 'nginx-'));
  let text = readFileSync(NGINX_CONF, 'utf8');
  let i = 0;
  text = text.replace(/^(\s*server\s+)gateway\d+:\d+/gm, (m, lead) => `${lead}127.0.0.1:${upstreams[i++ % upstreams.length]}`);
  if (i !== 3) throw new Error(`deploy/nginx.conf: ${i} upstream servers, expected 3`);
  text = text.replace(/^(\s*listen\s+)\d+/m, (m, lead) => `${lead}127.0.0.1:${port}`);
  const temps = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((k) => `    ${k}_temp_path ${dir}/${k}_temp;\n`).join('');
  text = text.replace(/^http \{\n/m, (m) => m + temps);
  text = text.replace(/^(\s*worker_rlimit_nofile\s+)\d+;/m, '$11024;').replace(/^worker_processes auto;/m, 'worker_processes 1;');
  if (process.getuid && process.getuid() === 0) text = `user root;\n${text}`;
  text = edit(text);
  const conf = path.join(dir, 'nginx.conf');
  writeFileSync(conf, text);
  const proc = new Proc(`nginx-${port}`, binary, ['-e', 'stderr', '-p', `${dir}/`, '-c', conf, '-g', `daemon off; pid ${dir}/nginx.pid;`]);
  proc.port = port;
  await waitFor(`nginx on ${port}`, async () => {
    if (!proc.running) throw new Error('exited');
    return (await httpStatus(port, '/lb-health')) === 200;
  }, 10000).catch(async (err) => { await proc.stop(); throw new Error(`${err.message}\n${proc.tail()}`); });
  return proc;
}

/** Stops every process still running, newest first. */
export async function stopAll() {
  for (const proc of [...started].reverse()) {
    try { await proc.stop(); } catch { /* already gone */ }
  }
}

process.on('exit', () => {
  for (const proc of started) {
    // nginx's master stops its workers on SIGTERM; SIGKILL would orphan them
    try { process.kill(proc.pid, proc.name.startsWith('nginx') ? 'SIGTERM' : 'SIGKILL'); } catch { /* gone */ }
  }
});
