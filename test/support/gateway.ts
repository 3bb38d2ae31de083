import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import { Writable } from 'node:stream';
import { mintToken } from '../../src/auth/index.js';
import { budgetSubmitHook } from '../../src/budget/index.js';
import { loadConfig, type GatewayConfig } from '../../src/config/index.js';
import { fakeUpstreamConfig, startFakeUpstream, type FakeUpstream } from '../../src/gateway/index.js';
import { createLogger, setLogger } from '../../src/telemetry/index.js';
import { startTestApp, tokenOptions, type TestApp } from './app.js';
import { PROVIDER_KEY } from './planted-secrets.js';
import { provisionAgent, submit } from './queue.js';

export { PROVIDER_KEY };

/** Prices the tests charge (micro-USD per 1M tokens). */
export const PRICE = { inputMicrosPer1M: 150_000, outputMicrosPer1M: 600_000 };

/** Every log line written while the app runs (also appended to the run's log file, which the runner greps for planted secrets). */
export function captureLogs(): string[] {
  const lines: string[] = [];
  const file = process.env.FABRIC_LOG_FILE;
  const write = (c: unknown, _e: unknown, cb: () => void) => {
    lines.push(String(c));
    if (file) fs.appendFileSync(file, String(c));
    cb();
  };
  setLogger(createLogger({ level: 'debug', destination: new Writable({ write }) }));
  return lines;
}

export interface GatewayApp extends TestApp {
  fake: FakeUpstream;
  base: string;
  logs: string[];
}

/** The API listening on a port, with the budget hook and the gateway in front of a fresh fake upstream. */
export async function startGatewayApp(gateway: Partial<GatewayConfig> = {}): Promise<GatewayApp> {
  const logs = captureLogs();
  const fake = await startFakeUpstream({ apiKey: PROVIDER_KEY });
  const up = fakeUpstreamConfig(fake.url, PROVIDER_KEY);
  up.models['gpt-4o-mini'] = PRICE;
  const base = loadConfig({}).gateway;
  const t = await startTestApp({
    // leaseIdleMs 0: a credit lease goes back in the statement that settles its last call, so
    // once a call is metered the quota shows nothing reserved (test/gateway-leases.test.ts holds them)
    config: { gateway: { ...base, upstreams: [up], maxRetries: 2, retryBaseMs: 10, attemptTimeoutMs: 2000, cancelPollMs: 100, leaseIdleMs: 0, ...gateway } },
    queue: { onSubmit: [budgetSubmitHook({ budgetsCacheMs: 0 })] },
  });
  const url = await t.app.listen({ port: 0, host: '127.0.0.1' });
  const close = t.close;
  return Object.assign(t, {
    fake,
    base: url,
    logs,
    async close() {
      await close();
      await fake.close();
    },
  });
}

/** A task of `agentId` that is running in a sandbox session, as the worker would leave it, and the session's token. */
export async function runningSession(t: TestApp, agentId: string, extra: Record<string, unknown> = {}) {
  const res = await submit(t, { agent_id: agentId, type: 'chat', ...extra });
  if (res.statusCode !== 201) throw new Error(`submit: ${res.body}`);
  const taskId: string = res.json().task.id;
  const sessionId = randomUUID();
  await t.db.query(
    `UPDATE tasks SET status = 'running', attempts = 1, lease_owner = 'test-worker', lease_expires_at = now() + interval '1 hour', started_at = now(), ready_at = NULL, sort_key = NULL, revision = revision + 1 WHERE id = $1`,
    [taskId],
  );
  await t.db.query(`INSERT INTO agent_sessions (id, tenant_id, agent_id, task_id, attempt, worker_id, isolation, status) VALUES ($1, 'default', $2, $3, 1, 'test-worker', 'container', 'running')`, [sessionId, agentId, taskId]);
  const token = await mintToken(tokenOptions, { sub: agentId, role: 'agent', tenant: 'default', ttl: 600, extra: { sid: sessionId } });
  return { taskId, sessionId, token };
}

/** An agent allowed gpt-4o-mini and the embeddings model, with an optional quota. */
export const gatewayAgent = (t: TestApp, body: Record<string, unknown> = {}) =>
  provisionAgent(t, { model: 'gpt-4o-mini', models: ['text-embedding-3-small'], max_concurrency: 50, max_queue_depth: 1000, ...body });

/** Waits until `n` model calls of the task have been metered (the gateway meters right after it answers). */
export async function metered(t: TestApp, taskId: string, n: number, timeoutMs = 5000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const r = await t.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM system_events WHERE event_type = 'model.call' AND subject_id = $1`, [taskId]);
    if (r.rows[0]!.n >= n) return;
    if (Date.now() > until) throw new Error(`${r.rows[0]!.n} of ${n} model calls of task ${taskId} metered`);
    await new Promise((res) => setTimeout(res, 20));
  }
}
