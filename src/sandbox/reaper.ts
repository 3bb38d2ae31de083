import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { cleanupStaleCgroups, type CgroupSupport } from './cgroups.js';
import { OWNER_FILE } from './workspace.js';

const run = promisify(execFile);

/** A session dir younger than this without an owner file is still being created. */
const CREATING_GRACE_MS = 60_000;

/** Whether a process with this pid exists (a pid reused after a reboot reads as alive: the dir then leaks, it is never wrongly removed). */
export function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

async function ownedByLiveWorker(dir: string): Promise<boolean> {
  const pid = Number(await fs.readFile(path.join(dir, OWNER_FILE), 'utf8').catch(() => ''));
  if (pid > 0) return pid !== process.pid && isProcessAlive(pid);
  const st = await fs.stat(dir).catch(() => undefined);
  return st !== undefined && Date.now() - st.mtimeMs < CREATING_GRACE_MS;
}

/**
 * The cgroup of a session: named with the owning worker's pid, so a booting worker can tell a
 * dead worker's cgroups from a live one's without knowing its sandbox dir.
 */
export function sessionCgroupName(sessionId: string): string {
  return `s-${process.pid}-${sessionId}`;
}

/** A cgroup named by sessionCgroupName whose worker process is gone. */
function orphanedCgroup(name: string): boolean {
  const pid = Number(/^s-(\d+)-/.exec(name)?.[1]);
  return pid > 0 && pid !== process.pid && !isProcessAlive(pid);
}

export interface ReapReport {
  /** Session dirs (workspaces, sockets) left by dead workers and removed. */
  sessions: number;
  /** Session cgroups of dead workers, killed and removed. */
  cgroups: number;
}

/**
 * Boot cleanup for one host: after a worker crash, its sandboxes' processes, cgroups, tmpfs
 * workspaces and session dirs are still there. This kills and removes the cgroups (every process
 * in them) of every worker process that is gone, and the session dirs under `sessionsDir` they
 * owned — never anything of a live worker sharing the host.
 */
export async function reapStaleSandboxes(sessionsDir: string, cgroups: CgroupSupport): Promise<ReapReport> {
  // processes first: a workspace in use by a live process could not be unmounted cleanly
  const removed = await cleanupStaleCgroups(cgroups, { prefix: 's-', keep: (name) => !orphanedCgroup(name) });
  let sessions = 0;
  for (const e of await fs.readdir(sessionsDir, { withFileTypes: true }).catch(() => [])) {
    const dir = path.join(sessionsDir, e.name);
    if (!e.isDirectory() || (await ownedByLiveWorker(dir))) continue;
    await run('umount', ['--lazy', path.join(dir, 'workspace')]).catch(() => {}); // not a mount point: fine
    await fs.rm(dir, { recursive: true, force: true, maxRetries: 3 });
    sessions++;
  }
  return { sessions, cgroups: removed };
}
