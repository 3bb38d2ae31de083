import { constants as fsConstants } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { safeFileName } from '../files/index.js';
import type { CgroupUsage } from './cgroups.js';
import type { EgressCheck, EgressDecision } from './egress/index.js';
import { launchSandbox, type LaunchHost, type LaunchedSandbox, type SandboxProfile } from './launch.js';
import type { WarmPool } from './pool.js';
import type { UidPool } from './uids.js';
import type { WipeEvidence } from './workspace.js';

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
  /** The agent's net.connect policy, answered in memory per destination (see EgressCheck). */
  egressCheck?: EgressCheck | undefined;
  /** Environment the agent gets (the session adds FABRIC_WORKSPACE and proxy settings). */
  env: Record<string, string>;
  stdin: string;
  timeoutMs: number;
}

export interface SessionHost extends LaunchHost {
  /** Uids for sandboxes launched cold (a warm sandbox already holds one, from the same pool). */
  uids: UidPool;
  /**
   * Stores one file of /workspace/out (before the wipe) as the agent's file; rejects when it
   * cannot (e.g. 429 storage_quota_exceeded). Without it artifacts are listed but not kept.
   */
  keepArtifact?: ((name: string, body: Readable) => Promise<{ file_id: string }>) | undefined;
  onLog(line: string): void;
  onEgress(decision: EgressDecision): void;
  /** Warm sandboxes: a session takes one of its profile when one is ready, else launches cold (and asks the pool to keep that profile warm). */
  pool?: WarmPool | undefined;
  /**
   * The supervisor heartbeats every `intervalMs` (default 1000; a warm sandbox keeps the pool's);
   * a session with no heartbeat for `timeoutMs` (default 10000) is killed: stopped 'heartbeat_lost'.
   */
  heartbeat?: { intervalMs?: number | undefined; timeoutMs?: number | undefined } | undefined;
  /** SIGTERM first on timeout, cancel and drain, SIGKILL this long after (default 5000; 0 kills at once). */
  stopGraceMs?: number | undefined;
}

/** A file the program left in /workspace/out: kept as the agent's file `file_id`, or why not. */
export interface Artifact {
  name: string;
  size: number;
  file_id?: string;
  error?: { code: string; message: string };
}

export interface SessionOutcome {
  exitCode: number | null;
  signal: string | null;
  /** Why the session was stopped from outside, if it was. */
  /** heartbeat_lost: the sandbox's supervisor stopped heartbeating (frozen, or killed from inside). */
  stopped?: 'timeout' | 'cancel' | 'lease_lost' | 'drain' | 'heartbeat_lost' | undefined;
  /** The session ran in a sandbox the warm pool had launched ahead of time. */
  warm: boolean;
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

/**
 * Stores each regular file under `from` through `keep` (no symlinks followed: the sandbox made
 * them, though its processes are dead by now). A file that cannot be kept is listed with the
 * reason and said in the log, never dropped silently.
 */
async function keepArtifacts(from: string, keep: SessionHost['keepArtifact'], onLog: (line: string) => void): Promise<Artifact[]> {
  const kept: Artifact[] = [];
  const walk = async (rel: string): Promise<void> => {
    const entries = await fs.readdir(path.join(from, rel), { withFileTypes: true }).catch(() => []);
    for (const e of entries) {
      const r = path.join(rel, e.name);
      if (e.isDirectory()) await walk(r);
      else if (e.isFile()) kept.push(await keepOne(path.join(from, r), safeFileName(r), keep, onLog));
    }
  };
  await walk('');
  return kept;
}

async function keepOne(file: string, name: string, keep: SessionHost['keepArtifact'], onLog: (line: string) => void): Promise<Artifact> {
  let fh: fs.FileHandle | undefined;
  let size = 0;
  try {
    fh = await fs.open(file, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
    const st = await fh.stat();
    size = st.size;
    if (!st.isFile()) throw Object.assign(new Error('not a regular file'), { code: 'not_a_file' });
    if (!keep) throw Object.assign(new Error('this worker keeps no artifacts'), { code: 'artifacts_not_kept' });
    const { file_id } = await keep(name, fh.createReadStream()); // the stream closes the handle
    return { name, size, file_id };
  } catch (err) {
    await fh?.close().catch(() => {});
    const e = err as { code?: unknown; message?: string };
    const error = { code: typeof e.code === 'string' && /^[a-z_]+$/.test(e.code) ? e.code : 'artifact_not_kept', message: e.message ?? String(err) };
    onLog(`fabric: artifact out/${name} (${size} bytes) was not kept: ${error.code}: ${error.message}`);
    return { name, size, error };
  }
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

export const DEFAULT_HEARTBEAT_TIMEOUT_MS = 10_000;
/** How long a program has after SIGTERM (timeout, cancel, drain) before SIGKILL. */
export const DEFAULT_STOP_GRACE_MS = 5_000;
/** Stops that give the program its grace; a lost lease or heartbeat kills at once. */
const GRACEFUL = new Set<SessionOutcome['stopped']>(['timeout', 'cancel', 'drain']);

/** A warm sandbox of the spec's profile from the pool, else a cold one launched for this session. */
async function sandboxFor(spec: SessionSpec, host: SessionHost): Promise<{ sandbox: LaunchedSandbox; warm: boolean }> {
  const profile: SandboxProfile = { level: spec.level, codeDir: spec.codeDir, memoryMb: spec.memoryMb, cpuCores: spec.cpuCores, pids: spec.pids };
  const warm = host.pool?.take(profile);
  if (warm) return { sandbox: warm, warm: true };
  const uid = await host.uids.acquire();
  try {
    return { sandbox: await launchSandbox(profile, host, { id: spec.id, uid, heartbeatMs: host.heartbeat?.intervalMs, release: () => host.uids.release(uid) }), warm: false };
  } catch (err) {
    await host.uids.release(uid);
    throw err;
  }
}

/**
 * One attempt in a sandbox: a warm one from host.pool or one launched now (workspace, cgroup,
 * egress proxy for container, the supervisor), the program started with the task on stdin,
 * stderr streamed as log lines; then artifacts kept, usage read, and the workspace wiped with
 * evidence — whatever way the program ended. `signal` aborts it, as does the supervisor's
 * silence (heartbeat_lost): SIGKILL to every process of the session.
 */
export async function runSession(spec: SessionSpec, host: SessionHost, signal: AbortSignal): Promise<SessionOutcome> {
  const started = performance.now();
  const { sandbox, warm } = await sandboxFor(spec, host);
  try {
    const { ws, cgroup, child } = sandbox;
    sandbox.proxy?.setPolicy({ allow: spec.egress, internal: spec.internal, onDecision: host.onEgress, check: spec.egressCheck });
    let stopped: SessionOutcome['stopped'];
    let forced: NodeJS.Timeout | undefined;
    const stop = (why: SessionOutcome['stopped']) => {
      stopped ??= why;
      const grace = host.stopGraceMs ?? DEFAULT_STOP_GRACE_MS;
      if (grace > 0 && GRACEFUL.has(why) && !forced) {
        // a graceful stop: SIGTERM to the program, which may save partial results to out/; SIGKILL after the grace
        sandbox.signal('SIGTERM');
        forced = setTimeout(() => sandbox.kill(), grace);
      } else sandbox.kill();
    };
    const onAbort = () => stop(String(signal.reason) as SessionOutcome['stopped']);
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
    const timer = setTimeout(() => stop('timeout'), spec.timeoutMs);
    const silence = host.heartbeat?.timeoutMs ?? DEFAULT_HEARTBEAT_TIMEOUT_MS;
    const watchdog = setInterval(
      () => {
        if (performance.now() - sandbox.lastBeatAt > silence) stop('heartbeat_lost');
      },
      Math.max(20, Math.min(1000, silence / 4)),
    );

    sandbox.start({ command: spec.command, env: sandbox.programEnv(spec.env) });
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
    const [exitCode, sig] = await sandbox.closed.finally(() => {
      clearTimeout(timer);
      clearTimeout(forced);
      clearInterval(watchdog);
      signal.removeEventListener('abort', onAbort);
    });
    await cgroup.killAll(); // nothing of the session outlives it (daemonised children included)
    const wallSeconds = (performance.now() - started) / 1000;
    const usage = await cgroup.usage();
    const artifacts = await keepArtifacts(path.join(ws.path, 'out'), host.keepArtifact, host.onLog).catch((err: unknown) => {
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
      warm,
      oomKilled: usage.oomKilled,
      result,
      stderrTail,
      usage: { ...usage, wallSeconds, artifactBytes: artifacts.reduce((n, a) => n + a.size, 0) },
      artifacts,
      wipe,
    };
  } finally {
    // never reused: whatever is left is killed, the cgroup removed, the workspace wiped (again, after an error)
    await sandbox.dispose();
  }
}
