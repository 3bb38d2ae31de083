import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { detectSandboxHost, missingFor, prepareSandboxRoot } from './host.js';
import type { LaunchedSandbox, SandboxProfile } from './launch.js';
import { WarmPool, type WarmPoolOptions } from './pool.js';
import { sessionCgroupName } from './reaper.js';
import { runSession, type SessionHost, type SessionSpec } from './session.js';
import { UidPool } from './uids.js';

const sandboxHost = detectSandboxHost();
const skip = missingFor('container', sandboxHost);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Prints token | task id | stdin | the sorted names of its environment. */
const REPORT = `printf '%s|%s|%s|%s\\n' "$FABRIC_TOKEN" "$FABRIC_TASK_ID" "$(cat)" "$(env | cut -d= -f1 | sort | tr '\\n' ',')"`;

/** Whether a process is running (a zombie waiting for its reaper is not). */
function alive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

const RELAY = path.join(path.dirname(fileURLToPath(import.meta.url)), 'egress', 'relay.cjs');

/** relay.cjs as a supervisor only (no egress socket), its control channel on fd 3, as launch.ts runs it. */
function supervisor(extra: string[] = []) {
  const child = spawn(process.execPath, [RELAY, '--control', '3', '--beat', '50', ...extra], { stdio: ['pipe', 'pipe', 'pipe', 'pipe'] });
  const control = child.stdio[3] as unknown as Socket;
  let beats = 0;
  control.on('data', (d: Buffer) => (beats += d.length));
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exit = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  return { child, control, exit, beats: () => beats, out: () => ({ stdout, stderr }) };
}

describe('the supervisor (relay.cjs --control)', () => {
  it('heartbeats while it waits, then runs the command of its header line with exactly that environment, stdin passed through, fd 3 not inherited', async () => {
    const s = supervisor();
    while (s.beats() < 3) await sleep(20);
    const script = 'let i=""; process.stdin.on("data", d => i += d).on("end", () => { let fd3; try { require("fs").fstatSync(3); fd3 = require("fs").readlinkSync("/proc/self/fd/3"); } catch { fd3 = "closed"; } console.log(JSON.stringify({ env: process.env, stdin: i, fd3 })); });';
    s.control.write(`${JSON.stringify({ command: [process.execPath, '-e', script], env: { ONLY: 'this' } })}\n`);
    s.child.stdin!.end('the task');
    assert.equal(await s.exit, 0, s.out().stderr);
    const r = JSON.parse(s.out().stdout) as { env: Record<string, string>; stdin: string; fd3: string };
    assert.deepEqual(r.env, { ONLY: 'this' });
    assert.equal(r.stdin, 'the task');
    assert.ok(r.fd3 === 'closed' || r.fd3 === '/dev/null', `the program's fd 3 is ${r.fd3}, not the control channel`);
  });

  it('refuses a malformed header, saying what it expects', async () => {
    const s = supervisor();
    s.control.write('{"command": "not an array"}\n');
    assert.equal(await s.exit, 2);
    assert.match(s.out().stderr, /needs "command" \(non-empty array of strings\) and "env"/);
  });

  it('kills its program and exits when the worker’s end of the control channel closes', async () => {
    const s = supervisor(['--', process.execPath, '-e', 'console.log(process.pid); setTimeout(() => {}, 60000)']);
    while (!s.out().stdout.trim()) await sleep(20);
    const program = Number(s.out().stdout.trim());
    s.control.destroy();
    assert.equal(await s.exit, 1);
    for (let i = 0; i < 100 && alive(program); i++) await sleep(20);
    assert.equal(alive(program), false, `the program (pid ${program}) outlived its supervisor`);
  });

  it('refuses arguments it cannot use', async () => {
    for (const args of [[], ['--control', '1'], ['--control', '3', 'only-a-socket']]) {
      const r = spawn(process.execPath, [RELAY, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
      let err = '';
      r.stderr.on('data', (d: Buffer) => (err += d.toString()));
      assert.equal(await new Promise((resolve) => r.on('close', resolve)), 2, args.join(' '));
      assert.match(err, /usage: node relay.cjs/);
    }
  });
});

describe('warm pool of sandboxes', () => {
  it('size 0 disables it: take() never returns a sandbox and close() is immediate', async () => {
    const pool = new WarmPool({ size: 0, uids: new UidPool(os.tmpdir(), 1, 1), host: { sessionsDir: '/nonexistent', helpersDir: '/nonexistent', bwrap: undefined, cgroups: { kind: 'none', reason: 'test' }, tmpfsMb: 0 } });
    assert.equal(pool.take({ level: 'process', memoryMb: 64, cpuCores: 1, pids: 16 }), undefined);
    assert.deepEqual(pool.stats(), []);
    await pool.close();
    assert.throws(() => new WarmPool({ size: -1 } as WarmPoolOptions), /size must be an integer ≥ 0/);
  });
});

describe('warm pool and heartbeats in real sandboxes', { skip }, () => {
  let root: string;
  let dirs: ReturnType<typeof prepareSandboxRoot>;
  let uids: UidPool;
  let launchHost: WarmPoolOptions['host'];
  const pools: WarmPool[] = [];

  before(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'fabric-pool-test-'));
    fs.chmodSync(root, 0o755);
    dirs = prepareSandboxRoot(path.join(root, 'sandbox'));
    uids = new UidPool(dirs.uidsDir, 310_000, 64);
    launchHost = { sessionsDir: dirs.sessionsDir, helpersDir: dirs.helpersDir, bwrap: sandboxHost.bwrap, cgroups: sandboxHost.cgroups, tmpfsMb: 16 };
  });
  after(async () => {
    for (const p of pools) await p.close();
    if (root) fs.rmSync(root, { recursive: true, force: true });
  });

  /** A pool of size 1 (by default); the pools of earlier tests are closed first, so the session dir holds only this one's sandboxes. */
  const newPool = async (opts: Partial<WarmPoolOptions> = {}) => {
    for (const p of pools.splice(0)) await p.close();
    const errors: string[] = [];
    const pool = new WarmPool({ host: launchHost, uids, size: 1, onError: (e) => errors.push(e.message), ...opts });
    pools.push(pool);
    return { pool, errors };
  };

  const profileOf = (level: 'process' | 'container'): SandboxProfile => ({ level, memoryMb: 128, cpuCores: 1, pids: 32 });

  /** Runs `script` with sh in a session of `level` (a cold one takes a uid from `uids`). */
  async function session(level: 'process' | 'container', script: string, extra: { pool?: WarmPool; heartbeat?: SessionHost['heartbeat']; env?: Record<string, string>; internal?: string[]; id?: string } = {}) {
    const spec: SessionSpec = {
      id: extra.id ?? randomUUID(),
      ...profileOf(level),
      command: ['/bin/sh', '-c', script],
      egress: [],
      internal: extra.internal ?? [],
      env: extra.env ?? {},
      stdin: '{"task":1}',
      timeoutMs: 30_000,
    };
    const logs: string[] = [];
    const host: SessionHost = { ...launchHost, uids, onLog: (l) => logs.push(l), onEgress: () => {}, pool: extra.pool, heartbeat: extra.heartbeat };
    return { out: await runSession(spec, host, new AbortController().signal), logs, spec };
  }

  /** Pids in a session's cgroup (its pids controller). */
  function cgroupDir(id: string): string {
    const cg = sandboxHost.cgroups;
    if (cg.kind === 'none') throw new Error(cg.reason);
    return path.join(cg.kind === 'v1' ? cg.pids : cg.root, 'agent-fabric', sessionCgroupName(id));
  }
  function pidsOf(id: string): number[] {
    try {
      return fs.readFileSync(path.join(cgroupDir(id), 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
    } catch {
      return [];
    }
  }
  const cmdline = (pid: number) => {
    try {
      return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
    } catch {
      return '';
    }
  };
  /** The supervisor: node running relay.cjs (bwrap's own command line mentions relay.cjs too). */
  const relayOf = (id: string) => pidsOf(id).find((p) => /^\S*node \S*relay\.cjs /.test(cmdline(p)));
  const poolDirs = () => fs.readdirSync(dirs.sessionsDir).filter((n) => n.startsWith('pool-'));

  async function until<T>(what: string, f: () => T | undefined, timeoutMs = 10_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = f();
      if (v !== undefined) return v;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await sleep(10);
    }
  }

  for (const level of ['process', 'container'] as const) {
    it(`${level}: a session whose supervisor is frozen (SIGSTOP) is killed with heartbeat_lost within the timeout`, async () => {
      const id = randomUUID();
      const timeoutMs = 1000;
      const running = session(level, 'sleep 30', { id, heartbeat: { intervalMs: 100, timeoutMs } });
      const relay = await until('the relay and its program', () => {
        const r = relayOf(id);
        return r && pidsOf(id).some((p) => cmdline(p).startsWith('sleep')) ? r : undefined;
      });
      const frozenAt = performance.now();
      process.kill(relay, 'SIGSTOP');
      const { out } = await running;
      const took = performance.now() - frozenAt;
      assert.equal(out.stopped, 'heartbeat_lost');
      assert.equal(out.exitCode, null);
      assert.ok(took >= timeoutMs - 150 && took < timeoutMs + 1500, `killed ${Math.round(took)} ms after the freeze (timeout ${timeoutMs} ms)`);
      assert.equal(out.wipe.verified, true);
      assert.equal(alive(relay), false, 'the frozen relay was killed');
      assert.equal(fs.existsSync(cgroupDir(id)), false, 'the cgroup is gone');
    });

    it(`${level}: a heartbeating session is not stopped, and the first session of a profile runs cold while the pool warms it; the next takes a warm one and the pool refills`, async () => {
      const { pool, errors } = await newPool({ heartbeatMs: 100 });
      const profile = profileOf(level);
      const cold = await session(level, 'echo cold', { pool, heartbeat: { intervalMs: 100, timeoutMs: 1000 } });
      assert.equal(cold.out.warm, false);
      assert.equal(cold.out.result, 'cold');
      assert.equal(cold.out.stopped, undefined);
      await pool.waitIdle(profile, 1, 10_000);
      const warm = await session(level, 'sleep 1.5; echo warm', { pool, heartbeat: { timeoutMs: 1000 } }); // outlives the timeout: the pool's sandboxes beat every 100 ms
      assert.equal(warm.out.warm, true);
      assert.deepEqual([warm.out.exitCode, warm.out.stopped, warm.out.result], [0, undefined, 'warm']);
      assert.equal(warm.out.wipe.verified, true);
      await pool.waitIdle(profile, 1, 10_000); // refilled in the background
      assert.deepEqual(pool.stats(), [{ profile: { ...profile, codeDir: undefined }, idle: 1, launching: 0 }]);
      assert.deepEqual(errors, []);
    });
  }

  it('container: env and token given at assignment reach the program (and nothing else of the supervisor’s); none of it is in the warm sandbox before', async () => {
    const { pool } = await newPool();
    const profile = profileOf('container');
    await pool.waitIdle(profile, 1, 10_000);
    const [waiting] = poolDirs();
    const pids = pidsOf(waiting!);
    assert.ok(pids.length >= 2, `the warm sandbox runs (bwrap and its relay): ${pids}`);
    for (const pid of pids) {
      const environ = fs.readFileSync(`/proc/${pid}/environ`, 'utf8');
      assert.doesNotMatch(environ + cmdline(pid), /FABRIC_TOKEN|tok-secret|FABRIC_TASK_ID/, `pid ${pid} (${cmdline(pid)})`);
    }
    const { out } = await session('container', REPORT, { pool, env: { FABRIC_TOKEN: 'tok-secret', FABRIC_TASK_ID: 'task-42' } });
    assert.equal(out.warm, true);
    const [token, task, stdin, names] = String(out.result).split('|');
    assert.deepEqual([token, task, stdin], ['tok-secret', 'task-42', '{"task":1}']);
    const expected = ['FABRIC_TASK_ID', 'FABRIC_TOKEN', 'FABRIC_WORKSPACE', 'HOME', 'HTTPS_PROXY', 'HTTP_PROXY', 'NODE_OPTIONS', 'PATH', 'http_proxy', 'https_proxy'];
    // sh itself adds PWD (and SHLVL, _ in some shells)
    assert.deepEqual(names!.split(',').filter((n) => n && !['PWD', 'SHLVL', '_', 'OLDPWD'].includes(n)), expected);
  });

  it('container: the egress policy given at assignment applies in a warm sandbox', async () => {
    const server = http.createServer((_req, res) => res.end('inside'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    try {
      const { pool } = await newPool();
      await pool.waitIdle(profileOf('container'), 1, 10_000);
      const fetchIt = `node -e "fetch('http://127.0.0.1:${port}/').then(r => r.text(), e => 'denied').then(t => console.log(JSON.stringify(t)))"`;
      const allowed = await session('container', fetchIt, { pool, internal: [`127.0.0.1:${port}`] });
      assert.equal(allowed.out.warm, true);
      assert.equal(allowed.out.result, 'inside');
      await pool.waitIdle(profileOf('container'), 1, 10_000);
      const denied = await session('container', fetchIt, { pool });
      assert.equal(denied.out.warm, true);
      assert.equal(denied.out.result, 'denied', 'the previous session’s policy did not carry over');
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('a pooled sandbox never serves two sessions: each gets a fresh workspace and is disposed of', async () => {
    const { pool } = await newPool();
    const profile = profileOf('container');
    const taken: LaunchedSandbox[] = [];
    const take = pool.take.bind(pool);
    pool.take = (p) => {
      const s = take(p);
      if (s) taken.push(s);
      return s;
    };
    const marker = 'if [ -e /workspace/marker ]; then echo reused; else touch /workspace/marker; echo fresh; fi';
    for (let i = 0; i < 3; i++) {
      await pool.waitIdle(profile, 1, 10_000);
      const { out } = await session('container', marker, { pool });
      assert.deepEqual([out.warm, out.result], [true, 'fresh']);
    }
    assert.equal(new Set(taken.map((s) => s.id)).size, 3);
    for (const s of taken) {
      assert.equal(fs.existsSync(s.ws.dir), false, `${s.id}'s session dir is gone`);
      assert.equal(fs.existsSync(cgroupDir(s.id)), false, `${s.id}'s cgroup is gone`);
      assert.throws(() => s.start({ command: ['true'], env: {} }), /serves one task/);
    }
  });

  it('idle sandboxes that go silent or grow old are replaced', async () => {
    const { pool, errors } = await newPool({ heartbeatMs: 100, heartbeatTimeoutMs: 1000, maxIdleMs: 60_000 });
    const profile = profileOf('process');
    await pool.waitIdle(profile, 1, 10_000);
    const [first] = poolDirs();
    const relay = relayOf(first!)!;
    process.kill(relay, 'SIGSTOP');
    await until('the silent sandbox to be replaced', () => (poolDirs().some((d) => d !== first) && !poolDirs().includes(first!) ? true : undefined));
    assert.equal(alive(relay), false);
    assert.match(errors.join('\n'), /stopped heartbeating while idle/);

    const aging = (await newPool({ maxIdleMs: 200 })).pool;
    await aging.waitIdle(profile, 1, 10_000);
    const [young] = poolDirs();
    await until('the old sandbox to be recycled', () => (poolDirs().length === 1 && poolDirs()[0] !== young ? true : undefined));
  });

  it('close() kills and wipes every idle sandbox: no processes, cgroups, session dirs or uids left', async () => {
    const { pool } = await newPool({ size: 2 });
    await Promise.all([pool.waitIdle(profileOf('process'), 2, 15_000), pool.waitIdle(profileOf('container'), 2, 15_000)]);
    const ids = poolDirs();
    assert.equal(ids.length, 4);
    const pids = ids.flatMap(pidsOf);
    assert.ok(pids.length >= 6, `every sandbox runs (process: relay; container: bwrap ×2 and relay): ${pids}`);
    await pool.close();
    assert.deepEqual(poolDirs(), []);
    for (const id of ids) assert.equal(fs.existsSync(cgroupDir(id)), false, `cgroup of ${id}`);
    await until('every process to be reaped', () => (pids.some(alive) ? undefined : true), 2000);
    assert.deepEqual(fs.readdirSync(dirs.uidsDir), []);
    assert.equal(pool.take(profileOf('process')), undefined, 'a closed pool hands out nothing');
  });
});
