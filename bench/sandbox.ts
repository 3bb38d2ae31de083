/**
 * bench/sandbox — how fast a sandbox starts and how many sandboxed tasks a worker gets through,
 * against a plain child_process.spawn of the same program with no isolation, measured in the
 * same run. See bench/README.md ("Sandbox").
 *
 *   npm run bench:sandbox        (as root, with cgroups and bubblewrap)
 *   env: BENCH_SANDBOX_SAMPLES=100 (latency samples per line), BENCH_SANDBOX_TASKS=60 (tasks per
 *        throughput line), BENCH_SANDBOX_CONCURRENCY=2,4
 *
 * Spawn → first instruction: the clock starts just before runSession (or spawn) and stops at the
 * program's first action, `date +%s.%N`, which it prints; CLOCK_REALTIME is the same inside every
 * namespace, so the two readings compare.
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { detectSandboxHost, missingFor, prepareSandboxRoot } from '../src/sandbox/host.js';
import { launchSandbox } from '../src/sandbox/launch.js';
import { WarmPool } from '../src/sandbox/pool.js';
import { runSession, type SessionHost, type SessionSpec } from '../src/sandbox/session.js';
import { UidPool } from '../src/sandbox/uids.js';
import { fmt, median, percentile } from './lib/stats.js';
import { OtherCpu, ownCpuMs } from './sandbox/cpu.js';
import { intEnv } from './lib/env.js';

const SAMPLES = intEnv('BENCH_SANDBOX_SAMPLES', 100);
const TASKS = intEnv('BENCH_SANDBOX_TASKS', 60);
const CONCURRENCY = (process.env.BENCH_SANDBOX_CONCURRENCY ?? '2,4').split(',').map((s) => {
  const n = Number(s);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`BENCH_SANDBOX_CONCURRENCY must list positive integers, got ${s}`);
  return n;
});
const PROGRAM = ['/bin/sh', '-c', 'date +%s.%N'];
const LIMITS = { memoryMb: 256, cpuCores: 1, pids: 64 };
type Level = 'process' | 'container';
type Mode = 'cold' | 'warm';

/** Wall-clock ms with sub-ms precision, comparable with `date +%s.%N` in any namespace. */
const wallMs = () => performance.timeOrigin + performance.now();

const sandboxHost = detectSandboxHost();
/** CPU ms every session's cgroup used so far (for OtherCpu). */
let sandboxCpuMs = 0;

interface Setup {
  root: string;
  host: Omit<SessionHost, 'pool' | 'uids'>;
  uids: UidPool;
}

function setup(): Setup {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'fabric-bench-sandbox-'));
  fs.chmodSync(root, 0o755);
  const dirs = prepareSandboxRoot(path.join(root, 'sandbox'));
  const uids = new UidPool(dirs.uidsDir, 320_000, 256);
  const host = {
    sessionsDir: dirs.sessionsDir,
    helpersDir: dirs.helpersDir,
    bwrap: sandboxHost.bwrap,
    cgroups: sandboxHost.cgroups,
    tmpfsMb: 16,
    artifactsDir: path.join(root, 'artifacts'),
    onLog: () => {},
    onEgress: () => {},
  };
  return { root, host, uids };
}

/** Runs the program in a session, as the executor does (a uid per cold session); returns when it printed its first instruction (wall ms). */
async function inSandbox(s: Setup, level: Level, pool: WarmPool | undefined): Promise<{ firstAt: number; warm: boolean; cpuSeconds: number }> {
  const spec: SessionSpec = { id: randomUUID(), level, command: PROGRAM, ...LIMITS, egress: [], internal: [], env: {}, stdin: '', timeoutMs: 30_000 };
  const out = await runSession(spec, { ...s.host, uids: s.uids, pool }, new AbortController().signal);
  if (out.exitCode !== 0 || typeof out.result !== 'number') throw new Error(`the ${level} sandbox did not run the program: exit ${out.exitCode}, stopped ${out.stopped}, stderr ${out.stderrTail}`);
  sandboxCpuMs += out.usage.cpuSeconds * 1000;
  return { firstAt: out.result * 1000, warm: out.warm, cpuSeconds: out.usage.cpuSeconds };
}

/** The peer: the same program through a plain child_process.spawn (with only PATH in its environment, as a sandbox's supervisor has). */
function plainSpawn(file: string, args: readonly string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'inherit'], env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(Number(out.trim()) * 1000) : reject(new Error(`${file} exited ${code}`))));
  });
}
const peer = () => plainSpawn(PROGRAM[0]!, PROGRAM.slice(1));

/** bubblewrap alone: the same namespaces, no cgroup, workspace, proxy or supervisor (where a cold container's time goes). */
const BARE_BWRAP = ['--unshare-all', '--unshare-user', '--die-with-parent', '--new-session', '--cap-drop', 'ALL', '--ro-bind', '/usr', '/usr', '--symlink', 'usr/bin', '/bin', '--symlink', 'usr/lib', '/lib', '--symlink', 'usr/lib64', '/lib64', '--proc', '/proc', '--dev', '/dev', '--', ...PROGRAM];
/** node starting up (the supervisor's interpreter), to its first instruction; without the bench's environment (NODE_EXTRA_CA_CERTS alone adds ~30 ms here). */
const NODE_FIRST = ['-e', 'process.stdout.write(String((performance.timeOrigin + performance.now()) / 1000))'];

/**
 * A cold container session's phases, through launch.ts directly: launchSandbox (workspace, cgroup,
 * proxy, spawn) → its supervisor ready (sh, bwrap, node starting, listening) → header sent →
 * the program's first instruction.
 */
async function coldPhases(s: Setup): Promise<[number, number, number]> {
  const uid = await s.uids.acquire();
  try {
    const t0 = performance.now();
    const sandbox = await launchSandbox({ level: 'container', codeDir: undefined, ...LIMITS }, s.host, { id: randomUUID(), uid });
    try {
      const t1 = performance.now();
      await sandbox.ready;
      const t2 = performance.now();
      let out = '';
      sandbox.child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      const sent = wallMs();
      sandbox.start({ command: PROGRAM, env: sandbox.programEnv({}) });
      sandbox.child.stdin.end();
      await sandbox.closed;
      sandboxCpuMs += (await sandbox.cgroup.usage()).cpuSeconds * 1000;
      return [t1 - t0, t2 - t1, Number(out.trim()) * 1000 - sent];
    } finally {
      await sandbox.dispose();
    }
  } finally {
    await s.uids.release(uid);
  }
}

interface Latency {
  fabric: number[];
  peer: number[];
}

/** Spawn → first instruction, SAMPLES times for each line, interleaved (a sample of each in turn) so drift hits all alike. */
async function latencies(s: Setup): Promise<{ lines: Map<string, Latency>; components: Map<string, number[]> }> {
  const pool = new WarmPool({ host: s.host, uids: s.uids, size: 1, onError: (e) => console.error(e.message) });
  const lines = new Map<string, Latency>();
  for (const level of ['process', 'container'] as const) for (const mode of ['cold', 'warm'] as const) lines.set(`${level} ${mode}`, { fabric: [], peer: [] });
  const components = new Map<string, number[]>([
    ['bwrap alone', []],
    ['node startup', []],
    ['launch', []],
    ['ready', []],
    ['first', []],
  ]);
  const time = async (f: () => Promise<number>) => {
    const t0 = wallMs();
    return (await f()) - t0;
  };
  try {
    for (let i = 0; i < SAMPLES; i++) {
      for (const level of ['process', 'container'] as const) {
        for (const mode of ['cold', 'warm'] as Mode[]) {
          const line = lines.get(`${level} ${mode}`)!;
          const profile = { level, codeDir: undefined, ...LIMITS };
          // a warm sample starts with a ready sandbox, and the next sample waits for the refill: nothing launches in the background during a measure
          if (mode === 'warm') await pool.waitIdle(profile, 1, 30_000);
          const t0 = wallMs();
          const r = await inSandbox(s, level, mode === 'warm' ? pool : undefined);
          if (r.warm !== (mode === 'warm')) throw new Error(`a ${mode} sample ran ${r.warm ? 'warm' : 'cold'}`);
          line.fabric.push(r.firstAt - t0);
          if (mode === 'warm') await pool.waitIdle(profile, 1, 30_000);
          line.peer.push(await time(peer));
        }
      }
      components.get('bwrap alone')!.push(await time(() => plainSpawn(sandboxHost.bwrap!, BARE_BWRAP)));
      components.get('node startup')!.push(await time(() => plainSpawn(process.execPath, NODE_FIRST)));
      const [launch, ready, first] = await coldPhases(s);
      components.get('launch')!.push(launch);
      components.get('ready')!.push(ready);
      components.get('first')!.push(first);
    }
  } finally {
    await pool.close();
  }
  return { lines, components };
}

/** TASKS tasks through `concurrency` loops; tasks/s from the first start to the last end. */
async function throughput(concurrency: number, one: () => Promise<unknown>): Promise<number> {
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next++ < TASKS) await one();
    }),
  );
  return (TASKS / (performance.now() - t0)) * 1000;
}

interface Rate {
  fabric: number;
  peer: number;
  warmShare?: number;
  /** CPU ms per task: in the sandbox's cgroup (bwrap, the supervisor, the program) and in the worker process. */
  cpu?: { sandbox: number; worker: number };
}

async function rates(s: Setup): Promise<Map<string, Rate>> {
  const out = new Map<string, Rate>();
  for (const c of CONCURRENCY) {
    let sandboxCpu = 0;
    const before = ownCpuMs();
    const cold = await throughput(c, async () => {
      const r = await inSandbox(s, 'container', undefined); // not `x += await …`: that reads x before the await
      sandboxCpu += r.cpuSeconds * 1000;
    });
    const after = ownCpuMs();
    const cpu = before !== undefined && after !== undefined ? { sandbox: sandboxCpu / TASKS, worker: (after - before) / TASKS } : undefined;
    out.set(`container cold, ${c} at a time`, { fabric: cold, peer: await throughput(c, peer), ...(cpu ? { cpu } : {}) });
    const pool = new WarmPool({ host: s.host, uids: s.uids, size: c, onError: (e) => console.error(e.message) });
    try {
      await pool.waitIdle({ level: 'container', codeDir: undefined, ...LIMITS }, c, 60_000);
      let warm = 0;
      const rate = await throughput(c, async () => {
        if ((await inSandbox(s, 'container', pool)).warm) warm++;
      });
      out.set(`container with a warm pool of ${c}, ${c} at a time`, { fabric: rate, peer: await throughput(c, peer), warmShare: warm / TASKS });
    } finally {
      await pool.close();
    }
  }
  return out;
}

const ratio = (a: number, b: number) => (b > 0 && Number.isFinite(a / b) ? `${fmt(a / b, a / b < 10 ? 2 : 1)}×` : '—');

async function main(): Promise<void> {
  const missing = missingFor('container', sandboxHost);
  if (missing) {
    console.error(`bench/sandbox cannot run here: ${missing}.`);
    process.exit(1);
  }
  const started = performance.now();
  const s = setup();
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
  console.log(`# bench/sandbox — ${new Date().toISOString()}`);
  console.log('');
  console.log(`machine: ${os.availableParallelism()} CPUs (${cpu}), ${fmt(os.totalmem() / 2 ** 30, 1)} GiB, ${os.type()} ${os.release()}; node ${process.version}; cgroups ${sandboxHost.cgroups.kind}; bwrap ${sandboxHost.bwrap}`);
  console.log(`program: ${PROGRAM.join(' ')} (its first instruction prints the wall clock); peer: child_process.spawn of the same program, no isolation`);
  console.log(`settings: ${SAMPLES} samples per latency line, interleaved; ${TASKS} tasks per throughput line; sandbox limits ${LIMITS.memoryMb} MB, ${LIMITS.cpuCores} CPU, ${LIMITS.pids} pids; tmpfs workspace 16 MB; heartbeat 1 s`);
  console.log(`before the run: load average ${os.loadavg().map((l) => fmt(l, 2)).join(' / ')}`);
  try {
    const other = new OtherCpu();
    let mark = sandboxCpuMs;
    other.begin();
    const { lines, components } = await latencies(s);
    const latencyNoise = other.end(sandboxCpuMs - mark);
    mark = sandboxCpuMs;
    other.begin();
    const tput = await rates(s);
    const rateNoise = other.end(sandboxCpuMs - mark);

    console.log('');
    console.log('| measure | agent-fabric | plain spawn | ratio (fabric / spawn) |');
    console.log('| --- | ---: | ---: | ---: |');
    for (const [name, l] of lines) {
      for (const p of [50, 99]) {
        const f = percentile(l.fabric, p);
        const q = percentile(l.peer, p);
        console.log(`| spawn → first instruction p${p}, ${name} (ms, lower is better) | ${fmt(f, 1)} | ${fmt(q, 1)} | ${ratio(f, q)} |`);
      }
    }
    for (const [name, r] of tput) {
      console.log(`| end to end, ${name}: runSession → exit → wipe (tasks/s, higher is better) | ${fmt(r.fabric, 1)} | ${fmt(r.peer, 1)} | ${ratio(r.fabric, r.peer)} |`);
    }
    console.log('');
    const peerAll = [...lines.values()].flatMap((l) => l.peer);
    const med = (k: string) => fmt(median(components.get(k)!), 1);
    console.log(
      `where a cold container's time goes (medians, ms): launchSandbox (workspace tmpfs, cgroup, proxy, spawn) ${med('launch')} → supervisor ready (sh, bwrap, node starting, listening) ${med('ready')} → header to first instruction ${med('first')}; ` +
        `for scale: plain spawn ${fmt(median(peerAll), 1)}, bwrap alone (the same namespaces, sh, date) ${med('bwrap alone')}, node starting to its first instruction ${med('node startup')}`,
    );
    for (const [name, l] of lines) console.log(`${name}: min ${fmt(Math.min(...l.fabric), 1)}, max ${fmt(Math.max(...l.fabric), 1)} ms`);
    for (const [name, r] of tput) if (r.cpu) console.log(`${name}: CPU per task ${fmt(r.cpu.sandbox)} ms in the sandbox's cgroup (bwrap, the supervisor, the program) + ${fmt(r.cpu.worker)} ms in the worker process (mount and umount not counted)`);
    for (const [name, r] of tput) if (r.warmShare !== undefined) console.log(`${name}: ${fmt(r.warmShare * 100)}% of the tasks took a warm sandbox (the rest ran cold while the pool refilled)`);
    const share = (x: number | undefined) => (x === undefined ? 'unknown' : `${fmt(x * 100)}%`);
    console.log(`other programs used ${share(latencyNoise)} of the machine's CPU during the latency lines and ${share(rateNoise)} during the throughput lines`);
    const verdict = (ok: boolean) => (ok ? 'met' : 'MISSED');
    const p99 = (name: string) => percentile(lines.get(name)!.fabric, 99);
    console.log(
      `targets: cold container p99 < 250 ms: ${verdict(p99('container cold') < 250)} (${fmt(p99('container cold'), 1)} ms); ` +
        `warm p99 < 20 ms: container ${verdict(p99('container warm') < 20)} (${fmt(p99('container warm'), 1)} ms), process ${verdict(p99('process warm') < 20)} (${fmt(p99('process warm'), 1)} ms)`,
    );
  } finally {
    fs.rmSync(s.root, { recursive: true, force: true });
  }
  console.log('');
  console.log(`total runtime ${fmt((performance.now() - started) / 1000, 1)} s; load average at end: ${os.loadavg().map((l) => fmt(l, 2)).join(' / ')}`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
