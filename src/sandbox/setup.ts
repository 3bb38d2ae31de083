import path from 'node:path';
import type { SandboxConfig } from '../config/index.js';
import type { Db } from '../db/index.js';
import type { AgentFiles } from '../files/index.js';
import { logger } from '../telemetry/index.js';
import type { Executor } from '../worker/index.js';
import { SandboxExecutor, type SandboxExecutorOptions } from './executor.js';
import { detectSandboxHost, missingFor, prepareSandboxRoot } from './host.js';
import { reapStaleSandboxes } from './reaper.js';
import { closeOrphanSessions } from './sessions.js';
import { WarmPool } from './pool.js';
import { UidPool } from './uids.js';

export interface SandboxRuntimeOptions {
  config: SandboxConfig;
  db: Db;
  /** Runs `isolation: none` agents. */
  inProcess: Executor;
  /** Per-agent files: what sandboxes leave in /workspace/out is stored there (with task_id). */
  files: AgentFiles;
  /** The fabric's API as sandboxes reach it. */
  apiUrl: string;
  mintSessionToken: SandboxExecutorOptions['mintSessionToken'];
  /** The agent's net.connect policy per session (the policy engine's netConnectCheck). */
  egressPolicy?: SandboxExecutorOptions['egressPolicy'];
}

/** The sandbox side of a worker process: one executor for all its workers. */
export interface SandboxRuntime {
  executor: Executor;
  /** Which levels this host can run, and why not the others. */
  readonly levels: Record<'process' | 'container', string | undefined>;
  close(): Promise<void>;
}

/** How often sessions orphaned by a dead worker (anywhere) are closed in the database. */
const ORPHAN_SWEEP_MS = 60_000;

/**
 * Detects what the host offers, lays out the sandbox dir, and — on a host that can run
 * sandboxes — cleans up after a crashed worker (its processes, cgroups, workspaces) before the
 * first task. A host that cannot run a level still starts: tasks of that level fail with
 * `isolation_unavailable` naming what is missing, never a silent downgrade.
 */
export async function startSandboxRuntime(o: SandboxRuntimeOptions): Promise<SandboxRuntime> {
  const host = detectSandboxHost();
  const levels = { process: missingFor('process', host), container: missingFor('container', host) };
  if (levels.process) logger().warn({ reason: levels.process }, 'sandboxes unavailable on this host: agents with process or container isolation will fail');
  else if (levels.container) logger().warn({ reason: levels.container }, 'container sandboxes unavailable on this host');
  const executorOn = (dirs: { sessionsDir: string; helpersDir: string; uidsDir: string }, uids: UidPool, pool?: WarmPool) => {
    const sessionHost = { ...dirs, bwrap: host.bwrap, cgroups: host.cgroups, tmpfsMb: o.config.tmpfsMb, pool, heartbeat: { timeoutMs: o.config.heartbeatTimeoutSeconds * 1000 }, stopGraceMs: o.config.stopGraceSeconds * 1000 };
    return new SandboxExecutor({ db: o.db, inProcess: o.inProcess, uids, host: sessionHost, files: o.files, apiUrl: o.apiUrl, mintSessionToken: o.mintSessionToken, pidsLimit: o.config.pidsLimit, unavailable: (l) => levels[l], egressPolicy: o.egressPolicy });
  };
  if (levels.process) {
    // nothing is created or cleaned on a host that cannot run sandboxes (it may not even own the dir)
    const dirs = { sessionsDir: path.join(o.config.dir, 'sessions'), helpersDir: path.join(o.config.dir, 'helpers'), uidsDir: path.join(o.config.dir, 'uids') };
    return { levels, executor: executorOn(dirs, new UidPool(dirs.uidsDir, o.config.uidBase, o.config.uidCount)), close: async () => {} };
  }
  const dirs = prepareSandboxRoot(o.config.dir);
  const reaped = await reapStaleSandboxes(dirs.sessionsDir, host.cgroups);
  if (reaped.sessions || reaped.cgroups) logger().warn({ ...reaped }, 'removed sandboxes left by a worker that stopped');
  const sweep = () => closeOrphanSessions(o.db).catch((err: unknown) => logger().warn({ err }, 'closing orphaned sandbox sessions failed'));
  await sweep();
  const timer = setInterval(() => void sweep(), ORPHAN_SWEEP_MS);
  timer.unref();
  const uids = new UidPool(dirs.uidsDir, o.config.uidBase, o.config.uidCount);
  const pool =
    o.config.warmPoolSize > 0
      ? new WarmPool({
          host: { ...dirs, bwrap: host.bwrap, cgroups: host.cgroups, tmpfsMb: o.config.tmpfsMb },
          uids,
          size: o.config.warmPoolSize,
          heartbeatTimeoutMs: o.config.heartbeatTimeoutSeconds * 1000,
          onError: (err) => logger().warn({ err }, 'warm sandbox pool'),
        })
      : undefined;
  return {
    levels,
    executor: executorOn(dirs, uids, pool),
    close: async () => {
      clearInterval(timer);
      await pool?.close();
    },
  };
}
