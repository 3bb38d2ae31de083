import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { trackTableMetrics } from '../src/alerts/index.js';
import { loadConfig } from '../src/config/index.js';
import { buildProbeApp } from '../src/http/index.js';
import { startFabric } from '../src/server/index.js';
import { freshDb, type TestDb } from './support/db.js';
import { ENGINE, pgUrl } from './support/engine.js';

const METRICS_TOKEN = 'probe-metrics-token-0123456789-abcdefghijkl';

describe(`a worker process's probe listener (${ENGINE})`, () => {
  let db: TestDb;
  before(async () => {
    db = await freshDb();
  });
  after(async () => {
    await db?.close();
  });

  it('answers /healthz, /readyz and /metrics (its own series, not the table gauges) and nothing else', async () => {
    const app = await buildProbeApp({ db, config: loadConfig({}) });
    try {
      assert.deepEqual((await app.inject({ method: 'GET', url: '/healthz' })).json(), { status: 'ok' });
      const ready = await app.inject({ method: 'GET', url: '/readyz' });
      assert.equal(ready.statusCode, 200);
      assert.equal(ready.json().status, 'ready');
      const metrics = await app.inject({ method: 'GET', url: '/metrics' });
      assert.equal(metrics.statusCode, 200);
      assert.match(metrics.body, /# TYPE agent_fabric_tasks_total counter/);
      assert.match(metrics.body, /# TYPE agent_fabric_task_claim_latency_seconds histogram/);
      // the table gauges are the API processes' (a worker repeating them would double a sum over instances)
      const agent = await db.query<{ id: string }>(
        `INSERT INTO agents (tenant_id, workspace_id, name, config) SELECT 'default', id, 'probe', '{"model": "gpt-4o-mini"}' FROM workspaces WHERE tenant_id = 'default' LIMIT 1 RETURNING id`,
      );
      await db.query(`INSERT INTO tasks (tenant_id, agent_id, type, status, priority, timeout_seconds, max_retries, created_by) VALUES ('default', $1, 'probe', 'queued', 2, 60, 0, 'test')`, [agent.rows[0]!.id]);
      const QUEUE_SAMPLE = /^agent_fabric_queue_depth\{/m;
      assert.doesNotMatch((await app.inject({ method: 'GET', url: '/metrics' })).body, QUEUE_SAMPLE, 'a worker serves no table gauge');
      trackTableMetrics(db, 0); // what an API process does
      assert.match((await app.inject({ method: 'GET', url: '/metrics' })).body, QUEUE_SAMPLE, 'the control: with the tables tracked, the queued task shows');
      const api = await app.inject({ method: 'GET', url: '/api/tasks' });
      assert.equal(api.statusCode, 404);
      assert.equal(api.json().error.code, 'route_not_found');
      assert.match(api.json().error.message, /agent-fabric serve/);
    } finally {
      await app.close();
    }
  });

  it('with FABRIC_METRICS_TOKEN, /metrics needs it; the probes stay open', async () => {
    const app = await buildProbeApp({ db, config: loadConfig({ FABRIC_METRICS_TOKEN: METRICS_TOKEN }) });
    try {
      const none = await app.inject({ method: 'GET', url: '/metrics' });
      assert.deepEqual([none.statusCode, none.json().error.code], [401, 'missing_token']);
      const wrong = await app.inject({ method: 'GET', url: '/metrics', headers: { authorization: 'Bearer not-the-token' } });
      assert.deepEqual([wrong.statusCode, wrong.json().error.code], [401, 'invalid_token']);
      assert.equal((await app.inject({ method: 'GET', url: '/metrics', headers: { authorization: `Bearer ${METRICS_TOKEN}` } })).statusCode, 200);
      assert.equal((await app.inject({ method: 'GET', url: '/healthz' })).statusCode, 200);
    } finally {
      await app.close();
    }
  });

  it('`agent-fabric worker` serves it on FABRIC_WORKER_METRICS_PORT, and only then', { skip: ENGINE !== 'postgres' && 'worker mode runs on PostgreSQL' }, async () => {
    const env = { DATABASE_URL: pgUrl(db.name!), FABRIC_JWT_SECRET: 'probe-test-secret-0123456789-abcdefghijklmnop', FABRIC_LOG_LEVEL: 'silent' };
    const served = await startFabric(loadConfig({ ...env, FABRIC_WORKER_METRICS_PORT: '0' }), 'worker', { workers: 1 });
    try {
      assert.equal(served.url, undefined, 'no API in a worker process');
      assert.match(served.probeUrl ?? '', /^http:\/\/127\.0\.0\.1:\d+$/);
      assert.equal((await fetch(`${served.probeUrl}/readyz`)).status, 200);
      const text = await (await fetch(`${served.probeUrl}/metrics`)).text();
      assert.match(text, /agent_fabric_tasks_total/);
    } finally {
      await served.close();
    }
    const silent = await startFabric(loadConfig(env), 'worker', { workers: 1 });
    try {
      assert.equal(silent.probeUrl, undefined);
    } finally {
      await silent.close();
    }
  });
});
