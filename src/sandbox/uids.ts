import fs from 'node:fs/promises';
import path from 'node:path';
import { isProcessAlive } from './reaper.js';

/**
 * Host uids for sandboxes: every live session gets its own unprivileged uid (and gid of the
 * same number), so no two sandboxes on a host share file ownership or signal each other, even
 * across worker processes. A uid is held by an exclusive `mkdir` of `<dir>/<uid>` that records
 * the holder's pid; a lock whose process is gone is free again.
 */
export class UidPool {
  constructor(
    private readonly dir: string,
    private readonly base: number,
    private readonly size: number,
  ) {}

  async acquire(): Promise<number> {
    await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
    const start = Math.floor(Math.random() * this.size);
    for (let i = 0; i < this.size; i++) {
      const uid = this.base + ((start + i) % this.size);
      const lock = path.join(this.dir, String(uid));
      try {
        await fs.mkdir(lock);
      } catch {
        if (await this.stale(lock)) await fs.rm(lock, { recursive: true, force: true });
        continue;
      }
      await fs.writeFile(path.join(lock, 'pid'), String(process.pid));
      return uid;
    }
    throw new Error(`all ${this.size} sandbox uids from ${this.base} are in use; raise FABRIC_SANDBOX_UID_COUNT`);
  }

  async release(uid: number): Promise<void> {
    await fs.rm(path.join(this.dir, String(uid)), { recursive: true, force: true });
  }

  private async stale(lock: string): Promise<boolean> {
    const pid = Number(await fs.readFile(path.join(lock, 'pid'), 'utf8').catch(() => ''));
    if (!pid) {
      // a lock without a pid is being created right now, or its creator died in between
      const age = Date.now() - (await fs.stat(lock).catch(() => ({ mtimeMs: Date.now() }))).mtimeMs;
      return age > 60_000;
    }
    return !isProcessAlive(pid);
  }
}
