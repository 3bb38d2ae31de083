import fs from 'node:fs';
import { access, chown, mkdir, readFile, readdir, rmdir, writeFile } from 'node:fs/promises';
import path from 'node:path';

/**
 * Per-session Linux cgroups: memory, CPU and process-count limits, usage and kill-everything,
 * on cgroup v1 (one hierarchy per controller) or v2 (one unified hierarchy), detected once at
 * worker start. Every session cgroup is `<controller>/agent-fabric/<name>`.
 *
 * Joining: a sandbox is limited from its first instruction when the process joins the cgroup
 * itself before exec'ing the untrusted program (`echo $$ > f` for each of `procsFiles`). For
 * that, `createSessionCgroup(…, owner)` chowns the `cgroup.procs` files (and nothing else: the
 * limit files stay root's, so a sandbox cannot raise its own limits) to the sandbox uid.
 *  - v1: works for an unprivileged uid: the kernel wants write access to the target's
 *    cgroup.procs and the writer's euid to match the moved process's uid.
 *  - v2: the kernel ALSO wants write access to cgroup.procs of the common ancestor of the source
 *    and destination cgroups (usually the root cgroup), so an unprivileged process cannot move
 *    itself in. There, join as root before dropping privileges (e.g. `echo $$ > f; exec setpriv
 *    --reuid …`), or have the root parent call `addProcess(child.pid)` while the child waits
 *    (e.g. `sh -c 'read _; exec prog'`, then write a line to its stdin).
 */

export type CgroupSupport =
  /** Controller mount dirs (realpaths; cpu and cpuacct may be one dir, e.g. "cpu,cpuacct"). */
  | { kind: 'v1'; memory: string; cpu: string; cpuacct: string; pids: string }
  /** The cgroup2 mount (or delegated subtree) under which agent-fabric/ lives. */
  | { kind: 'v2'; root: string }
  | { kind: 'none'; reason: string };

export interface CgroupLimits {
  memoryMb: number;
  cpuCores: number;
  pids: number;
}

export interface CgroupUsage {
  peakMemoryBytes: number;
  cpuSeconds: number;
  oomKilled: boolean;
}

export interface SessionCgroup {
  /** Files a process writes its own pid into ("echo $$ > file") to join, before exec'ing the sandbox — one per v1 controller, one for v2. */
  readonly procsFiles: string[];
  /** Moves `pid` (with its threads) in, written by this (root) process: the way to join on v2, see the module comment. */
  addProcess(pid: number): Promise<void>;
  /** Peak memory, CPU time and whether the OOM killer struck. Read it before destroy(). */
  usage(): Promise<CgroupUsage>;
  /**
   * SIGKILL every process still in the cgroup (v2: cgroup.kill when present; otherwise read
   * cgroup.procs and kill until it is empty). Never rejects: processes that survive 5 s (stuck
   * in the kernel) are reported by destroy(), which cannot remove a non-empty cgroup.
   */
  killAll(): Promise<void>;
  /** killAll, then rmdir every directory; idempotent; never throws for an already-removed cgroup. */
  destroy(): Promise<void>;
}

const PARENT = 'agent-fabric';
const NAME = /^[A-Za-z0-9_-]{1,64}$/;
const CPU_PERIOD_US = 100_000;
const KILL_DEADLINE_MS = 5_000;
const V2_CONTROLLERS = ['memory', 'cpu', 'pids'];
/** v1 controller → a file only a cgroup of that controller has (pids.max and friends exist only below the root). */
const V1_FILES = { memory: 'memory.limit_in_bytes', cpu: 'cpu.cfs_quota_us', cpuacct: 'cpuacct.usage', pids: 'pids.max' } as const;
type V1Controller = keyof typeof V1_FILES;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const errCode = (err: unknown) => (err as NodeJS.ErrnoException).code;

function explain(err: unknown): string {
  const code = errCode(err);
  const msg = (err as Error).message;
  if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') return `not root, or cgroups mounted read-only (${msg})`;
  return msg;
}

/** mkdir + rmdir a probe below `parent` (creating `parent`); undefined when `file` appears in it, else why not. */
function probe(parent: string, file: string): string | undefined {
  const dir = path.join(parent, `.probe-${process.pid}`); // a dot: never a valid session name
  try {
    fs.mkdirSync(parent, { recursive: true });
    fs.mkdirSync(dir);
  } catch (err) {
    if (errCode(err) !== 'EEXIST') return explain(err);
  }
  try {
    return fs.existsSync(path.join(dir, file)) ? undefined : `${parent} is not a cgroup with ${file}`;
  } finally {
    try {
      fs.rmdirSync(dir);
    } catch {
      /* removed concurrently; an empty leftover probe is harmless */
    }
  }
}

function detectV2(root: string): CgroupSupport {
  let have: string[];
  try {
    have = fs.readFileSync(path.join(root, 'cgroup.controllers'), 'utf8').split(/\s+/);
  } catch (err) {
    return { kind: 'none', reason: `no cgroup2 at ${root}: ${explain(err)}` };
  }
  const missing = V2_CONTROLLERS.filter((c) => !have.includes(c));
  if (missing.length) return { kind: 'none', reason: `cgroup2 at ${root} lacks the ${missing.join(', ')} controller(s) (bound to cgroup v1 hierarchies, or not delegated)` };
  const parent = path.join(root, PARENT);
  try {
    fs.mkdirSync(parent, { recursive: true });
    // A child gets a controller only when its parent lists it in cgroup.subtree_control. EBUSY
    // here means processes live in `dir` itself (v2's "no internal processes" rule, which spares
    // only the real root), e.g. a container whose /sys/fs/cgroup holds the worker: move them to a leaf first.
    for (const dir of [root, parent]) {
      const enabled = fs.readFileSync(path.join(dir, 'cgroup.subtree_control'), 'utf8').split(/\s+/);
      const add = V2_CONTROLLERS.filter((c) => !enabled.includes(c));
      if (add.length) fs.writeFileSync(path.join(dir, 'cgroup.subtree_control'), add.map((c) => `+${c}`).join(' '));
    }
  } catch (err) {
    return { kind: 'none', reason: `no writable memory controller in cgroup2 at ${root}: ${explain(err)}` };
  }
  const why = probe(parent, 'memory.max');
  return why ? { kind: 'none', reason: `no writable memory controller in cgroup2 at ${root}: ${why}` } : { kind: 'v2', root };
}

function detectV1(base: string): CgroupSupport {
  const dirs = {} as Record<V1Controller, string>;
  for (const [ctrl, file] of Object.entries(V1_FILES) as [V1Controller, string][]) {
    let dir: string;
    try {
      dir = fs.realpathSync(path.join(base, ctrl)); // "cpu" is often a symlink to "cpu,cpuacct"
    } catch {
      return { kind: 'none', reason: `no cgroup v1 ${ctrl} hierarchy at ${path.join(base, ctrl)}` };
    }
    const why = probe(path.join(dir, PARENT), file);
    if (why) return { kind: 'none', reason: `no writable ${ctrl} controller: ${why}` };
    dirs[ctrl] = dir;
  }
  return { kind: 'v1', ...dirs };
}

/**
 * Which cgroups this host offers, checked by creating and removing a probe cgroup under
 * `<controller>/agent-fabric` (synchronous: called once at start). Pure v2 (`<base>` is a
 * cgroup2 mount) first, then v1 hierarchies at `<base>/<controller>`, then a hybrid cgroup2 at
 * `<base>/unified`. 'none' carries every reason, never a silent downgrade.
 */
export function detectCgroups(base = '/sys/fs/cgroup'): CgroupSupport {
  const reasons: string[] = [];
  const candidates: (() => CgroupSupport)[] = [() => detectV1(base)];
  if (fs.existsSync(path.join(base, 'cgroup.controllers'))) candidates.unshift(() => detectV2(base));
  if (fs.existsSync(path.join(base, 'unified', 'cgroup.controllers'))) candidates.push(() => detectV2(path.join(base, 'unified')));
  for (const candidate of candidates) {
    const found = candidate();
    if (found.kind !== 'none') return found;
    reasons.push(found.reason);
  }
  return { kind: 'none', reason: reasons.join('; ') };
}

type Available = Exclude<CgroupSupport, { kind: 'none' }>;

/** Where each controller's directory of session `name` is (all one dir on v2). */
function layout(support: Available, name: string) {
  if (support.kind === 'v2') {
    const dir = path.join(support.root, PARENT, name);
    return { kind: support.kind, memory: dir, cpu: dir, cpuacct: dir, pids: dir, dirs: [dir] };
  }
  const at = (ctrl: V1Controller) => path.join(support[ctrl], PARENT, name);
  const l = { kind: support.kind, memory: at('memory'), cpu: at('cpu'), cpuacct: at('cpuacct'), pids: at('pids') };
  return { ...l, dirs: [...new Set([l.memory, l.cpu, l.cpuacct, l.pids])] };
}
type Layout = ReturnType<typeof layout>;

async function exists(file: string): Promise<boolean> {
  return access(file).then(
    () => true,
    () => false,
  );
}

/** `key N` lines (memory.oom_control, memory.events, cpu.stat) → N, 0 when absent. */
async function field(file: string, key: string): Promise<number> {
  const line = (await readFile(file, 'utf8')).split('\n').find((l) => l.startsWith(`${key} `));
  return line ? Number(line.slice(key.length + 1)) : 0;
}

async function number(file: string): Promise<number> {
  return Number((await readFile(file, 'utf8')).trim());
}

async function writeLimits(l: Layout, limits: CgroupLimits): Promise<void> {
  const bytes = String(Math.floor(limits.memoryMb * 1024 * 1024));
  // the kernel's minimum quota is 1 ms per period
  const quota = Math.max(1000, Math.round(limits.cpuCores * CPU_PERIOD_US));
  if (l.kind === 'v1') {
    await writeFile(path.join(l.memory, 'memory.limit_in_bytes'), bytes);
    // memory+swap: without it swap extends the limit. Only there with swap accounting on (and it
    // must be ≥ memory.limit_in_bytes, hence second). Without swap accounting nothing can cap swap.
    const memsw = path.join(l.memory, 'memory.memsw.limit_in_bytes');
    if (await exists(memsw)) await writeFile(memsw, bytes);
    await writeFile(path.join(l.cpu, 'cpu.cfs_period_us'), String(CPU_PERIOD_US));
    await writeFile(path.join(l.cpu, 'cpu.cfs_quota_us'), String(quota));
  } else {
    await writeFile(path.join(l.memory, 'memory.max'), bytes);
    const swap = path.join(l.memory, 'memory.swap.max'); // absent without swap accounting
    if (await exists(swap)) await writeFile(swap, '0');
    await writeFile(path.join(l.cpu, 'cpu.max'), `${quota} ${CPU_PERIOD_US}`);
  }
  await writeFile(path.join(l.pids, 'pids.max'), String(limits.pids));
}

class Session implements SessionCgroup {
  readonly procsFiles: string[];

  constructor(
    private readonly l: Layout,
    private readonly name: string,
  ) {
    this.procsFiles = l.dirs.map((d) => path.join(d, 'cgroup.procs'));
  }

  async addProcess(pid: number): Promise<void> {
    for (const f of this.procsFiles) await writeFile(f, String(pid));
  }

  async usage(): Promise<CgroupUsage> {
    const { kind, memory, cpu, cpuacct } = this.l;
    if (kind === 'v1') {
      return {
        peakMemoryBytes: await number(path.join(memory, 'memory.max_usage_in_bytes')),
        cpuSeconds: (await number(path.join(cpuacct, 'cpuacct.usage'))) / 1e9, // nanoseconds
        oomKilled: (await field(path.join(memory, 'memory.oom_control'), 'oom_kill')) > 0, // kernel ≥ 4.13
      };
    }
    const peak = path.join(memory, 'memory.peak'); // kernel ≥ 5.19
    return {
      peakMemoryBytes: await number((await exists(peak)) ? peak : path.join(memory, 'memory.current')),
      cpuSeconds: (await field(path.join(cpu, 'cpu.stat'), 'usage_usec')) / 1e6,
      oomKilled: (await field(path.join(memory, 'memory.events'), 'oom_kill')) > 0,
    };
  }

  /** Pids in any of the session's cgroups (a process may have joined only some v1 controllers). */
  private async pids(): Promise<number[]> {
    const all = new Set<number>();
    for (const f of this.procsFiles) {
      const text = await readFile(f, 'utf8').catch((err: unknown) => {
        if (errCode(err) === 'ENOENT') return ''; // already removed
        throw err;
      });
      for (const p of text.split('\n')) if (p) all.add(Number(p));
    }
    return [...all];
  }

  async killAll(): Promise<void> {
    try {
      const kill = path.join(this.l.memory, 'cgroup.kill'); // v2, kernel ≥ 5.14: kills atomically, forks included
      if (this.l.kind === 'v2' && (await exists(kill))) await writeFile(kill, '1');
      // Otherwise the pids must be killed one by one; a process may fork meanwhile, so read again
      // until the cgroup is empty. Dead processes leave cgroup.procs at exit, zombies included.
      const deadline = Date.now() + KILL_DEADLINE_MS;
      for (let pids = await this.pids(); pids.length && Date.now() < deadline; pids = await this.pids()) {
        for (const pid of pids) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            /* exited meanwhile */
          }
        }
        await sleep(10);
      }
    } catch {
      /* destroy() reports what is left */
    }
  }

  async destroy(): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      await this.killAll();
      try {
        for (const dir of this.l.dirs) {
          await rmdir(dir).catch((err: unknown) => {
            if (errCode(err) !== 'ENOENT') throw err;
          });
        }
        return;
      } catch (err) {
        // EBUSY: a process is still in it (the kernel may lag a moment behind the kill)
        if (errCode(err) !== 'EBUSY' || attempt >= 3) {
          const left = await this.pids().catch(() => []);
          throw new Error(`cannot remove cgroup ${this.name}${left.length ? ` (processes ${left.join(', ')} survived SIGKILL)` : ''}: ${(err as Error).message}`);
        }
        await sleep(50);
      }
    }
  }
}

function assertName(name: string): void {
  if (!NAME.test(name)) throw new Error(`invalid cgroup name ${JSON.stringify(name)}: it must match ${NAME}`);
}

/**
 * Creates `<controller>/agent-fabric/<name>` with the limits (memory without swap, CPU as a CFS
 * quota of `cpuCores` × 100 ms per 100 ms, a pid count including threads). With `owner`, its
 * cgroup.procs files are chowned to that uid/gid so a process of that uid can join itself (v1).
 * Throws with the detection's reason when cgroups are unavailable, and when the cgroup exists
 * already (another live session may own it; cleanupStaleCgroups removes leftovers).
 */
export async function createSessionCgroup(support: CgroupSupport, name: string, limits: CgroupLimits, owner?: { uid: number; gid: number }): Promise<SessionCgroup> {
  if (support.kind === 'none') throw new Error(`cgroups unavailable: ${support.reason}`);
  assertName(name);
  const { memoryMb, cpuCores, pids } = limits;
  if (!(memoryMb > 0 && Number.isFinite(memoryMb)) || !(cpuCores > 0 && Number.isFinite(cpuCores)) || !(Number.isInteger(pids) && pids > 0)) {
    throw new Error(`invalid cgroup limits ${JSON.stringify(limits)}: memoryMb and cpuCores must be positive, pids a positive integer`);
  }
  const l = layout(support, name);
  const created: string[] = [];
  try {
    for (const dir of l.dirs) {
      await mkdir(dir);
      created.push(dir);
    }
    await writeLimits(l, limits);
    const session = new Session(l, name);
    if (owner) for (const f of session.procsFiles) await chown(f, owner.uid, owner.gid);
    return session;
  } catch (err) {
    for (const dir of created.reverse()) await rmdir(dir).catch(() => {}); // empty: nothing joined yet
    throw err;
  }
}

/**
 * Boot cleanup: kills and removes every leftover session cgroup under agent-fabric/ whose name
 * starts with `prefix` (default: all) and that `keep` does not claim (a live session of another
 * worker on this host). Returns how many were removed.
 */
export async function cleanupStaleCgroups(support: CgroupSupport, opts: { prefix?: string; keep?: (name: string) => boolean } = {}): Promise<number> {
  if (support.kind === 'none') return 0;
  const prefix = opts.prefix ?? '';
  const parents = support.kind === 'v2' ? [support.root] : [...new Set([support.memory, support.cpu, support.cpuacct, support.pids])];
  const names = new Set<string>();
  for (const p of parents) {
    const entries = await readdir(path.join(p, PARENT), { withFileTypes: true }).catch(() => []);
    for (const e of entries) if (e.isDirectory() && NAME.test(e.name) && e.name.startsWith(prefix) && !opts.keep?.(e.name)) names.add(e.name);
  }
  for (const name of names) await new Session(layout(support, name), name).destroy();
  return names.size;
}
