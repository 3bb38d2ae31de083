/**
 * bench/queue — the fabric's task queue against BullMQ, measured in the same run on the same
 * machine. For PGlite and PostgreSQL: tasks/s submitted via HTTP (single and batch),
 * end-to-end tasks/s (submit → claim → complete, no-op handler), and submit→start latency
 * p50/p99 at a steady 200 tasks/s. Each measure runs BENCH_RUNS times (default 3); the table
 * shows medians. See bench/README.md.
 *
 *   npm run bench:queue
 *   env: BENCH_PG_URL (maintenance database URL), BENCH_ENGINES=pglite,postgres, BENCH_RUNS=3,
 *        BENCH_N_PG=3000, BENCH_N_PGLITE=400, BENCH_RATE=200, BENCH_LATENCY_SECONDS=8 (PostgreSQL),
 *        BENCH_LATENCY_SECONDS_PGLITE=3, FABRIC_DB_POOL_SIZE (default 10),
 *        BENCH_PG_SYNCHRONOUS_COMMIT (experiment: set on the bench database only)
 */
import fs from 'node:fs';
import os from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { createLogger, setLogger } from '../src/telemetry/index.js';
import { Bull, probeRedis } from './lib/bull.js';
import { engineHeading, Fabric, probePostgres, type Engine } from './lib/fabric.js';
import { Loader } from './lib/loader.js';
import { NoiseMeter } from './lib/noise.js';
import { fmt, median, percentile } from './lib/stats.js';
import { intEnv } from './lib/env.js';

setLogger(createLogger({ level: 'warn' }));

const RUNS = intEnv('BENCH_RUNS', 3);
const RATE = intEnv('BENCH_RATE', 200); // tasks/s offered in the latency measure
const CONCURRENCY = 32; // single submits in flight (keep-alive connections)
const BATCH = 500; // tasks per batch submit
const BATCH_CONCURRENCY = 4; // batch submits in flight
// Sized so the whole bench stays under ~4 minutes on 2 cores: PGlite is far slower.
const N: Record<Engine, number> = { postgres: intEnv('BENCH_N_PG', 3000), pglite: intEnv('BENCH_N_PGLITE', 400) };
const LATENCY_MS: Record<Engine, number> = {
  postgres: intEnv('BENCH_LATENCY_SECONDS', 8) * 1000,
  pglite: intEnv('BENCH_LATENCY_SECONDS_PGLITE', 3) * 1000,
};
const WORKERS = 2;
const WORKER_CONCURRENCY = 16;
const AGENTS = 20;
const AGENT_CONCURRENCY = 16;
const ENGINES = (process.env.BENCH_ENGINES ?? 'pglite,postgres').split(',').map((s) => s.trim()) as Engine[];
for (const e of ENGINES) if (e !== 'pglite' && e !== 'postgres') throw new Error(`BENCH_ENGINES: unknown engine ${e}`);

/** One run's figures. */
interface Sample {
  submit: number;
  batch: number;
  e2e: number;
  p50: number;
  p99: number;
  serverP50: number;
  serverP99: number;
  /** Submits accepted per second during the latency window (offered: RATE). */
  achieved: number;
  /** Slowest submit→start in the latency window, ms. */
  max: number;
  /** Event-loop utilisation of the main thread (the fabric's server and workers) per measure, fabric only. */
  elu?: { submit: number; e2e: number; latency: number };
}

const rate = (n: number, ms: number) => (n / ms) * 1000;

async function until(what: string, done: () => boolean | Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await done())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(2);
  }
}

function latencyFigures(clientUs: number[], serverMs: number[], sent: { ok: number; ms: number }) {
  const ms = clientUs.map((us) => us / 1000);
  return {
    p50: percentile(ms, 50),
    p99: percentile(ms, 99),
    max: percentile(ms, 100),
    serverP50: percentile(serverMs, 50),
    serverP99: percentile(serverMs, 99),
    achieved: rate(sent.ok, sent.ms),
  };
}

async function fabricRun(f: Fabric, load: Loader, run: number): Promise<Sample> {
  const n = N[f.engine];
  // 1. submit throughput, workers stopped
  let elu = performance.eventLoopUtilization();
  const single = await load.run({ kind: 'http-single', target: f.target, type: `sub-${run}`, n, concurrency: CONCURRENCY });
  const eluSubmit = performance.eventLoopUtilization(elu).utilization;
  await f.dropQueued();
  const batch = await load.run({ kind: 'http-batch', target: f.target, type: `bat-${run}`, n, batch: BATCH, concurrency: BATCH_CONCURRENCY });
  await f.dropQueued();

  // 2. end to end: batch submits while the workers run; until every task is completed
  await f.startWorkers();
  const before = await f.completed();
  elu = performance.eventLoopUtilization();
  const t0 = performance.now();
  const submitted = load.run({ kind: 'http-batch', target: f.target, type: `e2e-${run}`, n, batch: BATCH, concurrency: BATCH_CONCURRENCY });
  await until('end-to-end completions', async () => (await f.completed()) - before >= n, 120_000);
  const e2eMs = performance.now() - t0;
  const eluE2e = performance.eventLoopUtilization(elu).utilization;
  await submitted;
  await f.stopWorkers();
  const done = await f.count(`e2e-${run}`, 'completed');
  if (done !== n) throw new Error(`end to end: ${done} of ${n} tasks completed`);

  // 3. latency at a steady RATE tasks/s, one HTTP submit every 1000/RATE ms
  await f.startWorkers();
  f.latencyUs.length = 0;
  const type = `lat-${run}`;
  elu = performance.eventLoopUtilization();
  const sent = await load.run({ kind: 'http-rate', target: f.target, type, perSecond: RATE, durationMs: LATENCY_MS[f.engine] });
  const eluLatency = performance.eventLoopUtilization(elu).utilization;
  await until('latency tasks to start', () => f.latencyUs.length >= sent.ok, 60_000);
  await f.stopWorkers();
  const lat = latencyFigures(f.latencyUs, await f.serverLatencyMs(type), sent);
  return { submit: rate(single.ok, single.ms), batch: rate(batch.ok, batch.ms), e2e: rate(n, e2eMs), ...lat, elu: { submit: eluSubmit, e2e: eluE2e, latency: eluLatency } };
}

async function bullRun(b: Bull, load: Loader, engine: Engine, run: number): Promise<Sample> {
  const n = N[engine];
  await b.reset();
  const single = await load.run({ kind: 'bull-single', target: b.target, type: `sub-${run}`, n, concurrency: CONCURRENCY });
  await b.reset();
  const batch = await load.run({ kind: 'bull-batch', target: b.target, type: `bat-${run}`, n, batch: BATCH, concurrency: BATCH_CONCURRENCY });
  await b.reset();

  await b.startWorkers();
  b.completed = 0;
  const t0 = performance.now();
  const submitted = load.run({ kind: 'bull-batch', target: b.target, type: `e2e-${run}`, n, batch: BATCH, concurrency: BATCH_CONCURRENCY });
  await until('BullMQ end-to-end completions', () => b.completed >= n, 120_000);
  const e2eMs = performance.now() - t0;
  await submitted;
  await b.stopWorkers();
  await b.reset();

  await b.startWorkers();
  b.latencyUs.length = 0;
  b.serverLatencyMs.length = 0;
  const sent = await load.run({ kind: 'bull-rate', target: b.target, type: `lat-${run}`, perSecond: RATE, durationMs: LATENCY_MS[engine] });
  await until('BullMQ latency jobs to start', () => b.latencyUs.length >= sent.ok, 60_000);
  await b.stopWorkers();
  await b.reset();
  const lat = latencyFigures(b.latencyUs, b.serverLatencyMs, sent);
  return { submit: rate(single.ok, single.ms), batch: rate(batch.ok, batch.ms), e2e: rate(n, e2eMs), ...lat };
}

type Figure = Exclude<keyof Sample, 'elu'>;

interface Row {
  label: string;
  key: Figure;
  unit: 'tasks/s' | 'ms';
}

function table(engine: Engine, fabric: Sample[], bull: Sample[] | string): string {
  const n = N[engine];
  const rows: Row[] = [
    { label: `HTTP submit, single: POST /api/tasks, ${CONCURRENCY} in flight — BullMQ: Queue.add, ${CONCURRENCY} in flight, in-process (tasks/s, higher is better)`, key: 'submit', unit: 'tasks/s' },
    { label: `HTTP submit, batch: POST /api/tasks/batch × ${BATCH}, ${BATCH_CONCURRENCY} in flight — BullMQ: Queue.addBulk × ${BATCH} (tasks/s, higher is better)`, key: 'batch', unit: 'tasks/s' },
    { label: `end to end: ${n} tasks batch-submitted × ${BATCH} → claimed → completed, no-op handler, ${WORKERS} workers × ${WORKER_CONCURRENCY} (tasks/s, higher is better)`, key: 'e2e', unit: 'tasks/s' },
    { label: `submit→start latency p50 at ${RATE} tasks/s for ${LATENCY_MS[engine] / 1000} s: client send → handler start (ms, lower is better)`, key: 'p50', unit: 'ms' },
    { label: `submit→start latency p99 at ${RATE} tasks/s for ${LATENCY_MS[engine] / 1000} s: client send → handler start (ms, lower is better)`, key: 'p99', unit: 'ms' },
    { label: `server-side p50: started_at − created_at — BullMQ: processedOn − timestamp (ms, lower is better)`, key: 'serverP50', unit: 'ms' },
    { label: `server-side p99: started_at − created_at — BullMQ: processedOn − timestamp (ms, lower is better)`, key: 'serverP99', unit: 'ms' },
  ];
  const lines = ['| measure | agent-fabric | BullMQ | ratio (fabric / BullMQ) |', '| --- | ---: | ---: | ---: |'];
  for (const r of rows) {
    const digits = r.unit === 'ms' ? 2 : 0;
    const a = median(fabric.map((s) => s[r.key]));
    const b = typeof bull === 'string' ? Number.NaN : median(bull.map((s) => s[r.key]));
    const ratio = typeof bull === 'string' ? 'skipped' : Number.isFinite(a / b) ? `${fmt(a / b, 2)}×` : '—';
    lines.push(`| ${r.label} | ${fmt(a, digits)} | ${typeof bull === 'string' ? 'skipped' : fmt(b, digits)} | ${ratio} |`);
  }
  const runs = (xs: Sample[], k: Figure, d: number) => xs.map((s) => fmt(s[k], d)).join(' / ');
  lines.push('');
  lines.push(`runs (fabric): submit ${runs(fabric, 'submit', 0)}; batch ${runs(fabric, 'batch', 0)}; e2e ${runs(fabric, 'e2e', 0)}; p50 ${runs(fabric, 'p50', 2)}; p99 ${runs(fabric, 'p99', 2)} ms`);
  if (typeof bull !== 'string')
    lines.push(`runs (BullMQ): submit ${runs(bull, 'submit', 0)}; batch ${runs(bull, 'batch', 0)}; e2e ${runs(bull, 'e2e', 0)}; p50 ${runs(bull, 'p50', 2)}; p99 ${runs(bull, 'p99', 2)} ms`);
  else lines.push(`BullMQ skipped: ${bull}`);
  const elu = (k: 'submit' | 'e2e' | 'latency') => `${fmt(median(fabric.map((s) => s.elu?.[k] ?? Number.NaN)) * 100)}%`;
  lines.push(`fabric main-thread event-loop utilisation (HTTP server + workers + database client): single submits ${elu('submit')}, end to end ${elu('e2e')}, latency window ${elu('latency')}`);
  const achieved = median(fabric.map((s) => s.achieved));
  const worst = median(fabric.map((s) => s.max));
  if (achieved < RATE * 0.95 || worst > 1000)
    lines.push(
      `saturated: at ${RATE}/s offered the fabric accepted ${fmt(achieved)} submits/s and its slowest start came after ${fmt(worst)} ms (medians) — ` +
        `the queue grew during the window, so these latencies measure the backlog, not the scheduler`,
    );
  if (engine === 'postgres') {
    const submit = median(fabric.map((s) => s.submit));
    const p99 = median(fabric.map((s) => s.p99));
    const e2e = median(fabric.map((s) => s.e2e));
    const bullE2e = typeof bull === 'string' ? Number.NaN : median(bull.map((s) => s.e2e));
    const verdict = (ok: boolean) => (ok ? 'met' : 'MISSED');
    lines.push(
      `targets (PostgreSQL): HTTP submit ≥ 1,000 tasks/s: ${verdict(submit >= 1000)} (${fmt(submit)}); ` +
        `latency p99 < 10 ms: ${verdict(p99 < 10)} (${fmt(p99, 2)} ms); ` +
        `end to end ≥ BullMQ: ${Number.isNaN(bullE2e) ? 'not measured (BullMQ skipped)' : `${verdict(e2e >= bullE2e)} (${fmt(e2e)} vs ${fmt(bullE2e)})`}`,
    );
  }
  return lines.join('\n');
}

const loadavg = () => os.loadavg().map((l) => fmt(l, 2)).join(' / ');

/** Share of all CPUs busy over the next second (Linux /proc/stat), before the bench loads the machine. */
async function cpuBusy(): Promise<number | undefined> {
  const read = () => {
    const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    return { idle: f[3]! + (f[4] ?? 0), total: f.reduce((a, b) => a + b, 0) };
  };
  try {
    const a = read();
    await sleep(1000);
    const b = read();
    return 1 - (b.idle - a.idle) / (b.total - a.total);
  } catch {
    return undefined;
  }
}

function bullmqVersion(): string {
  try {
    const pkg = JSON.parse(fs.readFileSync(new URL('../node_modules/bullmq/package.json', import.meta.url), 'utf8')) as { version: string };
    return pkg.version;
  } catch {
    return 'unknown';
  }
}

async function main(): Promise<void> {
  const started = performance.now();
  const [redis, postgres] = await Promise.all([probeRedis(), ENGINES.includes('postgres') ? probePostgres() : Promise.resolve(undefined)]);
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
  console.log(`# bench/queue — ${new Date().toISOString()}`);
  console.log('');
  console.log(`machine: ${os.availableParallelism()} CPUs (${cpu}), ${fmt(os.totalmem() / 2 ** 30, 1)} GiB, ${os.type()} ${os.release()}; node ${process.version}`);
  console.log(
    `peers: BullMQ ${bullmqVersion()} on Redis ${redis.ok ? redis.version : `— skipped: ${redis.reason}`}; ` +
      `PostgreSQL ${postgres === undefined ? 'not requested' : postgres.ok ? postgres.version : `— skipped: ${postgres.reason}`}`,
  );
  console.log(
    `settings: ${RUNS} runs per measure (medians shown); ${AGENTS} agents (max_concurrency ${AGENT_CONCURRENCY}); ` +
      `${WORKERS} workers × ${WORKER_CONCURRENCY} in-process, no-op handler; tasks per throughput measure: ` +
      ENGINES.map((e) => `${e} ${N[e]}`).join(', ') +
      `; latency window at ${RATE}/s: ` +
      ENGINES.map((e) => `${e} ${LATENCY_MS[e] / 1000} s`).join(', ') +
      `; load generated from a worker thread; fabric logs at warn`,
  );
  const busy = await cpuBusy();
  console.log(
    `before the run: CPU ${busy === undefined ? 'use unknown' : `${fmt(busy * 100)}% busy over 1 s`}, load average ${loadavg()}` +
      (busy !== undefined && busy > 0.25 ? ' — something else is using the CPU: expect noisy figures' : ''),
  );

  const load = new Loader();
  const bull = redis.ok ? new Bull({ workers: WORKERS, workerConcurrency: WORKER_CONCURRENCY }) : undefined;
  try {
    for (const engine of ENGINES) {
      if (!engineHeading(engine, postgres)) continue;
      const fabric = new Fabric(engine, { agents: AGENTS, agentConcurrency: AGENT_CONCURRENCY, workers: WORKERS, workerConcurrency: WORKER_CONCURRENCY });
      const fabricSamples: Sample[] = [];
      const bullSamples: Sample[] = [];
      const t0 = performance.now();
      const noise = new NoiseMeter();
      let other: number | undefined;
      try {
        await fabric.start();
        noise.start();
        for (let run = 1; run <= RUNS; run++) {
          fabricSamples.push(await fabricRun(fabric, load, run));
          if (bull) bullSamples.push(await bullRun(bull, load, engine, run));
        }
        other = noise.stop();
      } finally {
        noise.stop();
        await fabric.close();
      }
      console.log(table(engine, fabricSamples, bull ? bullSamples : redis.ok ? 'not run' : redis.reason));
      if (other !== undefined)
        console.log(
          `other programs used ${fmt(other * 100)}% of the machine's CPU during these measures` +
            (other > 0.05 ? ' — the machine was shared: these figures are noisy, run again on a quiet machine' : ''),
        );
      console.log(`(${engine}: ${fmt((performance.now() - t0) / 1000, 1)} s including setup)`);
    }
  } finally {
    await bull?.close();
    await load.close();
  }
  console.log('');
  console.log(`total runtime ${fmt((performance.now() - started) / 1000, 1)} s; load average at end: ${loadavg()}`);
}

await main();
