import { Worker as Thread } from 'node:worker_threads';
import type { LoadCommand, LoadResult } from './load.js';

/** The load-generator thread, seen from the main thread. */
export class Loader {
  private readonly thread: Thread;
  private seq = 0;
  private readonly pending = new Map<number, { resolve: (r: LoadResult | null) => void; reject: (e: Error) => void }>();

  constructor() {
    this.thread = new Thread(new URL('./boot.mjs', import.meta.url), { workerData: { entry: new URL('./load.ts', import.meta.url).href } });
    this.thread.on('message', (msg: { id: number; result?: LoadResult | null; error?: string }) => {
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (msg.error) p.reject(new Error(`load generator: ${msg.error}`));
      else p.resolve(msg.result ?? null);
    });
    this.thread.on('error', (err) => {
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    });
  }

  private call(cmd: LoadCommand): Promise<LoadResult | null> {
    const id = ++this.seq;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.thread.postMessage({ id, cmd });
    });
  }

  /** Runs a load command; throws if any send was refused. */
  async run(cmd: Exclude<LoadCommand, { kind: 'close' }>): Promise<LoadResult> {
    const r = (await this.call(cmd))!;
    const refused = Object.entries(r.errors);
    if (refused.length > 0) throw new Error(`${cmd.kind}: ${refused.map(([k, v]) => `${v}× ${k}`).join('; ')}`);
    return r;
  }

  async close(): Promise<void> {
    await this.call({ kind: 'close' });
    await this.thread.terminate();
  }
}
