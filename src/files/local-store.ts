import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { logger } from '../telemetry/index.js';
import { assertBlobKey, type BlobStore, type StoredBlob } from './store.js';

/** Partial writes older than this are removed when a store opens (their writer is long gone). */
const STALE_TEMP_MS = 24 * 3600 * 1000;

/**
 * Files on the local filesystem under `root`: each blob is written to `<root>/.tmp/<random>`,
 * fsynced, then renamed into place (and the directory fsynced), so a crash leaves either the
 * whole file or none. Paths come only from validated keys.
 */
export class LocalBlobStore implements BlobStore {
  readonly kind = 'local';
  private readonly tmpDir: string;

  constructor(private readonly root: string) {
    this.tmpDir = path.join(root, '.tmp');
  }

  private prepared: Promise<void> | undefined;

  /** Creates the directories (0700) and removes stale partial writes, once, before the first write. */
  private prepare(): Promise<void> {
    this.prepared ??= (async () => {
      await fsp.mkdir(this.tmpDir, { recursive: true, mode: 0o700 });
      await fsp.chmod(this.root, 0o700);
      const now = Date.now();
      for (const name of await fsp.readdir(this.tmpDir)) {
        const p = path.join(this.tmpDir, name);
        const st = await fsp.stat(p).catch(() => undefined);
        if (st && now - st.mtimeMs > STALE_TEMP_MS) await fsp.rm(p, { force: true });
      }
    })();
    this.prepared.catch(() => (this.prepared = undefined));
    return this.prepared;
  }

  private pathOf(key: string): string {
    assertBlobKey(key);
    return path.join(this.root, ...key.split('/'));
  }

  async put(key: string, body: Readable): Promise<void> {
    const final = this.pathOf(key);
    await this.prepare();
    const tmp = path.join(this.tmpDir, randomUUID());
    // flush: the descriptor is fsynced before it closes, so the rename below publishes durable bytes
    const out = fs.createWriteStream(tmp, { flags: 'wx', mode: 0o600, flush: true });
    try {
      await pipeline(body, out);
      await fsp.mkdir(path.dirname(final), { recursive: true, mode: 0o700 });
      await fsp.rename(tmp, final);
      await syncDir(path.dirname(final));
    } catch (err) {
      // a body that fails at once can beat the file's open: wait for the stream to close (its
      // open done) before removing, or the file would appear after the rm
      if (!out.closed) await new Promise<void>((resolve) => out.once('close', () => resolve()));
      await fsp.rm(tmp, { force: true });
      body.destroy();
      throw err;
    }
  }

  async get(key: string): Promise<StoredBlob | undefined> {
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(this.pathOf(key), fs.constants.O_RDONLY);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    const { size } = await fh.stat();
    return { body: fh.createReadStream(), size };
  }

  async delete(key: string): Promise<void> {
    await fsp.rm(this.pathOf(key), { force: true });
  }

  async close(): Promise<void> {}
}

/** A rename is durable only once its directory is synced too. */
async function syncDir(dir: string): Promise<void> {
  const fh = await fsp.open(dir, fs.constants.O_RDONLY);
  try {
    await fh.sync();
  } catch (err) {
    logger().debug({ err, dir }, 'directory fsync not supported here');
  } finally {
    await fh.close();
  }
}
