/** The fabric under test: a fresh database, the real HTTP app on a port, in-process workers. */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { createTokenVerifier, mintToken, type TokenOptions } from '../../src/auth/index.js';
import { loadConfig, type FabricConfig } from '../../src/config/index.js';
import { migrate, openPglite, openPostgres, type Db } from '../../src/db/index.js';
import { buildApp, type App } from '../../src/http/index.js';
import type { Notifier } from '../../src/notify/index.js';
import { AgentScheduler, type Task } from '../../src/queue/index.js';
import { tasksTotal } from '../../src/telemetry/index.js';
import { ensureDefaultTenant } from '../../src/tenancy/index.js';
import { Worker, type Executor } from '../../src/worker/index.js';
import type { HttpTarget } from './load.js';
import { adminQuery, dbUrl, PG_ADMIN_URL } from './db.js';
import { nowUs } from './stats.js';

export type Engine = 'pglite' | 'postgres';

const SECRET = 'bench-secret-that-is-long-enough-for-hs256-0123456789';
const TOKEN_OPTIONS: TokenOptions = { secret: SECRET, issuer: 'agent-fabric', audience: 'agent-fabric' };

export { PG_ADMIN_URL };

/** Whether PostgreSQL answers at PG_ADMIN_URL; the reason when not. Also its version. */
export async function probePostgres(): Promise<{ ok: true; version: string } | { ok: false; reason: string }> {
  const client = new pg.Client({ connectionString: PG_ADMIN_URL, connectionTimeoutMillis: 3000 });
  try {
    await client.connect();
    const r = await client.query<{ v: string; s: string }>(`SELECT current_setting('server_version') AS v, current_setting('synchronous_commit') AS s`);
    return { ok: true, version: `${r.rows[0]!.v} (server synchronous_commit=${r.rows[0]!.s})` };
  } catch (err) {
    return { ok: false, reason: `no PostgreSQL at ${redact(PG_ADMIN_URL)}: ${(err as Error).message}` };
  } finally {
    await client.end().catch(() => {});
  }
}

/** Prints an engine's heading; false (after saying why) when PostgreSQL was asked for but does not answer. */
export function engineHeading(engine: string, postgres: Awaited<ReturnType<typeof probePostgres>> | undefined): boolean {
  console.log('');
  console.log(`## ${engine === 'pglite' ? 'PGlite (embedded, in memory)' : 'PostgreSQL'}`);
  console.log('');
  if (engine === 'postgres' && postgres && !postgres.ok) {
    console.log(`skipped: ${postgres.reason}`);
    return false;
  }
  return true;
}


function redact(url: string): string {
  const u = new URL(url);
  if (u.password) u.password = '***';
  return u.toString();
}

async function waitForNoSessions(name: string, timeoutMs = 3000): Promise<void> {
  const client = new pg.Client({ connectionString: PG_ADMIN_URL, connectionTimeoutMillis: 3000 });
  await client.connect();
  try {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const r = await client.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1', [name]);
      if (r.rows[0]!.n === 0) return;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  } finally {
    await client.end();
  }
}

export interface FabricOptions {
  agents: number;
  agentConcurrency: number;
  workers: number;
  workerConcurrency: number;
}

const notifier: Notifier = { send: async () => {} };

/**
 * One engine's fabric. Tasks of a measure share a `type`; the no-op executor records, for
 * latency measures, how long after the client sent it each task's handler started.
 */
export class Fabric {
  readonly config: FabricConfig;
  target!: HttpTarget;
  /** Client send → handler start, microseconds, of tasks whose type starts with `lat-`. */
  readonly latencyUs: number[] = [];
  private db!: Db;
  private app!: App;
  private dbName: string | undefined;
  private workers: Worker[] = [];
  private readonly executor: Executor = {
    run: async (task: Task) => {
      if (task.type.startsWith('lat-')) this.latencyUs.push(nowUs() - Number(task.payload.sent_us));
      return null;
    },
  };

  constructor(
    readonly engine: Engine,
    private readonly options: FabricOptions,
  ) {
    this.config = loadConfig({
      FABRIC_JWT_SECRET: SECRET,
      FABRIC_LOG_LEVEL: 'warn',
      ...(process.env.FABRIC_DB_POOL_SIZE ? { FABRIC_DB_POOL_SIZE: process.env.FABRIC_DB_POOL_SIZE } : {}),
    });
  }

  /** Fresh database, migrations, default tenant, the API on 127.0.0.1:0, agents provisioned over HTTP. */
  async start(): Promise<void> {
    if (this.engine === 'pglite') {
      this.db = await openPglite();
    } else {
      this.dbName = `bench_queue_${process.pid}_${randomBytes(3).toString('hex')}`;
      await adminQuery(`CREATE DATABASE ${this.dbName}`);
      // An experiment knob, off by default: how much of the cost is the commit flush.
      const sync = process.env.BENCH_PG_SYNCHRONOUS_COMMIT;
      if (sync) {
        if (!/^(on|off|local|remote_write|remote_apply)$/.test(sync)) throw new Error(`BENCH_PG_SYNCHRONOUS_COMMIT: ${sync}?`);
        await adminQuery(`ALTER DATABASE ${this.dbName} SET synchronous_commit = ${sync}`);
      }
      this.db = await openPostgres({
        url: dbUrl(this.dbName),
        poolSize: this.config.dbPoolSize,
        connectTimeoutMs: this.config.dbConnectTimeoutMs,
        statementTimeoutMs: this.config.dbStatementTimeoutMs,
      });
    }
    await migrate(this.db);
    await ensureDefaultTenant(this.db);
    this.app = await buildApp({
      db: this.db,
      config: this.config,
      verifyToken: createTokenVerifier(TOKEN_OPTIONS),
      scheduler: new AgentScheduler(this.db, { leaseSeconds: this.config.taskLeaseSeconds }),
    });
    await this.app.listen({ port: 0, host: '127.0.0.1' });
    const address = this.app.server.address();
    if (!address || typeof address !== 'object') throw new Error('the app has no TCP address');
    const token = await mintToken(TOKEN_OPTIONS, { sub: 'bench', role: 'operator', tenant: 'default', ttl: '2h' });
    const base = `http://127.0.0.1:${address.port}`;
    const agents: string[] = [];
    for (let i = 0; i < this.options.agents; i++) {
      const res = await fetch(`${base}/api/agents/provision`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({
          name: `bench-${i}`,
          model: 'none',
          isolation: { level: 'none' },
          max_concurrency: this.options.agentConcurrency,
          max_queue_depth: 100_000,
        }),
      });
      const body = (await res.json()) as { agent?: { id: string } };
      if (res.status !== 201 || !body.agent) throw new Error(`provisioning failed: ${res.status} ${JSON.stringify(body)}`);
      agents.push(body.agent.id);
    }
    this.target = { host: '127.0.0.1', port: address.port, token, agents };
  }

  async startWorkers(): Promise<void> {
    for (let i = 0; i < this.options.workers; i++) {
      const w = new Worker(this.db, { concurrency: this.options.workerConcurrency, executor: this.executor, notifier, queue: { leaseSeconds: this.config.taskLeaseSeconds } });
      await w.start();
      this.workers.push(w);
    }
  }

  async stopWorkers(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.stop(0)));
    this.workers = [];
  }

  /** Attempts recorded as completed by this process's workers (committed), from the worker's own counter. */
  async completed(): Promise<number> {
    const m = await tasksTotal.get();
    return m.values.filter((v) => v.labels.status === 'completed').reduce((n, v) => n + v.value, 0);
  }

  /** Drops tasks nobody ran (the submit measures run with workers stopped). */
  async dropQueued(): Promise<void> {
    await this.db.query(`DELETE FROM tasks WHERE status = 'queued'`);
  }

  async count(type: string, status: string): Promise<number> {
    const r = await this.db.query<{ n: number }>('SELECT count(*)::int AS n FROM tasks WHERE type = $1 AND status = $2', [type, status]);
    return r.rows[0]!.n;
  }

  /** started_at − created_at of a measure's tasks, milliseconds (server timestamps, transaction start times). */
  async serverLatencyMs(type: string): Promise<number[]> {
    const r = await this.db.query<{ ms: number }>(
      'SELECT (extract(epoch FROM started_at - created_at) * 1000)::float8 AS ms FROM tasks WHERE type = $1 AND started_at IS NOT NULL',
      [type],
    );
    return r.rows.map((row) => row.ms);
  }

  query<R>(sql: string, params?: unknown[]) {
    return this.db.query<R>(sql, params);
  }

  async close(): Promise<void> {
    await this.stopWorkers().catch(() => {});
    await this.app?.close().catch(() => {});
    await this.db?.close().catch(() => {});
    if (this.dbName) {
      // pg's pool.end() resolves before its connections have closed: let them go first.
      await waitForNoSessions(this.dbName);
      await adminQuery(`DROP DATABASE IF EXISTS ${this.dbName} WITH (FORCE)`);
    }
  }
}
