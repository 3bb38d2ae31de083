/**
 * bench/overhead — what telemetry costs: end-to-end task throughput (HTTP batch submit →
 * claim → complete, in-process no-op handler) with tracing and info logs ON against the same
 * fabric with them OFF, on PGlite and PostgreSQL. ON: the OpenTelemetry SDK with a batch span
 * processor exporting OTLP/HTTP to a local sink this bench starts (it accepts and discards),
 * every trace sampled, logs at info appended to a file. OFF: no SDK (the API's no-op tracer),
 * logs at warn. Metrics are on in both (they cannot be turned off). Two fabrics per engine, one
 * built with tracing on (its request hooks registered) and one without; runs alternate
 * ON/OFF so drift in the machine's load hits both; the table shows medians. Beside tasks/s,
 * the CPU time this process spent per task in the same runs: on a shared machine wall-clock
 * throughput swings with other programs' load, CPU per task much less. Target: < 5 % cost.
 *
 *   npm run bench:overhead
 *   env: BENCH_PG_URL (maintenance database URL), BENCH_ENGINES=pglite,postgres (none: the isolated figure only), BENCH_RUNS=5,
 *        BENCH_N_PG=3000, BENCH_N_PGLITE=1000
 */
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadConfig, type TracingConfig } from '../src/config/index.js';
import { activeTraceparent, createLogger, endSpan, setLogger, SpanKind, startLinkedSpan, startServerSpan, startTracing, stopTracing, withActiveSpan } from '../src/telemetry/index.js';
import { engineHeading, Fabric, probePostgres, type Engine } from './lib/fabric.js';
import { Loader } from './lib/loader.js';
import { NoiseMeter } from './lib/noise.js';
import { fmt, median } from './lib/stats.js';
import { intEnv } from './lib/env.js';

const RUNS = intEnv('BENCH_RUNS', 5);
const N: Record<Engine, number> = { postgres: intEnv('BENCH_N_PG', 3000), pglite: intEnv('BENCH_N_PGLITE', 1000) };
const BATCH = 500;
const BATCH_CONCURRENCY = 4;
const OPTIONS = { agents: 20, agentConcurrency: 16, workers: 2, workerConcurrency: 16 };
const ENGINES = (process.env.BENCH_ENGINES ?? 'pglite,postgres').split(',').map((s) => s.trim()).filter((s) => s && s !== 'none') as Engine[];
for (const e of ENGINES) if (e !== 'pglite' && e !== 'postgres') throw new Error(`BENCH_ENGINES: unknown engine ${e}`);

const quiet = createLogger({ level: 'warn' });
const logFile = path.join(os.tmpdir(), `agent-fabric-bench-overhead-${process.pid}.log`);
const chatty = createLogger({ level: 'info', file: logFile });
setLogger(quiet);

/** An OTLP/HTTP endpoint that reads and discards what it is sent, counting it. */
async function startSink(): Promise<{ url: string; requests: number; bytes: number; close(): Promise<void> }> {
  const stats = { requests: 0, bytes: 0 };
  const server = http.createServer((req, res) => {
    req.on('data', (c: Buffer) => (stats.bytes += c.length));
    req.on('end', () => {
      stats.requests++;
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return Object.assign(stats, { url: `http://127.0.0.1:${port}`, close: () => new Promise<void>((resolve) => server.close(() => resolve())) });
}

type Mode = 'on' | 'off';

async function setMode(mode: Mode, tracing: TracingConfig): Promise<void> {
  if (mode === 'on') {
    await startTracing(tracing);
    setLogger(chatty);
  } else {
    await stopTracing(); // flushes the spans still batched before the next run starts
    setLogger(quiet);
  }
}

/** One run: tasks/s end to end, and this process's CPU time per task (µs; API, workers, SDK, exporter — and PGlite). */
interface Sample {
  rate: number;
  cpuUs: number;
}

/** N tasks batch-submitted over HTTP while the workers run, until all completed. */
async function e2e(f: Fabric, load: Loader, type: string): Promise<Sample> {
  const n = N[f.engine];
  await f.startWorkers();
  const before = await f.completed();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const submitted = load.run({ kind: 'http-batch', target: f.target, type, n, batch: BATCH, concurrency: BATCH_CONCURRENCY });
  const deadline = Date.now() + 180_000;
  while ((await f.completed()) - before < n) {
    if (Date.now() > deadline) throw new Error(`${type}: timed out`);
    await sleep(2);
  }
  const ms = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  await submitted;
  await f.stopWorkers();
  const done = await f.count(type, 'completed');
  if (done !== n) throw new Error(`${type}: ${done} of ${n} tasks completed`);
  return { rate: (n / ms) * 1000, cpuUs: (cpu.user + cpu.system) / n };
}

async function engineRun(engine: Engine, load: Loader, tracing: TracingConfig, sink: { requests: number; bytes: number }): Promise<void> {
  // the ON fabric is built while tracing runs, so its request-span hooks are registered
  await startTracing(tracing);
  const on = new Fabric(engine, OPTIONS);
  const off = new Fabric(engine, OPTIONS);
  try {
    await on.start();
    await stopTracing();
    await off.start();
    const samples: Record<Mode, Sample[]> = { on: [], off: [] };
    const noise = new NoiseMeter();
    noise.start();
    const sent = { requests: sink.requests, bytes: sink.bytes };
    for (let run = 1; run <= RUNS; run++) {
      for (const mode of (run % 2 ? ['off', 'on'] : ['on', 'off']) as Mode[]) {
        await setMode(mode, tracing);
        samples[mode].push(await e2e(mode === 'on' ? on : off, load, `e2e-${mode}-${run}`));
      }
    }
    await setMode('off', tracing);
    const other = noise.stop();
    const rate = { on: median(samples.on.map((x) => x.rate)), off: median(samples.off.map((x) => x.rate)) };
    const cpu = { on: median(samples.on.map((x) => x.cpuUs)), off: median(samples.off.map((x) => x.cpuUs)) };
    const rateCost = 1 - rate.on / rate.off;
    const cpuCost = cpu.on / cpu.off - 1;
    console.log('| measure | telemetry + tracing ON | OFF (peer) | ratio (on / off) | cost |');
    console.log('| --- | ---: | ---: | ---: | ---: |');
    const what = `${N[engine]} tasks batch-submitted × ${BATCH} → claimed → completed, no-op handler, ${OPTIONS.workers} workers × ${OPTIONS.workerConcurrency}`;
    console.log(`| end to end: ${what} (tasks/s, higher is better) | ${fmt(rate.on)} | ${fmt(rate.off)} | ${fmt(rate.on / rate.off, 3)}× | ${fmt(rateCost * 100, 1)} % |`);
    console.log(`| CPU of the fabric's process per task, same runs (µs, lower is better${engine === 'pglite' ? '; includes the embedded database' : '; the PostgreSQL server\'s CPU is not counted'}) | ${fmt(cpu.on)} | ${fmt(cpu.off)} | ${fmt(cpu.on / cpu.off, 3)}× | ${fmt(cpuCost * 100, 1)} % |`);
    console.log('');
    const list = (xs: Sample[], k: keyof Sample) => xs.map((x) => fmt(x[k])).join(' / ');
    console.log(`runs ON: ${list(samples.on, 'rate')} tasks/s, ${list(samples.on, 'cpuUs')} µs/task; runs OFF: ${list(samples.off, 'rate')} tasks/s, ${list(samples.off, 'cpuUs')} µs/task`);
    console.log(`target < 5 % cost: throughput ${rateCost < 0.05 ? 'met' : 'MISSED'} (${fmt(rateCost * 100, 1)} %), CPU per task ${cpuCost < 0.05 ? 'met' : 'MISSED'} (${fmt(cpuCost * 100, 1)} %); the sink received ${sink.requests - sent.requests} OTLP exports, ${fmt((sink.bytes - sent.bytes) / 1024)} KiB (${N[engine] * RUNS} tasks ON)`);
    if (other !== undefined) console.log(`other programs used ${fmt(other * 100)}% of the machine's CPU during these measures${other > 0.05 ? ' — the machine was shared: these figures are noisy' : ''}`);
  } finally {
    await stopTracing();
    await on.close();
    await off.close();
  }
}

/**
 * The tracing work of one task alone, without the database or HTTP: the submit request's span,
 * its traceparent, the attempt span linked to it, ended and batch-exported to the sink — CPU µs
 * per task, tracing on minus off (off: the same helpers returning at once). Much steadier than
 * the end-to-end figures on a shared machine; compare it with the CPU per task above.
 */
async function isolatedCost(tracing: TracingConfig): Promise<{ on: number; off: number }> {
  const K = 20_000;
  const oneTask = () => {
    const traceparent = startServerSpan('POST /api/tasks/batch', {}, { 'http.request.method': 'POST', 'http.route': '/api/tasks/batch' }, (span) => {
      const tp = activeTraceparent();
      endSpan(span);
      return tp;
    });
    const attempt = startLinkedSpan('task.attempt', SpanKind.CONSUMER, traceparent, { 'fabric.task_id': 'x', 'fabric.task.type': 'e2e', 'fabric.task.attempt': 1, 'fabric.agent_id': 'a', 'fabric.tenant_id': 'default' });
    withActiveSpan(attempt, () => activeTraceparent());
    attempt?.setAttribute('fabric.task.outcome', 'completed');
    endSpan(attempt);
  };
  const measure = async (on: boolean) => {
    if (on) await startTracing(tracing);
    const cpu0 = process.cpuUsage();
    for (let i = 0; i < K; i++) {
      oneTask();
      if (i % 500 === 0) await new Promise((r) => setImmediate(r)); // let the batch processor export
    }
    await stopTracing(); // the export of what is left counts too
    const cpu = process.cpuUsage(cpu0);
    return (cpu.user + cpu.system) / K;
  };
  const on: number[] = [];
  const off: number[] = [];
  for (let run = 0; run < 3; run++) {
    off.push(await measure(false));
    on.push(await measure(true));
  }
  return { on: median(on), off: median(off) };
}

async function main(): Promise<void> {
  const started = performance.now();
  const postgres = ENGINES.includes('postgres') ? await probePostgres() : undefined;
  const sink = await startSink();
  const tracing = loadConfig({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `${sink.url}/v1/traces`, OTEL_SERVICE_NAME: 'agent-fabric-bench' }).tracing;
  console.log(`# bench/overhead — ${new Date().toISOString()}`);
  console.log('');
  console.log(`machine: ${os.availableParallelism()} CPUs (${os.cpus()[0]?.model ?? 'unknown CPU'}); node ${process.version}; load average ${os.loadavg().map((l) => fmt(l, 2)).join(' / ')}`);
  console.log(
    `settings: ${RUNS} runs per mode, alternating (medians shown); ON = OpenTelemetry SDK, batch span processor, OTLP/HTTP to a local sink, sampler ${tracing.sampler}, logs at info to a file; OFF = no SDK, logs at warn; tasks per run: ` +
      ENGINES.map((e) => `${e} ${N[e]}`).join(', '),
  );
  const iso = await isolatedCost(tracing);
  console.log('');
  console.log(
    `tracing work per task, isolated (submit span + traceparent + linked attempt span, batch-exported to the sink; CPU, medians of 3 × 20,000): ` +
      `${fmt(iso.on, 1)} µs on, ${fmt(iso.off, 2)} µs off — ${fmt(iso.on - iso.off, 1)} µs per task`,
  );
  const load = new Loader();
  try {
    for (const engine of ENGINES) {
      if (!engineHeading(engine, postgres)) continue;
      const t0 = performance.now();
      await engineRun(engine, load, tracing, sink);
      console.log(`(${engine}: ${fmt((performance.now() - t0) / 1000, 1)} s including setup)`);
    }
  } finally {
    await load.close();
    await sink.close();
    fs.rmSync(logFile, { force: true });
  }
  console.log('');
  console.log(`total runtime ${fmt((performance.now() - started) / 1000, 1)} s`);
}

await main();
