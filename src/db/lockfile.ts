import fs from 'node:fs';
import path from 'node:path';
import { createExclusive, ensurePrivateDir } from '../config/index.js';

/** Thrown when another live process holds the data directory. */
export class DataDirLockedError extends Error {
  override name = 'DataDirLockedError';
  constructor(
    readonly dir: string,
    readonly pid: number | undefined,
  ) {
    super(
      `the data directory ${dir} is in use by another agent-fabric process${pid ? ` (pid ${pid})` : ''}. ` +
        `Stop that process, or start this one with another --data-dir / FABRIC_DATA_DIR.`,
    );
  }
}

/** Data dirs this process holds, so a pid match after a container restart is not mistaken for us. */
const held = new Set<string>();

/** A lock or takeover marker younger than this is never treated as abandoned. */
const GRACE_MS = 10_000;

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function readHolder(file: string): { pid: number | undefined; ageMs: number } | undefined {
  try {
    const text = fs.readFileSync(file, 'utf8').trim();
    const pid = /^\d+$/.test(text) ? Number(text) : undefined;
    return { pid, ageMs: Date.now() - fs.statSync(file).mtimeMs };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** True when the lock's holder is gone: a dead pid, our own pid from a previous life, or garbage past the grace period. */
function isAbandoned(holder: { pid: number | undefined; ageMs: number }, dir: string): boolean {
  if (holder.pid === undefined) return holder.ageMs > GRACE_MS;
  if (holder.pid === process.pid) return !held.has(dir);
  return !isAlive(holder.pid);
}

/**
 * Removes an abandoned lock. Only one process may do this at a time (an atomic mkdir is the
 * mutex), and it re-reads the lock under that mutex, so a fresh lock taken meanwhile by
 * another process is never removed.
 */
function removeAbandoned(file: string, seen: string): void {
  const mutex = `${file}.takeover`;
  try {
    fs.mkdirSync(mutex);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    // a takeover that crashed half-way leaves its marker; clear it once it is clearly old
    if (Date.now() - fs.statSync(mutex).mtimeMs > GRACE_MS) fs.rmSync(mutex, { recursive: true, force: true });
    return;
  }
  try {
    const now = fs.readFileSync(file, 'utf8');
    if (now === seen) fs.rmSync(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  } finally {
    fs.rmSync(mutex, { recursive: true, force: true });
  }
}

/**
 * Takes an exclusive lock on `dir`. PGlite never locks its data dir, and two processes
 * writing one would corrupt it, so the fabric refuses a dir held by a live process; a lock
 * left by a dead one (crash, SIGKILL, container restart) is taken over.
 * Returns the release function.
 */
export function acquireDirLock(dir: string, name = 'fabric.lock'): () => void {
  ensurePrivateDir(dir);
  const key = path.resolve(dir);
  if (held.has(key)) throw new DataDirLockedError(dir, process.pid);
  const file = path.join(dir, name);
  for (let attempt = 0; attempt < 50; attempt++) {
    try {
      createExclusive(file, `${process.pid}\n`);
      held.add(key);
      let released = false;
      const release = () => {
        if (released) return;
        released = true;
        held.delete(key);
        process.off('exit', release);
        fs.rmSync(file, { force: true });
      };
      process.on('exit', release);
      return release;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const holder = readHolder(file);
    if (!holder) continue; // released meanwhile
    if (!isAbandoned(holder, key)) throw new DataDirLockedError(dir, holder.pid);
    let seen: string;
    try {
      seen = fs.readFileSync(file, 'utf8');
    } catch {
      continue; // released meanwhile
    }
    removeAbandoned(file, seen);
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10 + Math.random() * 20);
  }
  throw new DataDirLockedError(dir, undefined);
}
