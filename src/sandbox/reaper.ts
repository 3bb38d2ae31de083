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

export interface ReapReport {
  /** Session dirs (workspaces, sockets) left by dead workers and removed. */
  sessions: number;
  /** Session cgroups with no live owner, killed and removed. */
  cgroups: number;
}

/**
 * Boot cleanup for one host: after a worker crash, its sandboxes' processes, cgroups, tmpfs
 * workspaces and session dirs are still there. This removes every session whose owning worker
 * process is gone — never one of a live worker sharing the host — and kills the processes in
 * their cgroups. Session dir `<sessionsDir>/<id>` pairs with cgroup `s-<id>`.
 */
export async function reapStaleSandboxes(sessionsDir: string, cgroups: CgroupSupport): Promise<ReapReport> {
  const live = new Set<string>();
  const stale: string[] = [];
  for (const e of await fs.readdir(sessionsDir, { withFileTypes: true }).catch(() => [])) {
    if (!e.isDirectory()) continue;
    if (await ownedByLiveWorker(path.join(sessionsDir, e.name))) live.add(e.name);
    else stale.push(e.name);
  }
  // processes first: a workspace in use by a live process could not be unmounted cleanly
  const removed = await cleanupStaleCgroups(cgroups, { prefix: 's-', keep: (name) => live.has(name.slice(2)) });
  for (const name of stale) {
    const dir = path.join(sessionsDir, name);
    await run('umount', ['--lazy', path.join(dir, 'workspace')]).catch(() => {}); // not a mount point: fine
    await fs.rm(dir, { recursive: true, force: true, maxRetries: 3 });
  }
  return { sessions: stale.length, cgroups: removed };
}
