import { randomBytes } from 'node:crypto';
import fs from 'node:fs';

/** Creates the data dir readable by this user only: it holds every tenant's data and the JWT secret. */
export function ensurePrivateDir(dir: string): void {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  if ((fs.statSync(dir).mode & 0o077) !== 0) fs.chmodSync(dir, 0o700);
}

/** Writes `content` to `file` atomically and only if `file` does not exist (EEXIST otherwise). */
export function createExclusive(file: string, content: string, mode = 0o600): void {
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  fs.writeFileSync(tmp, content, { mode, flag: 'wx' });
  try {
    fs.linkSync(tmp, file); // atomic, fails if the file exists; never seen half-written
  } finally {
    fs.rmSync(tmp, { force: true });
  }
}

