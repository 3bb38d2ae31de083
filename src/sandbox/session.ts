import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { createSessionCgroup, type CgroupSupport, type CgroupUsage } from './cgroups.js';
import { spawnPlan, INSIDE } from './command.js';
import { EgressProxy, type EgressDecision } from './egress/index.js';
import { createWorkspace, type WipeEvidence } from './workspace.js';

/** Limits and what to run, resolved from the agent's IsolationConfig and entrypoint. */
export interface SessionSpec {
  id: string;
  level: 'process' | 'container';
  command: readonly string[];
  codeDir?: string | undefined;
  memoryMb: number;
  cpuCores: number;
  pids: number;
  /** The agent's network_egress (container). */
  egress: readonly string[];
  /** host:port destinations always reachable (the fabric's API and gateway). */
  internal: readonly string[];
  /** Environment the agent gets (the session adds FABRIC_WORKSPACE and proxy settings). */
  env: Record<string, string>;
  stdin: string;
  uid: number;
  timeoutMs: number;
}

export interface SessionHost {
  /** Parent of the per-session directories (search permission for every sandbox uid). */
  sessionsDir: string;
  /** Read-only helpers mounted at /fabric (relay.cjs, preload.cjs). */
  helpersDir: string;
  bwrap: string | undefined;
  cgroups: CgroupSupport;
  /** tmpfs workspaces of this size (root only); 0 = plain directories. */
  tmpfsMb: number;
  /** Where /workspace/out is copied to before the wipe. */
  artifactsDir: string;
  onLog(line: string): void;
  onEgress(decision: EgressDecision): void;
}

export interface Artifact {
  name: string;
  size: number;
}

export interface SessionOutcome {
  exitCode: number | null;
  signal: string | null;
  /** Why the session was stopped from outside, if it was. */
  stopped?: 'timeout' | 'cancel' | 'lease_lost' | 'drain' | undefined;
  oomKilled: boolean;
  /** Set when the program exited 0 but its result.json could not be read: the attempt fails. */
  resultError?: string | undefined;
  /** Parsed /workspace/result.json, or the last stdout line (JSON if it parses, else the string). */
  result: unknown;
  stderrTail: string;
  usage: CgroupUsage & { wallSeconds: number; artifactBytes: number };
  artifacts: Artifact[];
  wipe: WipeEvidence;
}

const MAX_RESULT_BYTES = 10 * 1024 * 1024;
const MAX_LOG_LINE = 4096;
const STDERR_TAIL = 4096;

/** Copies the regular files under `from` to `to` (no symlinks followed: the sandbox controls them). */
async function keepArtifacts(from: string, to: string): Promise<Artifact[]> {
  const kept: Artifact[] = [];
  const walk = async (rel: string): Promise<void> => {
    const entries = await fs.readdir(path.join(from, rel), { withFileTypes: true }).catch(() => []);
    for (const e of entries) {
      const r = path.join(rel, e.name);
      if (e.isDirectory()) await walk(r);
      else if (e.isFile()) {
        await fs.mkdir(path.dirname(path.join(to, r)), { recursive: true, mode: 0o700 });
        // COPYFILE_FICLONE is not used: a plain copy reads through lstat'd regular files only
        await fs.copyFile(path.join(from, r), path.join(to, r));
        kept.push({ name: r, size: (await fs.stat(path.join(to, r))).size });
      }
    }
  };
  await walk('');
  return kept;
}

async function readResult(workspace: string, lastStdout: string): Promise<unknown> {
  const file = path.join(workspace, 'result.json');
  const st = await fs.lstat(file).catch(() => undefined);
  if (st?.isFile()) {
    if (st.size > MAX_RESULT_BYTES) throw new Error(`result.json is ${st.size} bytes; the limit is ${MAX_RESULT_BYTES}`);
    const text = await fs.readFile(file, 'utf8');
    return JSON.parse(text);
  }
  if (!lastStdout) return null;
  try {
    return JSON.parse(lastStdout);
  } catch {
    return lastStdout;
  }
}

/**
 * One attempt in a sandbox: workspace, cgroup, egress proxy (container), the program with the
 * task on stdin, stderr streamed as log lines; then artifacts kept, usage read, and the
 * workspace wiped with evidence — whatever way the program ended. `signal` aborts it (SIGKILL
 * to every process of the session).
 */
export async function runSession(spec: SessionSpec, host: SessionHost, signal: AbortSignal): Promise<SessionOutcome> {
  if (spec.level === 'container' && !host.bwrap) throw new Error('container isolation needs bubblewrap (bwrap), which this host lacks: install the Debian package bubblewrap');
  if (host.cgroups.kind === 'none') throw new Error(`${spec.level} isolation needs cgroups for its memory, CPU and process limits: ${host.cgroups.reason}`);
  const ws = await createWorkspace(host.sessionsDir, spec.id, { uid: spec.uid, gid: spec.uid, ...(host.tmpfsMb ? { tmpfsMb: host.tmpfsMb } : {}) });
  const cleanups: (() => Promise<unknown>)[] = [];
  let proxy: EgressProxy | undefined;
  try {
    const cgroup = await createSessionCgroup(host.cgroups, `s-${spec.id}`, { memoryMb: spec.memoryMb, cpuCores: spec.cpuCores, pids: spec.pids }, { uid: spec.uid, gid: spec.uid });
    cleanups.push(() => cgroup.destroy());
    const env: Record<string, string> = { PATH: '/usr/local/bin:/usr/bin:/bin', HOME: spec.level === 'container' ? INSIDE.workspace : ws.path, ...spec.env };
    if (spec.level === 'container') {
      // the proxy socket lives in the session dir, which only this sandbox's mount namespace sees
      const runDir = path.join(ws.dir, 'run');
      await fs.mkdir(runDir, { mode: 0o700 });
      await fs.chown(runDir, spec.uid, spec.uid);
      proxy = new EgressProxy({ allow: spec.egress, internal: spec.internal, onDecision: host.onEgress });
      await proxy.listen(path.join(runDir, 'egress.sock'));
      await fs.chown(path.join(runDir, 'egress.sock'), spec.uid, spec.uid);
      const url = `http://127.0.0.1:${INSIDE.proxyPort}`;
      Object.assign(env, { FABRIC_WORKSPACE: INSIDE.workspace, HTTP_PROXY: url, HTTPS_PROXY: url, http_proxy: url, https_proxy: url, NODE_OPTIONS: `--require ${INSIDE.fabric}/preload.cjs` });
    } else {
      env.FABRIC_WORKSPACE = ws.path;
    }
    const plan = spawnPlan(
      { level: spec.level, command: spec.command, workspace: ws.path, codeDir: spec.codeDir, runDir: path.join(ws.dir, 'run'), helpersDir: host.helpersDir, env, cgroupProcs: cgroup.procsFiles },
      host.bwrap ?? 'bwrap',
    );
    const started = performance.now();
    const child = spawn(plan.file, plan.args, { cwd: plan.cwd, env: plan.env, uid: spec.uid, gid: spec.uid, detached: true, stdio: ['pipe', 'pipe', 'pipe'] });
    let stopped: SessionOutcome['stopped'];
    const kill = () => {
      if (child.pid) {
        try {
          process.kill(-child.pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }
      void cgroup.killAll();
    };
    const onAbort = () => {
      stopped = String(signal.reason) as SessionOutcome['stopped'];
      kill();
    };
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
    const timer = setTimeout(() => {
      stopped = 'timeout';
      kill();
    }, spec.timeoutMs);

    child.stdin.on('error', () => {}); // a program that never reads its stdin
    child.stdin.end(spec.stdin);
    let lastStdout = '';
    createInterface({ input: child.stdout }).on('line', (line) => {
      if (line.trim()) lastStdout = line.slice(0, MAX_RESULT_BYTES);
    });
    let stderrTail = '';
    createInterface({ input: child.stderr }).on('line', (line) => {
      stderrTail = (stderrTail + line + '\n').slice(-STDERR_TAIL);
      host.onLog(line.slice(0, MAX_LOG_LINE));
    });
    const [exitCode, sig] = await new Promise<[number | null, string | null]>((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (code, s) => resolve([code, s]));
    });
    clearTimeout(timer);
    signal.removeEventListener('abort', onAbort);
    await cgroup.killAll(); // nothing of the session outlives it (daemonised children included)
    const wallSeconds = (performance.now() - started) / 1000;
    const usage = await cgroup.usage();
    const artifacts = await keepArtifacts(path.join(ws.path, 'out'), host.artifactsDir).catch((err: unknown) => {
      host.onLog(`fabric: keeping artifacts failed: ${(err as Error).message}`);
      return [];
    });
    let result: unknown = null;
    let resultError: string | undefined;
    if (exitCode === 0 && !stopped) {
      // an unreadable result is the program's failure, not the sandbox's
      result = await readResult(ws.path, lastStdout).catch((err: unknown) => {
        resultError = `result.json is not valid: ${(err as Error).message}`;
        return null;
      });
    }
    const wipe = await ws.wipe();
    return {
      exitCode,
      resultError,
      signal: sig,
      stopped,
      oomKilled: usage.oomKilled,
      result,
      stderrTail,
      usage: { ...usage, wallSeconds, artifactBytes: artifacts.reduce((n, a) => n + a.size, 0) },
      artifacts,
      wipe,
    };
  } finally {
    await proxy?.close().catch(() => {});
    for (const c of cleanups.reverse()) await c().catch(() => {});
    // the wipe above is the normal path; after an error this wipes what is left
    await ws.wipe().catch(() => {});
  }
}
