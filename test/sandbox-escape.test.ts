/**
 * The sandbox escape suite: agent programs that run as sandboxed agents (`container`, and
 * `process` where the attack means something there) and try to get out. Each attack is its own
 * test, so a failure names the hole; each asserts the specific outcome (the errno, the kill, the
 * proxy's 403 and the audit row), not merely "it failed".
 *
 * Needs what container isolation needs (root, writable cgroups, bwrap); skipped with the reason
 * otherwise. CI (.ci/run) installs bubblewrap and runs it.
 *
 * The programs report rather than crash: attack.js tries things and writes, per attempt, the
 * errno it got (or "ALLOWED…") to result.json; the test then asserts the exact errno, plus what
 * it can see from the host (cgroup counters, /proc, the audit log, files that must not appear).
 * `process` level has no mount, pid or network namespace by design: there the same attacks must
 * meet file permissions (EACCES), uid separation (EPERM) and cgroups instead.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { detectSandboxHost, missingFor, prepareSandboxRoot } from '../src/sandbox/index.js';
import type { Worker } from '../src/worker/index.js';
import type { Task } from '../src/queue/index.js';
import { startTestApp, type TestApp } from './support/app.js';
import { testSandboxExecutor } from './support/sandbox.js';
import { ENGINE } from './support/engine.js';
import { provisionAgent, startWorker, submit, terminal, waitForTask } from './support/queue.js';

/** The parts of a session record (GET /api/agents/:id/sessions) the tests read. */
interface Session {
  id: string;
  status: string;
  error: { code: string } | null;
  usage: { wallSeconds: number; cpuSeconds: number; peakMemoryBytes: number; oomKilled: boolean } | null;
}

type Level = 'process' | 'container';

const host = detectSandboxHost();
const skip = missingFor('container', host);

/** Most processes (tasks: threads count too) a session may run; lower than the default 64 to keep the fork bomb short. */
const PIDS_LIMIT = 48;
/** Sandbox uids of this file (sandbox.test.ts uses 300000–300099; the files run concurrently). */
const UID_BASE = 301_000;
const UID_COUNT = 100;

/**
 * The attacker. Runs `payload.attack` and writes what happened to result.json: for each
 * attempt, "ALLOWED…" when it worked, else the error code it got.
 * String.raw: the source is written to disk as is (no ${} in it).
 */
const ATTACK_JS = String.raw`'use strict';
const fs = require('fs');
const net = require('net');
const dns = require('dns');
const { spawn, spawnSync } = require('child_process');
const task = JSON.parse(fs.readFileSync(0, 'utf8'));
const p = task.payload || {};
const ws = process.env.FABRIC_WORKSPACE;

const tryIt = (f) => { try { const v = f(); return 'ALLOWED' + (v === undefined ? '' : ': ' + String(v).slice(0, 200)); } catch (e) { return e.code || String(e.message); } };
const readAny = (x) => (fs.statSync(x).isDirectory() ? fs.readdirSync(x).join(',') : fs.readFileSync(x, 'utf8'));
const within = (ms, promise) => Promise.race([promise, new Promise((r) => setTimeout(() => r('TIMEOUT'), ms))]);
const field = (text, key) => (new RegExp('^' + key + ':\\s*(.*)$', 'm').exec(text) || [])[1];
const statusOf = (pid) => { try { return fs.readFileSync('/proc/' + pid + '/status', 'utf8'); } catch { return ''; } };
const processes = () => fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d)).map((pid) => {
  let cmd = '';
  try { cmd = fs.readFileSync('/proc/' + pid + '/cmdline', 'utf8').split('\0').join(' ').trim(); } catch { /* gone */ }
  return { pid: Number(pid), uid: Number((field(statusOf(pid), 'Uid') || '-1').split(/\s+/)[0]), cmd };
});
const tcp = (opts) => within(5000, new Promise((res) => {
  const s = net.connect(opts);
  s.on('connect', () => { s.destroy(); res('ALLOWED'); });
  s.on('error', (e) => res(e.code));
}));
/** A raw request to the egress proxy (127.0.0.1:3128): the status code it answers, or the error. */
const viaProxy = (head) => within(8000, new Promise((res) => {
  const s = net.connect(3128, '127.0.0.1');
  let buf = '';
  s.on('connect', () => s.write(head));
  s.on('data', (d) => { buf += d; });
  s.on('close', () => res(Number((/^HTTP\/1\.[01] (\d{3})/.exec(buf) || [])[1]) || 'no status: ' + buf.slice(0, 100)));
  s.on('error', (e) => res(e.code));
}));
const run = (cmd, args) => {
  const r = spawnSync(cmd, args, { input: '', encoding: 'utf8', timeout: 5000 });
  return { status: r.status, signal: r.signal, error: r.error ? r.error.code : null, out: String((r.stdout || '') + (r.stderr || '')).slice(0, 300) };
};

const attacks = {
  async read() {
    const out = {};
    for (const x of p.paths) out[x] = tryIt(() => readAny(x));
    return out;
  },
  async write() {
    const out = {};
    for (const x of p.paths) out[x] = tryIt(() => fs.writeFileSync(x, 'pwned'));
    return out;
  },
  /** Finds the victim (by /proc and by the host's mount table) and tries every way into its workspace. */
  async neighbour() {
    const victims = processes().filter((x) => x.cmd.includes('victim.js'));
    let mounts = '';
    try { mounts = fs.readFileSync('/proc/self/mountinfo', 'utf8'); } catch { /* no /proc */ }
    const mounted = [...new Set(mounts.match(/\/\S+\/workspace(?= )/g) || [])].filter((m) => !m.includes(process.env.FABRIC_SESSION_ID));
    const out = { victimsSeen: victims.length, paths: {}, discovered: {}, proc: {} };
    for (const x of p.paths) out.paths[x] = tryIt(() => readAny(x));
    for (const x of mounted.flatMap((m) => [m, m + '/secret.txt'])) out.discovered[x] = tryIt(() => readAny(x));
    for (const v of victims) {
      out.proc[v.pid] = {
        environ: tryIt(() => fs.readFileSync('/proc/' + v.pid + '/environ', 'utf8')),
        cwd: tryIt(() => fs.readlinkSync('/proc/' + v.pid + '/cwd')),
        root: tryIt(() => fs.readdirSync('/proc/' + v.pid + '/root/')),
        fd: tryIt(() => fs.readdirSync('/proc/' + v.pid + '/fd')),
        secretViaRoot: tryIt(() => fs.readFileSync('/proc/' + v.pid + '/root' + p.victimWorkspace + '/secret.txt', 'utf8')),
        kill: tryIt(() => process.kill(v.pid, 'SIGKILL')),
      };
    }
    return out;
  },
  async processes() {
    const w = p.workerPid;
    return {
      uid: process.getuid(),
      seen: processes(),
      worker: {
        kill: tryIt(() => process.kill(w, 0)),
        environ: tryIt(() => fs.readFileSync('/proc/' + w + '/environ', 'utf8')),
        fd: tryIt(() => fs.readdirSync('/proc/' + w + '/fd')),
        mem: tryIt(() => fs.readFileSync('/proc/' + w + '/mem')),
      },
    };
  },
  async privileges() {
    const st = fs.readFileSync('/proc/self/status', 'utf8');
    fs.mkdirSync(ws + '/mnt');
    const cgroups = {};
    // its own cgroup, as /proc/self/cgroup names it (…/agent-fabric/<name>); the session id when it names none
    const own = (/agent-fabric\/([^/\s]+)/.exec(fs.readFileSync('/proc/self/cgroup', 'utf8')) || [])[1] || process.env.FABRIC_SESSION_ID;
    for (const [f, v] of p.cgroupWrites) cgroups[f.replace('CGROUP', own)] = tryIt(() => fs.writeFileSync(f.replace('CGROUP', own), v.replace('SELF', String(process.pid))));
    return {
      uid: process.getuid(),
      setuid: tryIt(() => process.setuid(0)),
      setgid: tryIt(() => process.setgid(0)),
      seteuid: tryIt(() => process.seteuid(0)),
      setgroups: tryIt(() => process.setgroups([0])),
      uidAfter: process.getuid(),
      euidAfter: process.geteuid(),
      capEff: field(st, 'CapEff'),
      capPrm: field(st, 'CapPrm'),
      capAmb: field(st, 'CapAmb'),
      noNewPrivs: field(st, 'NoNewPrivs'),
      su: run('su', ['root', '-c', 'id -u']),
      mount: run('mount', ['-t', 'tmpfs', 'none', ws + '/mnt']),
      cgroups,
    };
  },
  async network() {
    const resolver = new dns.promises.Resolver({ timeout: 1500, tries: 1 });
    resolver.setServers(['1.1.1.1']);
    const [pg, pg6, external, lookup, resolve, pgUnix] = await Promise.all([
      tcp({ host: '127.0.0.1', port: 5432 }),
      tcp({ host: '::1', port: 5432 }),
      tcp({ host: '1.1.1.1', port: 443 }),
      within(6000, dns.promises.lookup('example.com').then((a) => 'ALLOWED: ' + a.address, (e) => e.code)),
      within(6000, resolver.resolve4('example.com').then((a) => 'ALLOWED: ' + a, (e) => e.code)),
      tcp({ path: '/var/run/postgresql/.s.PGSQL.5432' }),
    ]);
    return { pg, pg6, external, lookup, resolve, pgUnix };
  },
  async egress() {
    const fetched = await within(8000, fetch('http://denied-fetch.example/').then((r) => 'ALLOWED: ' + r.status, (e) => (e.cause && e.cause.code) || e.code || String(e.message)));
    return {
      proxyEnv: process.env.HTTP_PROXY,
      fetch: fetched,
      get: await viaProxy('GET http://denied-get.example/ HTTP/1.1\r\nHost: denied-get.example\r\n\r\n'),
      connect: await viaProxy('CONNECT denied-connect.example:443 HTTP/1.1\r\nHost: denied-connect.example:443\r\n\r\n'),
      suffix: await viaProxy('CONNECT allowed.example.evil.example:443 HTTP/1.1\r\nHost: allowed.example.evil.example:443\r\n\r\n'),
      otherPort: await viaProxy('CONNECT allowed.example:22 HTTP/1.1\r\nHost: allowed.example:22\r\n\r\n'),
      postgres: await viaProxy('CONNECT 127.0.0.1:5432 HTTP/1.1\r\nHost: 127.0.0.1:5432\r\n\r\n'),
    };
  },
  async forkbomb() {
    await fs.promises.readFile('/proc/self/status'); // libuv's thread pool starts now, not past the limit
    const script = 'n=0; while [ $n -lt ' + p.count + ' ]; do sleep 30 </dev/null >/dev/null 2>&1 & n=$((n+1)); echo $n; done; echo done';
    const sh = spawn('/bin/sh', ['-c', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let last = '';
    let stderr = '';
    sh.stdout.on('data', (d) => { last = String(d).trim().split('\n').pop(); });
    sh.stderr.on('data', (d) => { stderr += d; });
    const exit = await new Promise((res) => sh.on('exit', (code, signal) => res({ code, signal })));
    await new Promise((r) => setTimeout(r, 50)); // the last stdout chunk
    // the shell's own exit freed a slot or two: node forks on until the kernel refuses
    let nodeForked = 0;
    let nodeSpawn = 'ALLOWED';
    while (nodeForked < 100 && nodeSpawn === 'ALLOWED') {
      nodeSpawn = await new Promise((res) => {
        try {
          const c = spawn('sleep', ['30'], { stdio: 'ignore' });
          c.on('error', (e) => res(e.code));
          c.on('spawn', () => res('ALLOWED'));
        } catch (e) { res(e.code); }
      });
      if (nodeSpawn === 'ALLOWED') nodeForked++;
    }
    await new Promise((r) => setTimeout(r, p.holdMs)); // at the limit for a while, so the host sees it
    return { uid: process.getuid(), forked: Number(last) || last, shExit: exit, shStderr: stderr.slice(0, 300), nodeForked, nodeSpawn };
  },
  async memhog() {
    const keep = [];
    for (;;) keep.push(Buffer.alloc(16 * 1024 * 1024, 1));
  },
  async spin() {
    const { Worker } = require('worker_threads');
    const src = 'const end = Date.now() + ' + p.ms + '; while (Date.now() < end);';
    const threads = Array.from({ length: p.threads - 1 }, () => new Worker(src, { eval: true }));
    const end = Date.now() + p.ms;
    while (Date.now() < end);
    await Promise.all(threads.map((t) => new Promise((r) => t.on('exit', r))));
    return { threads: p.threads };
  },
};

// exit at once: children it started (the fork bomb's) must not keep it alive
attacks[p.attack]().then((r) => { fs.writeFileSync(ws + '/result.json', JSON.stringify(r)); process.exit(0); }, (e) => { console.error(e && e.stack); process.exit(3); });
`;

/** The victim: keeps a world-readable secret in its workspace and sleeps until cancelled. */
const VICTIM_JS = String.raw`'use strict';
const fs = require('fs');
const task = JSON.parse(fs.readFileSync(0, 'utf8'));
fs.writeFileSync(process.env.FABRIC_WORKSPACE + '/secret.txt', task.payload.secret, { mode: 0o644 });
setTimeout(() => {}, 120000);
`;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Host processes owned by `uid` that still run (from /proc/<pid>/status). Zombies are left out:
 * they are dead, hold no memory or files, and are reaped by whoever inherited them (orphans of a
 * process-level sandbox go to the host's init).
 */
function liveProcessesOf(uid: number): string[] {
  const out: string[] = [];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const st = fs.readFileSync(`/proc/${d}/status`, 'utf8');
      const owner = Number(/^Uid:\s+(\d+)/m.exec(st)?.[1]);
      const state = /^State:\s+(\S)/m.exec(st)?.[1];
      if (owner === uid && state !== 'Z') out.push(`${d} ${state} ${fs.readFileSync(`/proc/${d}/cmdline`, 'utf8').replace(/\0/g, ' ')}`);
    } catch {
      /* exited */
    }
  }
  return out;
}

/** The parent of every session cgroup for `controller` (v1), or of every session cgroup (v2). */
function cgroupParent(controller: 'memory' | 'cpu' | 'pids'): string {
  const c = host.cgroups;
  if (c.kind === 'v2') return path.join(c.root, 'agent-fabric');
  if (c.kind === 'v1') return path.join(c[controller], 'agent-fabric');
  throw new Error('no cgroups');
}

/** The cgroup directory of session `sid` (its name ends with the session id), if it exists now. */
function cgroupOf(controller: 'memory' | 'cpu' | 'pids', sid: string): string | undefined {
  const parent = cgroupParent(controller);
  const name = fs.readdirSync(parent).find((n) => n.endsWith(sid));
  return name ? path.join(parent, name) : undefined;
}

describe(`sandbox escape suite (${ENGINE})`, { skip }, () => {
  let t: TestApp;
  let worker: Worker;
  let root: string;
  let codeDir: string;
  let dataDir: string;
  let sessionsDir: string;

  before(async () => {
    root = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'fabric-escape-test-'))); // real: compared with the mount table
    fs.chmodSync(root, 0o755); // the code dir below must be reachable by the sandbox uids
    codeDir = path.join(root, 'code');
    fs.mkdirSync(codeDir, { mode: 0o755 });
    fs.writeFileSync(path.join(codeDir, 'attack.js'), ATTACK_JS, { mode: 0o644 });
    fs.writeFileSync(path.join(codeDir, 'victim.js'), VICTIM_JS, { mode: 0o644 });
    // a data dir laid out like the fabric's own (0700, a 0600 secret inside), so reading it has something to find
    dataDir = path.join(root, 'data');
    fs.mkdirSync(dataDir, { mode: 0o700 });
    fs.writeFileSync(path.join(dataDir, 'jwt-secret'), 'the-fabric-secret', { mode: 0o600 });
    t = await startTestApp({ config: { dataDir } });
    const dirs = prepareSandboxRoot(path.join(root, 'sandbox'));
    sessionsDir = dirs.sessionsDir;
    const executor = testSandboxExecutor(t, dirs, { uidBase: UID_BASE, uidCount: UID_COUNT, pidsLimit: PIDS_LIMIT });
    worker = await startWorker(t, executor);
  });
  after(async () => {
    await worker?.stop(1000);
    await t?.close();
    if (root) fs.rmSync(root, { recursive: true, force: true });
  });

  const agent = (level: Level, program: string, isolation: Record<string, unknown> = {}) =>
    provisionAgent(t, {
      isolation: { level, memory_mb: 128, ...isolation },
      entrypoint: { command: ['node', path.join(level === 'container' ? '/agent' : codeDir, program)], code_dir: codeDir },
    });

  const sessions = async (agentId: string) =>
    (await t.app.inject({ method: 'GET', url: `/api/agents/${agentId}/sessions`, headers: await t.auth('admin') })).json().sessions as Session[];

  /** Polls until the agent's first session exists; returns it. */
  const firstSession = async (agentId: string, timeoutMs = 15_000): Promise<Session> => {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const [s] = await sessions(agentId);
      if (s) return s;
      if (Date.now() > until) throw new Error(`agent ${agentId} never started a session`);
      await sleep(20);
    }
  };

  /** Runs `attack` as a fresh agent at `level`; the task must complete (the program reports what happened). */
  const attack = async <R = Record<string, string>>(level: Level, name: string, payload: Record<string, unknown> = {}, isolation: Record<string, unknown> = {}) => {
    const agentId = await agent(level, 'attack.js', isolation);
    const task = (await submit(t, { agent_id: agentId, type: name, payload: { attack: name, ...payload }, max_retries: 0 })).json().task as Task;
    const done = await waitForTask(t, task.id, terminal, 30_000);
    assert.equal(done.status, 'completed', `the ${name} program must run to the end and report: ${JSON.stringify(done.error)}`);
    const [session] = await sessions(agentId);
    return { result: done.result as R, agentId, task: done, session: session! };
  };

  /** Asserts every entry of `got` is the errno `want` (or one of `want`), naming the path that got through. */
  const allBlocked = (got: Record<string, string>, want: string | RegExp, what: string) => {
    for (const [k, v] of Object.entries(got)) {
      if (typeof want === 'string') assert.equal(v, want, `${what}: ${k} gave ${v}`);
      else assert.match(v, want, `${what}: ${k} gave ${v}`);
    }
  };

  // ---- reading what is not its own -----------------------------------------------------------

  for (const level of ['process', 'container'] as const) {
    it(`${level}: another agent's workspace cannot be found or read, even by a concurrent attacker who knows its path`, async () => {
      const secret = `victim-secret-${randomBytes(8).toString('hex')}`;
      const victimId = await agent(level, 'victim.js');
      const victimTask = (await submit(t, { agent_id: victimId, type: 'victim', payload: { secret }, timeout_seconds: 60, max_retries: 0 })).json().task as Task;
      try {
        const victim = await firstSession(victimId);
        const victimWorkspace = path.join(sessionsDir, victim.id, 'workspace');
        const secretFile = path.join(victimWorkspace, 'secret.txt');
        for (const until = Date.now() + 15_000; !fs.existsSync(secretFile); await sleep(20)) if (Date.now() > until) throw new Error('the victim never wrote its secret');
        type Found = { victimsSeen: number; paths: Record<string, string>; discovered: Record<string, string>; proc: Record<string, Record<string, string>> };
        const { result } = await attack<Found>(level, 'neighbour', {
          paths: [sessionsDir, path.join(sessionsDir, victim.id), victimWorkspace, secretFile],
          victimWorkspace,
        });
        assert.ok(!JSON.stringify(result).includes(secret), `the secret leaked: ${JSON.stringify(result)}`);
        if (level === 'process') {
          // The host's filesystem, but a private /tmp holding only its own session dir (the
          // sandbox root lives under /tmp here): the sessions dir lists at most its own session,
          // and the victim's dir, workspace and file do not exist there → ENOENT. (With the
          // sandbox root outside /tmp, sessions/ is 0711 and the workspace a 0700 tmpfs of
          // another uid → EACCES.)
          const { [sessionsDir]: listing, ...victimPaths } = result.paths;
          assert.ok(!String(listing).includes(victim.id), `the sessions dir must not reveal the victim: ${listing}`);
          allBlocked(victimPaths, /^(ENOENT|EACCES)$/, 'read across sandboxes');
          // The mount table may still name other sessions' workspaces (paths are not secret);
          // each is refused alike.
          allBlocked(result.discovered, /^(EACCES|ENOENT)$/, 'read a workspace found in the mount table');
          // With no pid namespace the victim's process is visible, but its /proc entries are
          // guarded by the ptrace access check (another uid) → EACCES, and it cannot be signalled → EPERM.
          assert.ok(result.victimsSeen >= 1, 'the process-level attacker sees the victim process (no pid namespace)');
          for (const [pid, r] of Object.entries(result.proc)) {
            for (const k of ['environ', 'cwd', 'root', 'fd', 'secretViaRoot']) assert.equal(r[k], 'EACCES', `/proc/${pid} ${k}: ${r[k]}`);
            assert.equal(r.kill, 'EPERM', `kill victim ${pid}: ${r.kill}`);
          }
        } else {
          // Its own mount namespace: nothing of the host's sandbox root is mounted → ENOENT, and
          // its own pid namespace holds no victim to go through.
          allBlocked(result.paths, 'ENOENT', 'read across sandboxes');
          assert.equal(result.victimsSeen, 0, 'the container sees no other sandbox');
          assert.deepEqual(result.discovered, {}, 'the container mount table shows no other workspace');
        }
        const still = await waitForTask(t, victimTask.id, () => true);
        assert.equal(still.status, 'running', 'the victim survived the attack');
        assert.equal(fs.readFileSync(secretFile, 'utf8'), secret);
      } finally {
        await t.app.inject({ method: 'POST', url: `/api/tasks/${victimTask.id}/cancel`, headers: await t.auth('admin') });
        assert.equal((await waitForTask(t, victimTask.id, terminal, 15_000)).status, 'cancelled');
      }
    });

    it(`${level}: the host's /root, the fabric's data dir and the sandbox root are unreadable`, async () => {
      const paths = ['/root', '/root/.bashrc', dataDir, path.join(dataDir, 'jwt-secret'), sessionsDir, path.join(root, 'sandbox', 'uids')];
      const { result } = await attack(level, 'read', { paths });
      // container: none of it is mounted in the sandbox's root → ENOENT. process: root-owned 0700
      // dirs → EACCES, and what lives under the host's /tmp (here: the data dir and the sandbox
      // root) is not in its private /tmp → ENOENT — except its own session, the only entry the
      // sessions dir may list.
      if (level === 'container') allBlocked(result, 'ENOENT', 'read host path');
      else {
        const { [sessionsDir]: listing, ...rest } = result;
        assert.match(String(listing), /^(EACCES|ENOENT|ALLOWED: [0-9a-f-]{36})$/, `the sessions dir lists at most its own session: ${listing}`);
        assert.equal(result['/root'], 'EACCES');
        allBlocked(rest, /^(EACCES|ENOENT)$/, 'read host path');
      }
    });
  }

  // ---- writing outside /workspace ------------------------------------------------------------

  it('container: /usr, /etc, /agent (code), /fabric (helpers) and / are read-only; /tmp is private', async () => {
    const marker = `escape-${randomBytes(6).toString('hex')}`;
    const ro = ['/usr/pwned', '/usr/bin/node', '/etc/ssl/pwned', '/agent/pwned', '/agent/attack.js', '/fabric/preload.cjs', `/etc/${marker}`, `/${marker}`];
    const { result } = await attack('container', 'write', { paths: [...ro, `/tmp/${marker}`, `/workspace/${marker}`] });
    // nothing reached the host: not its /tmp (the sandbox's is a private tmpfs), /etc, / or the code dir
    for (const p of [`/tmp/${marker}`, `/etc/${marker}`, `/${marker}`, path.join(codeDir, 'pwned')]) assert.ok(!fs.existsSync(p), `${p} appeared on the host`);
    assert.equal(fs.readFileSync(path.join(codeDir, 'attack.js'), 'utf8'), ATTACK_JS, 'the code dir is untouched');
    assert.equal(result[`/tmp/${marker}`], 'ALLOWED', '/tmp is writable inside');
    assert.equal(result[`/workspace/${marker}`], 'ALLOWED');
    // the read-only binds refuse with EROFS (the mount, not merely a permission the uid lacks)
    for (const p of ['/usr/pwned', '/usr/bin/node', '/etc/ssl/pwned', '/agent/pwned', '/agent/attack.js', '/fabric/preload.cjs']) assert.equal(result[p], 'EROFS', `write ${p}: ${result[p]}`);
    // and so must the sandbox's own root and /etc (bwrap's tmpfs root): writes outside /workspace and /tmp are refused
    for (const p of [`/etc/${marker}`, `/${marker}`]) assert.match(result[p]!, /^(EROFS|EACCES)$/, `write ${p}: ${result[p]}`);
  });

  it('process: /usr, /etc, the code dir, the sandbox root and the data dir are not writable', async () => {
    const paths = ['/usr/pwned', '/etc/pwned', '/etc/passwd', path.join(codeDir, 'pwned'), path.join(codeDir, 'attack.js'), path.join(sessionsDir, 'pwned'), path.join(dataDir, 'pwned'), '/root/pwned'];
    const { result } = await attack('process', 'write', { paths });
    // root-owned paths → EACCES (or EROFS: the host's read-only binds); under the private /tmp the
    // data dir does not exist → ENOENT, and the sessions dir there is the sandbox's own tmpfs: a
    // write may land in it, but never on the host
    for (const p of paths) assert.ok(!fs.existsSync(p) || p.endsWith('attack.js') || p === '/etc/passwd', `${p} appeared on the host`);
    const { [path.join(sessionsDir, 'pwned')]: _ownTmp, ...host } = result;
    allBlocked(host, /^(EACCES|EROFS|ENOENT)$/, 'write host path');
    assert.equal(result['/etc/passwd'], 'EACCES');
    assert.equal(fs.readFileSync(path.join(codeDir, 'attack.js'), 'utf8'), ATTACK_JS, 'the code dir is untouched');
  });

  // ---- processes -----------------------------------------------------------------------------

  it("container: sees only its own processes, none of the host's or the worker's", async () => {
    const { result } = await attack<{ uid: number; seen: { pid: number; uid: number; cmd: string }[]; worker: Record<string, string> }>('container', 'processes', { workerPid: process.pid });
    const seen = result.seen;
    assert.ok(seen.length >= 2 && seen.length <= 5, `a handful of its own processes (bwrap's init, the relay, the program), saw ${JSON.stringify(seen)}`);
    for (const s of seen) assert.equal(s.uid, result.uid, `every visible process is the sandbox's own uid: ${JSON.stringify(s)}`);
    assert.ok(!seen.some((s) => s.uid === 0), 'no root process is visible');
    const me = process.argv.join(' ');
    assert.ok(!seen.some((s) => s.cmd === me || s.cmd.includes('sandbox-escape.test')), `the worker is invisible: ${JSON.stringify(seen)}`);
    assert.ok(seen.some((s) => s.cmd.includes('attack.js')), 'it sees itself');
  });

  it("process: host processes are visible (no pid namespace) but the worker's cannot be signalled or inspected", async () => {
    const { result } = await attack<{ uid: number; seen: { uid: number }[]; worker: Record<string, string> }>('process', 'processes', { workerPid: process.pid });
    assert.equal(result.worker.kill, 'EPERM', 'kill(worker, 0)');
    for (const k of ['environ', 'fd', 'mem']) assert.equal(result.worker[k], 'EACCES', `/proc/<worker>/${k}: ${result.worker[k]}`);
  });

  // ---- privileges ----------------------------------------------------------------------------

  for (const level of ['process', 'container'] as const) {
    it(`${level}: cannot raise its privileges (setuid/setgid, capabilities, setuid binaries, its own cgroup: raise a limit or leave it)`, async () => {
      // the session's own limit files (CGROUP: the program fills in its cgroup's name) and the
      // top cgroup.procs (moving itself out of its cgroup)
      const lim = (ctrl: 'memory' | 'cpu' | 'pids', file: string, value: string): [string, string] => [path.join(cgroupParent(ctrl), 'CGROUP', file), value];
      const leave = (ctrl: 'memory' | 'cpu' | 'pids'): [string, string] => [path.join(cgroupParent(ctrl), '..', 'cgroup.procs'), 'SELF'];
      const writes: [string, string][] =
        host.cgroups.kind === 'v1'
          ? [lim('memory', 'memory.limit_in_bytes', '-1'), lim('cpu', 'cpu.cfs_quota_us', '-1'), lim('pids', 'pids.max', 'max'), leave('memory'), leave('cpu'), leave('pids')]
          : [lim('memory', 'memory.max', 'max'), lim('cpu', 'cpu.max', 'max'), lim('pids', 'pids.max', 'max'), leave('pids')];
      const { result: r } = await attack<Record<string, unknown> & { su: { status: number | null; out: string }; mount: { status: number | null; out: string }; cgroups: Record<string, string> }>(level, 'privileges', {
        cgroupWrites: writes.map(([f, v]) => [path.normalize(f), v]),
      });
      // setuid(0) as an unprivileged uid → EPERM; in a user namespace (both levels) where 0 has no
      // mapping, the kernel says EINVAL first.
      const code = /^(EPERM|EINVAL)$/;
      for (const k of ['setuid', 'setgid', 'seteuid', 'setgroups']) assert.match(String(r[k]), code, `${k}(0): ${r[k]}`);
      assert.equal(r.uidAfter, r.uid);
      assert.equal(r.euidAfter, r.uid, 'still its own unprivileged uid');
      assert.equal(r.capEff, '0000000000000000', 'no effective capabilities');
      assert.equal(r.capPrm, '0000000000000000', 'no permitted capabilities');
      assert.equal(r.capAmb, '0000000000000000', 'no ambient capabilities');
      assert.equal(r.noNewPrivs, '1', 'no_new_privs: setuid bits and file capabilities are ignored');
      assert.notEqual(r.su.status, 0, `su root: ${JSON.stringify(r.su)}`);
      assert.doesNotMatch(r.su.out, /^0$/m, 'su did not run anything as root');
      assert.notEqual(r.mount.status, 0, `mount: ${JSON.stringify(r.mount)}`);
      // process: the limit files and the parent's cgroup.procs are root's (only the session's own
      // cgroup.procs is the sandbox's) → EACCES. container: no /sys at all → ENOENT.
      assert.equal(Object.keys(r.cgroups).length, writes.length);
      allBlocked(r.cgroups, level === 'process' ? 'EACCES' : 'ENOENT', 'cgroup write');
    });
  }

  // ---- network -------------------------------------------------------------------------------

  it('container: direct TCP (PostgreSQL on 127.0.0.1 and ::1, an external IP, the PostgreSQL Unix socket) and DNS fail', async () => {
    const { result } = await attack('container', 'network');
    // its own network namespace has only lo: nothing listens on 5432 there, and no route leaves it
    assert.equal(result.pg, 'ECONNREFUSED', `tcp 127.0.0.1:5432: ${result.pg}`);
    assert.match(result.pg6!, /^(ECONNREFUSED|EADDRNOTAVAIL|ENETUNREACH)$/, `tcp [::1]:5432: ${result.pg6}`);
    assert.equal(result.external, 'ENETUNREACH', `tcp 1.1.1.1:443: ${result.external}`);
    // no resolv.conf inside: glibc asks 127.0.0.1:53, where nothing listens → EAI_AGAIN; a chosen DNS server is unroutable
    assert.match(result.lookup!, /^(EAI_AGAIN|ENOTFOUND)$/, `dns.lookup: ${result.lookup}`);
    assert.match(result.resolve!, /^(ECONNREFUSED|ENETUNREACH|ETIMEOUT)$/, `dns.resolve4 via 1.1.1.1: ${result.resolve}`);
    assert.equal(result.pgUnix, 'ENOENT', `the host's PostgreSQL socket: ${result.pgUnix}`);
  });

  it('process: direct TCP, DNS and the host\'s Unix sockets fail (own network namespace, private /run and /tmp)', async () => {
    const { result } = await attack('process', 'network');
    assert.equal(result.pg, 'ECONNREFUSED', `tcp 127.0.0.1:5432: ${result.pg}`);
    assert.equal(result.external, 'ENETUNREACH', `tcp 1.1.1.1:443: ${result.external}`);
    assert.match(result.lookup!, /^(EAI_AGAIN|ENOTFOUND)$/, `dns.lookup: ${result.lookup}`);
    assert.equal(result.pgUnix, 'ENOENT', `the host's PostgreSQL socket: ${result.pgUnix}`);
  });

  it('container: egress to names not on network_egress is answered 403 by the proxy, and each denial is audited', async () => {
    const { result, agentId, session } = await attack('container', 'egress', {}, { network_egress: ['allowed.example'] });
    assert.equal(result.proxyEnv, 'http://127.0.0.1:3128', 'HTTP_PROXY is set inside');
    // fetch() goes through the preload's dispatcher, which tunnels via the proxy and surfaces its refusal
    assert.equal(result.fetch, 'EGRESS_DENIED', `fetch() through the preloaded dispatcher: ${result.fetch}`);
    // raw requests to the proxy: another name (plain GET and CONNECT), a look-alike suffix of an
    // allowed name, an allowed name on a port it does not allow, and PostgreSQL by IP
    for (const k of ['get', 'connect', 'suffix', 'otherPort', 'postgres']) assert.equal(result[k], 403, `${k}: ${result[k]}`);
    const denied = [
      { host: 'denied-fetch.example', port: 80, method: 'CONNECT' },
      { host: 'denied-get.example', port: 80, method: 'GET' },
      { host: 'denied-connect.example', port: 443, method: 'CONNECT' },
      { host: 'allowed.example.evil.example', port: 443, method: 'CONNECT' },
      { host: 'allowed.example', port: 22, method: 'CONNECT' },
      { host: '127.0.0.1', port: 5432, method: 'CONNECT' },
    ];
    type Row = { actor_sub: string; target_type: string; target_id: string; tenant_id: string | null; after: { host: string; port: number; method: string; reason: string } };
    let rows: Row[] = [];
    for (const until = Date.now() + 5000; ; await sleep(100)) {
      rows = (await t.db.query<Row>(`SELECT * FROM audit_log WHERE action = 'sandbox.egress.denied' AND target_id = $1 ORDER BY id`, [session.id])).rows;
      if (rows.length >= denied.length || Date.now() > until) break;
    }
    assert.equal(rows.length, denied.length, `one audit_log row per denied destination, got ${JSON.stringify(rows)}`);
    for (const d of denied) {
      const row = rows.find((r) => r.after?.host === d.host && r.after?.port === d.port);
      assert.ok(row, `no audit row for ${d.host}:${d.port}`);
      assert.equal(row.target_type, 'session');
      assert.equal(row.actor_sub, agentId);
      assert.equal(row.after.method, d.method);
      assert.equal(row.after.reason, 'not on allow-list');
    }
  });

  // ---- limits --------------------------------------------------------------------------------

  for (const level of ['process', 'container'] as const) {
    it(`${level}: a fork bomb hits the pids limit (EAGAIN), never exceeds it, and nothing of it survives the task`, async () => {
      const agentId = await agent(level, 'attack.js');
      const task = (await submit(t, { agent_id: agentId, type: 'forkbomb', payload: { attack: 'forkbomb', count: 500, holdMs: 500 }, max_retries: 0 })).json().task as Task;
      // watch the session's pids cgroup from the host while the bomb runs
      const s = await firstSession(agentId);
      let dir: string | undefined;
      let peak = 0;
      let refused = 0;
      for (;;) {
        dir ??= cgroupOf('pids', s.id);
        try {
          if (dir) {
            peak = Math.max(peak, Number(fs.readFileSync(path.join(dir, 'pids.current'), 'utf8')));
            refused = Math.max(refused, Number(/^max (\d+)/m.exec(fs.readFileSync(path.join(dir, 'pids.events'), 'utf8'))?.[1] ?? 0));
          }
        } catch {
          /* already removed */
        }
        if (terminal(await waitForTask(t, task.id, () => true))) break;
        await sleep(5);
      }
      const done = await waitForTask(t, task.id, terminal);
      assert.equal(done.status, 'completed', `the task ends normally, with the program's report: ${JSON.stringify(done.error)}`);
      const r = done.result as { uid: number; forked: number; shExit: { code: number | null }; shStderr: string; nodeForked: number; nodeSpawn: string };
      assert.ok(dir, 'the session had a pids cgroup');
      // the shell dies at its first failed fork (dash: "Cannot fork", status 2)
      assert.ok(r.forked > 0 && r.forked < PIDS_LIMIT, `the shell forked ${r.forked} of 500 before the limit`);
      assert.equal(r.shExit.code, 2, `the bomb's shell failed: ${JSON.stringify(r.shExit)} ${r.shStderr}`);
      assert.match(r.shStderr, /Cannot fork/);
      // node's spawn gets the errno itself (fork → EAGAIN), after at most the slot or two the shell freed
      assert.equal(r.nodeSpawn, 'EAGAIN', `spawning past the limit: ${r.nodeSpawn}`);
      assert.ok(r.nodeForked <= 3, `node forked ${r.nodeForked} more`);
      assert.ok(peak > 0 && peak <= PIDS_LIMIT, `live tasks peaked at ${peak} (limit ${PIDS_LIMIT})`);
      assert.ok(refused > 0, 'the kernel refused forks (pids.events max)');
      const [ended] = await sessions(agentId);
      assert.equal(ended!.status, 'completed');
      assert.ok(ended!.usage!.wallSeconds < 10, `the bomb's 30 s sleepers did not hold the session open (${ended!.usage!.wallSeconds} s)`);
      // every process of the session is gone, and so is its cgroup
      assert.deepEqual(liveProcessesOf(r.uid), [], `processes of sandbox uid ${r.uid} survived`);
      assert.ok(!fs.existsSync(dir), `the session cgroup ${dir} was removed`);
    });
  }

  for (const level of ['process', 'container'] as const) {
    it(`${level}: allocating past memory_mb is killed and recorded as oom_killed`, async () => {
      const agentId = await agent(level, 'attack.js', { memory_mb: 64 });
      const task = (await submit(t, { agent_id: agentId, type: 'memhog', payload: { attack: 'memhog' }, max_retries: 0 })).json().task as Task;
      const done = await waitForTask(t, task.id, terminal, 30_000);
      assert.equal(done.status, 'dead_lettered');
      const [s] = await sessions(agentId);
      assert.equal(s!.status, 'failed');
      assert.equal(s!.error?.code, 'oom_killed');
      assert.equal(s!.usage?.oomKilled, true);
      assert.ok(s!.usage!.peakMemoryBytes <= 64 * 1024 * 1024, `peak ${s!.usage!.peakMemoryBytes} bytes stayed within memory_mb`);
    });
  }

  for (const level of ['process', 'container'] as const) {
    it(`${level}: spinning on every core with cpu_cores 0.5 gets at most ~0.6 CPU-seconds per wall second`, async () => {
      // a busy thread per core for 2 s of wall time: unthrottled that is ~2 CPU-s per wall second here
      const cores = os.availableParallelism();
      const { session } = await attack(level, 'spin', { ms: 2000, threads: Math.max(2, cores) }, { cpu_cores: 0.5 });
      const { cpuSeconds, wallSeconds } = session.usage!;
      assert.ok(wallSeconds >= 2, `ran ${wallSeconds} s`);
      const share = cpuSeconds / wallSeconds;
      assert.ok(share <= 0.6, `${cpuSeconds.toFixed(2)} CPU-s in ${wallSeconds.toFixed(2)} s = ${share.toFixed(2)} cores, limit 0.5`);
      assert.ok(cpuSeconds > 0.3, `it did spin: ${cpuSeconds} CPU-s`);
    });
  }
});
