import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { cleanupStaleCgroups, createSessionCgroup, detectCgroups, type CgroupLimits, type SessionCgroup } from './cgroups.js';

const support = detectCgroups();
const SANDBOX_UID = 61000;
const MB = 1024 * 1024;
const roomy: CgroupLimits = { memoryMb: 256, cpuCores: 1, pids: 64 };
const prefix = `test-${process.pid}-`;

/** What /proc/mounts says the layout is, independently of detectCgroups. */
function mounted(): { v1: Record<string, string>; v2: string[] } {
  const v1: Record<string, string> = {};
  const v2: string[] = [];
  for (const line of fs.readFileSync('/proc/mounts', 'utf8').split('\n')) {
    const [, dir, type, opts] = line.split(' ');
    if (type === 'cgroup2' && dir) v2.push(dir);
    if (type === 'cgroup' && dir && opts) for (const o of opts.split(',')) if (['memory', 'cpu', 'cpuacct', 'pids'].includes(o)) v1[o] = dir;
  }
  return { v1, v2 };
}

/**
 * Runs `script` with sh as the sandbox uid inside `cg`. 'self': the shell writes its own pid into
 * every procsFile before running anything (v1 only, see cgroups.ts); 'parent': the shell waits on
 * stdin until this (root) process has called addProcess (the v2 way).
 */
function runIn(cg: SessionCgroup, script: string, join: 'self' | 'parent' = support.kind === 'v1' ? 'self' : 'parent') {
  const selfJoin = 'for f in "$@"; do echo $$ > "$f" || exit 97; done; ';
  const child = spawn('/bin/sh', ['-c', (join === 'self' ? selfJoin : 'read _; ') + script, 'sh', ...cg.procsFiles], {
    uid: SANDBOX_UID,
    gid: SANDBOX_UID,
    cwd: '/tmp',
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const ready = join === 'self' ? Promise.resolve() : cg.addProcess(child.pid as number).then(() => void child.stdin.end('\n'));
  return { child, exited, ready, out: () => stdout, err: () => stderr };
}

async function until(what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  for (const end = Date.now() + ms; !cond(); await new Promise((r) => setTimeout(r, 20))) if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
}

const procsIn = (cg: SessionCgroup) => Math.max(...cg.procsFiles.map((f) => fs.readFileSync(f, 'utf8').split('\n').filter(Boolean).length));
const dirsOf = (cg: SessionCgroup) => cg.procsFiles.map((f) => path.dirname(f));
const gone = (child: ChildProcess) => child.exitCode !== null || child.signalCode !== null;

describe('cgroups without cgroups', () => {
  it('detection explains why, and creating a session cgroup throws that reason', async () => {
    const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'no-cgroups-'));
    const none = detectCgroups(empty);
    fs.rmdirSync(empty);
    assert.equal(none.kind, 'none');
    assert.match(none.kind === 'none' ? none.reason : '', /no cgroup v1 memory hierarchy/);
    await assert.rejects(createSessionCgroup({ kind: 'none', reason: 'no writable memory controller: not root' }, 'x', roomy), /cgroups unavailable: no writable memory controller: not root/);
  });

  it('v2 (simulated tree): limits go to memory.max, cpu.max and pids.max, usage comes from memory.peak, cpu.stat and memory.events', async () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'cgroup2-'));
    try {
      fs.writeFileSync(path.join(root, 'cgroup.controllers'), 'cpuset cpu io memory hugetlb\n');
      const partial = detectCgroups(root);
      assert.match(partial.kind === 'none' ? partial.reason : partial.kind, /cgroup2 at .* lacks the pids controller/);
      fs.mkdirSync(path.join(root, 'agent-fabric'));
      const cg = await createSessionCgroup({ kind: 'v2', root }, 's1', { memoryMb: 64, cpuCores: 0.5, pids: 10 });
      const dir = path.join(root, 'agent-fabric', 's1');
      assert.deepEqual(cg.procsFiles, [path.join(dir, 'cgroup.procs')]);
      const read = (f: string) => fs.readFileSync(path.join(dir, f), 'utf8');
      assert.deepEqual([read('memory.max'), read('cpu.max'), read('pids.max')], [String(64 * MB), '50000 100000', '10']);
      fs.writeFileSync(path.join(dir, 'memory.current'), '123456\n');
      fs.writeFileSync(path.join(dir, 'cpu.stat'), 'usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n');
      fs.writeFileSync(path.join(dir, 'memory.events'), 'low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n');
      assert.deepEqual(await cg.usage(), { peakMemoryBytes: 123456, cpuSeconds: 2.5, oomKilled: true });
      fs.writeFileSync(path.join(dir, 'memory.peak'), '654321\n');
      assert.equal((await cg.usage()).peakMemoryBytes, 654321);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});

describe('per-session cgroups on this host', { skip: support.kind === 'none' ? `no usable cgroups: ${support.reason}` : false }, () => {
  const live: SessionCgroup[] = [];
  const make = async (name: string, limits: CgroupLimits = roomy) => {
    const cg = await createSessionCgroup(support, prefix + name, limits, { uid: SANDBOX_UID, gid: SANDBOX_UID });
    live.push(cg);
    return cg;
  };
  after(async () => {
    const failed = (await Promise.allSettled(live.map((cg) => cg.destroy()))).filter((r) => r.status === 'rejected');
    assert.deepEqual(failed, []);
  });

  it('detects the mounted layout: v1 with its four controller dirs, or v2', () => {
    const { v1, v2 } = mounted();
    if (v1.memory) {
      assert.deepEqual(support, { kind: 'v1', memory: v1.memory, cpu: v1.cpu, cpuacct: v1.cpuacct, pids: v1.pids });
      for (const dir of [v1.memory, v1.cpu, v1.cpuacct, v1.pids]) assert.ok(fs.existsSync(path.join(dir as string, 'agent-fabric')));
    } else {
      assert.equal(support.kind, 'v2');
      assert.ok(v2.includes(support.kind === 'v2' ? support.root : ''));
    }
  });

  it('a child allocating 200 MB in a 64 MB cgroup is OOM-killed, and usage says so', async () => {
    const cg = await make('mem', { memoryMb: 64, cpuCores: 1, pids: 64 });
    const hog = `const a = []; for (let i = 0; i < 50; i++) a.push(Buffer.alloc(4 << 20, 1)); console.log('survived');`;
    const run = runIn(cg, `exec "${process.execPath}" -e "${hog}"`);
    await run.ready;
    const { code, signal } = await run.exited;
    assert.ok(signal === 'SIGKILL' || code === 137, `exit ${code} ${signal}: ${run.err()}`);
    assert.doesNotMatch(run.out(), /survived/);
    const usage = await cg.usage();
    assert.equal(usage.oomKilled, true);
    assert.ok(usage.peakMemoryBytes <= 64 * MB + 4 * MB, `peak ${usage.peakMemoryBytes}`);
    assert.ok(usage.peakMemoryBytes > 32 * MB, `peak ${usage.peakMemoryBytes}`);
  });

  it('pids.max 16 stops a shell starting 50 sleeps', async () => {
    const cg = await make('pids', { memoryMb: 256, cpuCores: 1, pids: 16 });
    const run = runIn(cg, 'i=0; while [ $i -lt 50 ]; do sleep 5 & i=$((i+1)); done; echo all-started; wait');
    await run.ready;
    // dash gives up at the first failed fork, bash retries: either way the message comes at once
    await until('a fork failure', () => /fork|Resource temporarily unavailable/i.test(run.err()));
    assert.doesNotMatch(run.out(), /all-started/);
    const n = procsIn(cg);
    assert.ok(n >= 2 && n <= 16, `${n} processes in the cgroup`);
    const peak = path.join(path.dirname(cg.procsFiles.find((f) => f.includes('pids')) ?? (cg.procsFiles[0] as string)), 'pids.peak');
    if (fs.existsSync(peak)) assert.ok(Number(fs.readFileSync(peak, 'utf8')) <= 16);
    await cg.destroy();
    assert.equal(fs.existsSync(dirsOf(cg)[0] as string), false);
  });

  it('cpuCores 0.2 holds a busy loop to a fifth of a core', async () => {
    const cg = await make('cpu', { memoryMb: 256, cpuCores: 0.2, pids: 64 });
    const busy = `console.log('start'); const end = Date.now() + 1500; while (Date.now() < end);`;
    const run = runIn(cg, `exec "${process.execPath}" -e "${busy}"`);
    await run.ready;
    await until('the busy loop to start', () => run.out().includes('start'));
    const before = (await cg.usage()).cpuSeconds; // node's own start-up, also throttled, is not the loop's
    const { code } = await run.exited;
    assert.equal(code, 0, run.err());
    const spent = (await cg.usage()).cpuSeconds - before;
    assert.ok(spent > 0.1 && spent <= 0.45, `the 1.5 s busy loop used ${spent} CPU seconds`);
  });

  it('destroy() kills what is left and removes every directory, and can be called again', async () => {
    const cg = await make('destroy');
    const run = runIn(cg, 'exec sleep 60', 'parent'); // addProcess: the root parent moves the child in
    await run.ready;
    await until('sleep to be in the cgroup', () => fs.readFileSync(cg.procsFiles[0] as string, 'utf8').includes(String(run.child.pid)));
    assert.ok(!gone(run.child));
    await cg.destroy();
    for (const dir of dirsOf(cg)) assert.equal(fs.existsSync(dir), false, dir);
    assert.deepEqual(await Promise.race([run.exited, new Promise((r) => setTimeout(() => r('still running'), 2000))]), { code: null, signal: 'SIGKILL' });
    await cg.destroy();
  });

  it('cleanupStaleCgroups removes a leftover session cgroup and its processes, and only those with the prefix', async () => {
    const stale = await make('stale-1'); // in `live` too, so a failure here leaves nothing behind
    const keep = await make('keep');
    const run = runIn(stale, 'sleep 60 & echo started; wait');
    await run.ready;
    await until('the leftover to start', () => run.out().includes('started'));
    assert.equal(procsIn(stale), 2);
    // the handle is forgotten, as by a crashed worker
    assert.equal(await cleanupStaleCgroups(support, { prefix: `${prefix}stale-` }), 1);
    for (const dir of dirsOf(stale)) assert.equal(fs.existsSync(dir), false, dir);
    for (const dir of dirsOf(keep)) assert.equal(fs.existsSync(dir), true, dir);
    assert.deepEqual(await run.exited, { code: null, signal: 'SIGKILL' });
    assert.equal(await cleanupStaleCgroups(support, { prefix: `${prefix}stale-` }), 0);
  });

  it('refuses a name that is not a plain word, creating nothing', async () => {
    const parentOf = (f: string) => path.dirname(path.dirname(path.dirname(f))); // <controller>
    const keep = await make('names');
    for (const bad of ['../x', 'a/b', '', '.x', 'x'.repeat(65)]) await assert.rejects(createSessionCgroup(support, bad, roomy), /invalid cgroup name/);
    for (const f of keep.procsFiles) assert.equal(fs.existsSync(path.join(parentOf(f), 'x')), false);
  });
});
