/** The peer: BullMQ on the local Redis, with in-process Workers and a no-op processor. */
import net from 'node:net';
import { Queue, Worker, type Job } from 'bullmq';
import type { RedisTarget } from './load.js';
import { nowUs } from './stats.js';

export const REDIS_HOST = '127.0.0.1';
export const REDIS_PORT = Number(process.env.BENCH_REDIS_PORT ?? 6379);

/** PING and INFO over a raw socket: whether Redis answers (and its version), without a client library. */
export function probeRedis(timeoutMs = 1000): Promise<{ ok: true; version: string } | { ok: false; reason: string }> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: REDIS_HOST, port: REDIS_PORT });
    let text = '';
    const done = (r: { ok: true; version: string } | { ok: false; reason: string }) => {
      socket.destroy();
      resolve(r);
    };
    socket.setTimeout(timeoutMs, () => done({ ok: false, reason: `no answer from Redis at ${REDIS_HOST}:${REDIS_PORT} within ${timeoutMs} ms` }));
    socket.on('error', (err) => done({ ok: false, reason: `no Redis at ${REDIS_HOST}:${REDIS_PORT}: ${err.message}` }));
    socket.on('connect', () => socket.write('PING\r\nINFO server\r\n'));
    socket.on('data', (d) => {
      text += d.toString();
      if (!text.startsWith('+PONG')) return done({ ok: false, reason: `Redis at ${REDIS_HOST}:${REDIS_PORT} answered ${JSON.stringify(text.slice(0, 80))}` });
      const v = /redis_version:(\S+)/.exec(text);
      if (v) done({ ok: true, version: v[1]! });
    });
  });
}

export interface BullOptions {
  workers: number;
  workerConcurrency: number;
}

const connection = { host: REDIS_HOST, port: REDIS_PORT, maxRetriesPerRequest: null };

/** One BullMQ queue for the run, emptied (obliterated) before each measure and at the end. */
export class Bull {
  readonly target: RedisTarget;
  /** Add → processor start, microseconds (same clock as the fabric's), for jobs named `lat-…`. */
  readonly latencyUs: number[] = [];
  /** processedOn − timestamp, milliseconds (BullMQ's own timestamps), for jobs named `lat-…`. */
  readonly serverLatencyMs: number[] = [];
  completed = 0;
  private readonly queue: Queue;
  private workers: Worker[] = [];

  constructor(private readonly options: BullOptions) {
    const name = `fabric-bench-${process.pid}`;
    this.target = { host: REDIS_HOST, port: REDIS_PORT, queue: name };
    this.queue = new Queue(name, { connection });
  }

  async reset(): Promise<void> {
    await this.queue.obliterate({ force: true });
  }

  async startWorkers(): Promise<void> {
    const processor = async (job: Job<{ sent_us: number }>) => {
      if (job.name.startsWith('lat-')) {
        this.latencyUs.push(nowUs() - job.data.sent_us);
        if (job.processedOn) this.serverLatencyMs.push(job.processedOn - job.timestamp);
      }
      return null;
    };
    for (let i = 0; i < this.options.workers; i++) {
      const w = new Worker(this.target.queue, processor, { connection, concurrency: this.options.workerConcurrency });
      w.on('completed', () => void this.completed++);
      w.on('error', () => {});
      await w.waitUntilReady();
      this.workers.push(w);
    }
  }

  async stopWorkers(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.close()));
    this.workers = [];
  }

  async close(): Promise<void> {
    await this.stopWorkers().catch(() => {});
    await this.reset().catch(() => {});
    await this.queue.close();
  }
}
