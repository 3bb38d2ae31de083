/**
 * The load generator, run in a worker thread so that producing load does not steal the event
 * loop the fabric's server and workers run on (a real client is another process). It drives
 * either the fabric's HTTP API or BullMQ's Queue, on request from the main thread.
 */
import http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { parentPort } from 'node:worker_threads';
import { Queue } from 'bullmq';
import { nowUs } from './stats.js';

export interface HttpTarget {
  host: string;
  port: number;
  token: string;
  agents: string[];
}

export interface RedisTarget {
  host: string;
  port: number;
  queue: string;
}

/** What the main thread asks for. `type` tags the tasks/jobs of one measure. */
export type LoadCommand =
  | { kind: 'http-single'; target: HttpTarget; type: string; n: number; concurrency: number }
  | { kind: 'http-batch'; target: HttpTarget; type: string; n: number; batch: number; concurrency: number }
  | { kind: 'http-rate'; target: HttpTarget; type: string; perSecond: number; durationMs: number }
  | { kind: 'bull-single'; target: RedisTarget; type: string; n: number; concurrency: number }
  | { kind: 'bull-batch'; target: RedisTarget; type: string; n: number; batch: number; concurrency: number }
  | { kind: 'bull-rate'; target: RedisTarget; type: string; perSecond: number; durationMs: number }
  | { kind: 'close' };

export interface LoadResult {
  /** Wall time from the first send to the last answer. */
  ms: number;
  /** Tasks/jobs accepted. */
  ok: number;
  /** Refused sends by HTTP status (or `error`). */
  errors: Record<string, number>;
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
const queues = new Map<string, Queue>();

function post(target: HttpTarget, path: string, body: unknown): Promise<{ status: number; text: string }> {
  const data = Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: target.host,
        port: target.port,
        path,
        method: 'POST',
        agent,
        headers: { authorization: `Bearer ${target.token}`, 'content-type': 'application/json', 'content-length': data.length },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString() }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(data);
  });
}

function queueFor(target: RedisTarget): Queue {
  let q = queues.get(target.queue);
  if (!q) {
    q = new Queue(target.queue, { connection: { host: target.host, port: target.port, maxRetriesPerRequest: null } });
    queues.set(target.queue, q);
  }
  return q;
}

function taskBody(target: HttpTarget, type: string, i: number) {
  return { agent_id: target.agents[i % target.agents.length]!, type, payload: { i, sent_us: nowUs() } };
}

/** Runs `send(i)` for i in [0, n) with at most `concurrency` in flight; counts what it accepted. */
async function closedLoop(n: number, concurrency: number, send: (i: number) => Promise<number | string>, per = 1): Promise<LoadResult> {
  const errors: Record<string, number> = {};
  let ok = 0;
  let next = 0;
  const start = performance.now();
  const lane = async () => {
    for (;;) {
      const i = next;
      next += per;
      if (i >= n) return;
      const outcome = await send(i).catch((err: unknown) => `error: ${(err as Error).message}`);
      if (typeof outcome === 'number') ok += outcome;
      else errors[outcome] = (errors[outcome] ?? 0) + 1;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, lane));
  return { ms: performance.now() - start, ok, errors };
}

/** Sends one item every 1000/perSecond ms (open loop: it never waits for answers) for durationMs. */
async function openLoop(perSecond: number, durationMs: number, send: (i: number) => Promise<number | string>): Promise<LoadResult> {
  const errors: Record<string, number> = {};
  let ok = 0;
  const interval = 1000 / perSecond;
  const total = Math.round((durationMs / 1000) * perSecond);
  const inflight = new Set<Promise<void>>();
  const start = performance.now();
  for (let i = 0; i < total; i++) {
    const wait = start + i * interval - performance.now();
    if (wait > 0.5) await sleep(wait);
    const p: Promise<void> = send(i)
      .catch((err: unknown) => `error: ${(err as Error).message}`)
      .then((outcome) => {
        if (typeof outcome === 'number') ok += outcome;
        else errors[outcome] = (errors[outcome] ?? 0) + 1;
        inflight.delete(p);
      });
    inflight.add(p);
  }
  await Promise.all(inflight);
  return { ms: performance.now() - start, ok, errors };
}

async function run(cmd: LoadCommand): Promise<LoadResult | null> {
  switch (cmd.kind) {
    case 'http-single':
    case 'http-rate': {
      const { target, type } = cmd;
      const send = async (i: number) => {
        const r = await post(target, '/api/tasks', taskBody(target, type, i));
        return r.status === 201 ? 1 : `HTTP ${r.status} ${r.text.slice(0, 120)}`;
      };
      return cmd.kind === 'http-single' ? closedLoop(cmd.n, cmd.concurrency, send) : openLoop(cmd.perSecond, cmd.durationMs, send);
    }
    case 'http-batch': {
      const { target, type, n, batch } = cmd;
      return closedLoop(
        n,
        cmd.concurrency,
        async (i) => {
          const tasks = Array.from({ length: Math.min(batch, n - i) }, (_, k) => taskBody(target, type, i + k));
          const r = await post(target, '/api/tasks/batch', { tasks });
          return r.status === 201 ? tasks.length : `HTTP ${r.status} ${r.text.slice(0, 120)}`;
        },
        batch,
      );
    }
    case 'bull-single':
    case 'bull-rate': {
      const q = queueFor(cmd.target);
      const send = async (i: number) => {
        await q.add(cmd.type, { i, sent_us: nowUs() });
        return 1;
      };
      return cmd.kind === 'bull-single' ? closedLoop(cmd.n, cmd.concurrency, send) : openLoop(cmd.perSecond, cmd.durationMs, send);
    }
    case 'bull-batch': {
      const q = queueFor(cmd.target);
      const { n, batch, type } = cmd;
      return closedLoop(
        n,
        cmd.concurrency,
        async (i) => {
          const jobs = Array.from({ length: Math.min(batch, n - i) }, (_, k) => ({ name: type, data: { i: i + k, sent_us: nowUs() } }));
          await q.addBulk(jobs);
          return jobs.length;
        },
        batch,
      );
    }
    case 'close':
      agent.destroy();
      await Promise.all([...queues.values()].map((q) => q.close()));
      queues.clear();
      return null;
  }
}

parentPort!.on('message', (msg: { id: number; cmd: LoadCommand }) => {
  run(msg.cmd).then(
    (result) => parentPort!.postMessage({ id: msg.id, result }),
    (err: unknown) => parentPort!.postMessage({ id: msg.id, error: String((err as Error).stack ?? err) }),
  );
});
