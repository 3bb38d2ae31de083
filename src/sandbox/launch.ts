import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import fs from 'node:fs/promises';
import type { Socket } from 'node:net';
import path from 'node:path';
import { createSessionCgroup, type CgroupSupport, type SessionCgroup } from './cgroups.js';
import { INSIDE, spawnPlan } from './command.js';
import { EgressProxy } from './egress/index.js';
import { sessionCgroupName } from './reaper.js';
import { createWorkspace, type Workspace } from './workspace.js';

/**
 * Launching a sandbox before its program is known: workspace, cgroup, egress proxy (denying
 * everything until `setPolicy`), and the sandbox itself with its supervisor (relay.cjs) waiting
 * for a header line on the control channel. A cold session launches one and starts its program
 * at once; the warm pool (pool.ts) launches them ahead of time. Either way a sandbox runs one
 * program and is then disposed of.
 */

/** What a sandbox fixes when it is launched: two sandboxes of one profile are interchangeable. */
export interface SandboxProfile {
  level: 'process' | 'container';
  /** The agent's code, mounted read-only at /agent (container) or the working directory (process). */
  codeDir?: string | undefined;
  memoryMb: number;
  cpuCores: number;
  pids: number;
}

export function profileKey(p: SandboxProfile): string {
  return JSON.stringify([p.level, p.codeDir ?? null, p.memoryMb, p.cpuCores, p.pids]);
}

/** What the host offers and where sandboxes live (SessionHost extends it). */
export interface LaunchHost {
  /** Parent of the per-session directories (search permission for every sandbox uid). */
  sessionsDir: string;
  /** Read-only helpers mounted at /fabric (relay.cjs, preload.cjs). */
  helpersDir: string;
  bwrap: string | undefined;
  cgroups: CgroupSupport;
  /** tmpfs workspaces of this size (root only); 0 = plain directories. */
  tmpfsMb: number;
}

/** What the supervisor starts, sent as one JSON line on the control channel. */
export interface ProgramHeader {
  command: readonly string[];
  /** The program's whole environment (see LaunchedSandbox.programEnv). */
  env: Record<string, string>;
}

export interface LaunchOptions {
  /** Names the session dir `<sessionsDir>/<id>` and the cgroup sessionCgroupName(id) (reaper.ts). */
  id: string;
  uid: number;
  /** The supervisor's heartbeat interval; default 1000 ms. */
  heartbeatMs?: number | undefined;
  /** Called once, last, by dispose() (the pool gives back the uid it acquired); not called when launching throws. */
  release?: () => Promise<void>;
}

/** The control channel's fd in the sandbox: heartbeats out, the program header in. */
export const CONTROL_FD = 3;
export const DEFAULT_HEARTBEAT_MS = 1000;
const SANDBOX_PATH = '/usr/local/bin:/usr/bin:/bin';

export class LaunchedSandbox {
  /** performance.now() of the last heartbeat (of the launch before the first). */
  lastBeatAt = performance.now();
  /** Resolves at the first heartbeat (the supervisor waits for its program); rejects if the sandbox ends before. */
  readonly ready: Promise<void>;
  /** Exit code and signal once the sandbox has ended and its stdout and stderr are drained; rejects when it could not be spawned. */
  readonly closed: Promise<[number | null, string | null]>;
  exited = false;
  private started = false;
  private disposing: Promise<void> | undefined;
  private readonly control: Socket;

  constructor(
    readonly id: string,
    readonly profile: SandboxProfile,
    readonly uid: number,
    readonly ws: Workspace,
    readonly cgroup: SessionCgroup,
    /** The session's egress proxy, its only way out; it denies everything until setPolicy. */
    readonly proxy: EgressProxy | undefined,
    readonly child: ChildProcessWithoutNullStreams,
    private readonly release: (() => Promise<void>) | undefined,
    /** Host dir of the sandbox helpers (a process sandbox preloads the proxy agent from there). */
    private readonly helpersDir: string,
  ) {
    this.control = child.stdio[CONTROL_FD] as unknown as Socket;
    this.control.on('error', () => {});
    child.stdin.on('error', () => {}); // a program that never reads its stdin
    this.closed = new Promise((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (code, signal) => resolve([code, signal]));
    });
    this.closed.then(
      () => (this.exited = true),
      () => (this.exited = true),
    );
    this.ready = new Promise<void>((resolve, reject) => {
      this.control.on('data', () => {
        this.lastBeatAt = performance.now();
        resolve();
      });
      this.closed.then(
        ([code, signal]) => reject(new Error(`the sandbox ended before it was ready (${signal ? `signal ${signal}` : `exit code ${code}`})`)),
        (err: unknown) => reject(err as Error),
      );
    });
    this.ready.catch(() => {});
  }

  /** The program's environment: PATH and HOME unless `env` sets them, `env`, then where its workspace is and (container) how it goes out. */
  programEnv(env: Record<string, string>): Record<string, string> {
    const url = `http://127.0.0.1:${INSIDE.proxyPort}`;
    const container = this.profile.level === 'container';
    const workspace = container ? INSIDE.workspace : this.ws.path;
    const preload = container ? `${INSIDE.fabric}/preload.cjs` : path.join(this.helpersDir, 'preload.cjs');
    return {
      PATH: SANDBOX_PATH,
      HOME: workspace,
      ...env,
      FABRIC_WORKSPACE: workspace,
      HTTP_PROXY: url,
      HTTPS_PROXY: url,
      http_proxy: url,
      https_proxy: url,
      NODE_OPTIONS: `--require ${preload}`,
    };
  }

  /** Hands the supervisor its program (once); the task itself then goes to `child.stdin`. */
  start(header: ProgramHeader): void {
    if (this.started) throw new Error(`sandbox ${this.id} already runs a program; a sandbox serves one task, then it is disposed of`);
    this.started = true;
    this.control.write(`${JSON.stringify({ command: header.command, env: header.env })}\n`);
  }

  /** Asks the supervisor to send `sig` to the program (a graceful stop; kill() is the forced one). */
  signal(sig: 'SIGTERM' | 'SIGINT'): void {
    if (this.started && !this.control.destroyed) this.control.write(`${JSON.stringify({ signal: sig })}\n`);
  }

  /** SIGKILL to every process of the sandbox (its process group and its cgroup). */
  kill(): void {
    if (this.child.pid) {
      try {
        process.kill(-this.child.pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    void this.cgroup.killAll();
  }

  /** Kills what is left, closes the proxy, removes the cgroup, wipes the workspace, then `release`; idempotent. */
  dispose(): Promise<void> {
    this.disposing ??= (async () => {
      this.kill();
      await this.proxy?.close().catch(() => {});
      await this.cgroup.destroy().catch(() => {});
      await this.ws.wipe().catch(() => {});
      await this.release?.().catch(() => {});
    })();
    return this.disposing;
  }
}

/**
 * Launches a sandbox of `profile` whose supervisor waits for its program. Throws (leaving nothing
 * behind) when the host cannot provide the level or a step fails.
 */
export async function launchSandbox(profile: SandboxProfile, host: LaunchHost, opts: LaunchOptions): Promise<LaunchedSandbox> {
  if (profile.level === 'container' && !host.bwrap) throw new Error('container isolation needs bubblewrap (bwrap), which this host lacks: install the Debian package bubblewrap');
  if (host.cgroups.kind === 'none') throw new Error(`${profile.level} isolation needs cgroups for its memory, CPU and process limits: ${host.cgroups.reason}`);
  const { uid } = opts;
  const ws = await createWorkspace(host.sessionsDir, opts.id, { uid, gid: uid, ...(host.tmpfsMb ? { tmpfsMb: host.tmpfsMb } : {}) });
  let cgroup: SessionCgroup | undefined;
  let proxy: EgressProxy | undefined;
  try {
    cgroup = await createSessionCgroup(host.cgroups, sessionCgroupName(opts.id), { memoryMb: profile.memoryMb, cpuCores: profile.cpuCores, pids: profile.pids }, { uid, gid: uid });
    // the proxy socket: in the session's run dir (0700, the sandbox's uid); a container sees only its own
    const runDir = path.join(ws.dir, 'run');
    await fs.mkdir(runDir, { mode: 0o700 });
    await fs.chown(runDir, uid, uid);
    proxy = new EgressProxy({ allow: [] });
    await proxy.listen(path.join(runDir, 'egress.sock'));
    await fs.chown(path.join(runDir, 'egress.sock'), uid, uid);
    const plan = spawnPlan(
      {
        level: profile.level,
        command: [],
        workspace: ws.path,
        codeDir: profile.codeDir,
        runDir,
        helpersDir: host.helpersDir,
        env: { PATH: SANDBOX_PATH },
        cgroupProcs: cgroup.procsFiles,
        supervisor: { controlFd: CONTROL_FD, heartbeatMs: opts.heartbeatMs ?? DEFAULT_HEARTBEAT_MS, node: process.execPath },
      },
      host.bwrap ?? 'bwrap',
    );
    const child = spawn(plan.file, plan.args, { cwd: plan.cwd, env: plan.env, uid, gid: uid, detached: true, stdio: new Array(CONTROL_FD + 1).fill('pipe') });
    return new LaunchedSandbox(opts.id, profile, uid, ws, cgroup, proxy, child as ChildProcessWithoutNullStreams, opts.release, host.helpersDir);
  } catch (err) {
    await proxy?.close().catch(() => {});
    await cgroup?.destroy().catch(() => {});
    await ws.wipe().catch(() => {});
    throw err;
  }
}
