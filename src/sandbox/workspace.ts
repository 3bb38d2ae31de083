import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** In a session dir: the pid of the worker process that owns the session. */
export const OWNER_FILE = 'owner';

/** What a wipe removed and how it was checked (recorded with the session before the task ends). */
export interface WipeEvidence {
  method: 'tmpfs-unmount' | 'remove';
  files: number;
  bytes: number;
  /** After the wipe the workspace path no longer exists (and, for tmpfs, is no mount point). */
  verified: boolean;
  duration_ms: number;
  error?: string;
}

/** A session's writable directory: `<dir>/workspace`, with `out/` for artifacts, owned by the sandbox uid. */
export interface Workspace {
  /** The session's private host directory (holds the workspace and the session's sockets). */
  readonly dir: string;
  readonly path: string;
  readonly tmpfs: boolean;
  wipe(): Promise<WipeEvidence>;
}

export interface WorkspaceOptions {
  /** Mount a tmpfs of this many MB (needs root): the fastest and most complete wipe. */
  tmpfsMb?: number;
  uid: number;
  gid: number;
}

/** Counts files and bytes under a directory (not following symlinks). */
async function measure(dir: string): Promise<{ files: number; bytes: number }> {
  let files = 0;
  let bytes = 0;
  const walk = async (d: string): Promise<void> => {
    let entries;
    try {
      entries = await fs.readdir(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else {
        files++;
        bytes += (await fs.lstat(p).catch(() => ({ size: 0 }))).size;
      }
    }
  };
  await walk(dir);
  return { files, bytes };
}

async function exists(p: string): Promise<boolean> {
  return fs.lstat(p).then(
    () => true,
    () => false,
  );
}

/**
 * Creates `<parent>/<sessionId>/workspace` (0700, owned by the sandbox's uid). `parent` must
 * be reachable (search permission) by that uid; nothing else under it is.
 */
export async function createWorkspace(parent: string, sessionId: string, options: WorkspaceOptions): Promise<Workspace> {
  const dir = path.join(parent, sessionId);
  const ws = path.join(dir, 'workspace');
  await fs.mkdir(dir, { mode: 0o711 });
  // whose session this is: a worker that starts after a crash removes dirs whose owner is gone
  await fs.writeFile(path.join(dir, OWNER_FILE), String(process.pid), { mode: 0o600 });
  await fs.mkdir(ws, { mode: 0o700 });
  let tmpfs = false;
  if (options.tmpfsMb) {
    await run('mount', ['-t', 'tmpfs', '-o', `size=${options.tmpfsMb}m,mode=0700,uid=${options.uid},gid=${options.gid},nosuid,nodev`, 'tmpfs', ws]);
    tmpfs = true;
  }
  await fs.chown(ws, options.uid, options.gid);
  await fs.mkdir(path.join(ws, 'out'), { mode: 0o700 });
  await fs.chown(path.join(ws, 'out'), options.uid, options.gid);

  let wiped: Promise<WipeEvidence> | undefined;
  const wipeOnce = async (): Promise<WipeEvidence> => {
    const started = performance.now();
    const { files, bytes } = await measure(ws);
    let error: string | undefined;
    try {
      if (tmpfs) await run('umount', ['--lazy', ws]);
      await fs.rm(dir, { recursive: true, force: true, maxRetries: 3 });
    } catch (err) {
      error = (err as Error).message;
    }
    const verified = !(await exists(ws)) && !(await exists(dir));
    return { method: tmpfs ? 'tmpfs-unmount' : 'remove', files, bytes, verified, duration_ms: Math.round((performance.now() - started) * 10) / 10, ...(error ? { error } : {}) };
  };
  // idempotent: the session wipes on its normal path and again, as a safety net, on errors
  const wipe = () => (wiped ??= wipeOnce());
  return { dir, path: ws, tmpfs, wipe };
}
