import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { CachedSignals, startAlertRuntime } from '../src/alerts/index.js';
import { startBudgetRuntime } from '../src/budget/index.js';
import { loadConfig } from '../src/config/index.js';
import { withTransaction } from '../src/db/index.js';
import { SemanticMemoryService } from '../src/memory/semantic/index.js';
import { configureAgentLabels } from '../src/telemetry/index.js';
import type { Task } from '../src/queue/index.js';
import type { ExecutionContext } from '../src/worker/index.js';
import { countRows, startTestApp, type TestApp } from './support/app.js';
import { ENGINE } from './support/engine.js';
import { metricSeries, metricValue, scrape, slowEmbeddings, uploadFile } from './support/monitoring.js';
import { provisionAgent, recordingNotifier, scriptedExecutor, startWorker, submit, terminal, waitForTask } from './support/queue.js';

const DEFAULT = 'default';

describe(`metrics: agent-fabric.md §6 and the monitoring table of isolation-runtime-prd §9 (${ENGINE})`, () => {
  let t: TestApp;
  let worker: Awaited<ReturnType<typeof startWorker>>;
  const base = loadConfig({});
  before(async () => {
    t = await startTestApp({
      config: { metrics: { ...base.metrics, cacheMs: 0 } },
      withDb: (db) => ({ semanticMemory: new SemanticMemoryService(db, slowEmbeddings(5)) }),
    });
    const handlers: Record<string, (task: Task, ctx: ExecutionContext) => unknown> = {
      report: (task, ctx) => {
        ctx.reportUsage({ model: 'gpt-metrics', input_tokens: (task.payload as { tokens: number }).tokens, output_tokens: 0 });
        return { ok: true };
      },
      fail: () => {
        throw new Error('boom');
      },
    };
    worker = await startWorker(t, scriptedExecutor(handlers));
  });
  after(async () => {
    configureAgentLabels({ enabled: true, maxAgents: 200 });
    await worker?.stop(1000);
    await t?.close();
  });

  const run = async (body: Record<string, unknown>) => {
    const res = await submit(t, body);
    assert.equal(res.statusCode, 201, res.body);
    return waitForTask(t, res.json().task.id, terminal);
  };

  it('tasks_total, task_duration_seconds, tokens_total, budget_usage_ratio, quota_tokens_pct and agents_active follow the task and usage paths', async () => {
    const agent = await provisionAgent(t, { quota: { monthly_token_limit: 1000 } });
    const durationsBefore = metricValue(await scrape(t), 'agent_fabric_task_duration_seconds_count', { status: 'completed' }) ?? 0;
    assert.equal((await run({ agent_id: agent, type: 'report', payload: { tokens: 850 } })).status, 'completed');
    let text = await scrape(t);
    assert.equal(metricValue(text, 'agent_fabric_tasks_total', { agent_id: agent, status: 'completed' }), 1);
    assert.equal(metricValue(text, 'agent_fabric_task_duration_seconds_count', { status: 'completed' }), durationsBefore + 1);
    assert.equal(metricValue(text, 'agent_fabric_tokens_total', { agent_id: agent, model: 'gpt-metrics' }), 850);
    assert.equal(metricValue(text, 'agent_fabric_quota_tokens_pct', { tenant_id: DEFAULT, agent_id: agent }), 85);
    const active = await countRows(t.db, 'agents', "tenant_id = 'default' AND status = 'active' AND deleted_at IS NULL");
    assert.equal(metricValue(text, 'agent_fabric_agents_active', { tenant_id: DEFAULT }), active);

    // the budget runtime's sweep refreshes the usage ratio from the table (any process's spend)
    const budgets = await startBudgetRuntime({ db: t.db, notifier: recordingNotifier(), sweepSeconds: 3600 });
    await budgets.tick();
    await budgets.stop();
    text = await scrape(t);
    assert.equal(metricValue(text, 'agent_fabric_budget_usage_ratio', { entity_id: agent }), 0.85);

    await t.app.inject({ method: 'PATCH', url: `/api/agents/${agent}`, headers: await t.auth('admin'), payload: { status: 'paused' } });
    assert.equal(metricValue(await scrape(t), 'agent_fabric_agents_active', { tenant_id: DEFAULT }), active - 1, 'a paused agent is not active');
  });

  it('policy_decisions_total counts each decision of /api/policy/check', async () => {
    const agent = await provisionAgent(t);
    const res = await t.app.inject({
      method: 'POST',
      url: '/api/policies',
      headers: await t.auth('admin'),
      payload: { name: `m-${agent.slice(0, 8)}`, scope: { type: 'agent', id: agent }, rules: [{ action_pattern: 'shell.exec', effect: 'deny' }] },
    });
    assert.equal(res.statusCode, 201, res.body);
    const before = metricValue(await scrape(t), 'agent_fabric_policy_decisions_total', { decision: 'deny' }) ?? 0;
    for (let i = 0; i < 2; i++) {
      const check = await t.app.inject({ method: 'POST', url: '/api/policy/check', headers: await t.auth('agent', { sub: agent }), payload: { action: 'shell.exec', resource: 'ls' } });
      assert.equal(check.json().decision, 'deny');
    }
    assert.equal(metricValue(await scrape(t), 'agent_fabric_policy_decisions_total', { decision: 'deny' }), before + 2);
  });

  it('queue depth, dead letters and storage are read from the tables at scrape time, per tenant and agent', async () => {
    const waiting = await provisionAgent(t);
    await t.app.inject({ method: 'PATCH', url: `/api/agents/${waiting}`, headers: await t.auth('admin'), payload: { status: 'paused' } });
    const batch = await t.app.inject({ method: 'POST', url: '/api/tasks/batch', headers: await t.auth('admin'), payload: { tasks: [1, 2, 3].map(() => ({ agent_id: waiting, type: 'report', payload: { tokens: 1 } })) } });
    assert.equal(batch.statusCode, 201, batch.body);
    // a write that bypassed this process (another API node) is seen too: the gauge reads the table
    await t.db.query(`UPDATE tasks SET status = 'waiting', run_at = now() + interval '1 hour' WHERE id = $1`, [batch.json().tasks[0].id]);
    let text = await scrape(t);
    assert.equal(metricValue(text, 'agent_fabric_queue_depth', { tenant_id: DEFAULT, agent_id: waiting }), 3);
    assert.equal(metricValue(text, 'agent_fabric_tasks_running', { tenant_id: DEFAULT, agent_id: waiting }), 0);

    const deadBefore = metricValue(text, 'agent_fabric_tasks_dead_lettered', { tenant_id: DEFAULT }) ?? 0;
    const failing = await provisionAgent(t);
    assert.equal((await run({ agent_id: failing, type: 'fail', max_retries: 0 })).status, 'dead_lettered');
    text = await scrape(t);
    assert.equal(metricValue(text, 'agent_fabric_tasks_dead_lettered', { tenant_id: DEFAULT }), deadBefore + 1);
    assert.equal(metricValue(text, 'agent_fabric_tasks_total', { agent_id: failing, status: 'dead_lettered' }), 1);

    const put = await t.app.inject({ method: 'PUT', url: `/api/agents/${failing}/quota`, headers: await t.auth('admin'), payload: { storage_limit_bytes: 1000 } });
    assert.equal(put.statusCode, 200, put.body);
    assert.equal((await uploadFile(t, failing, 950)).statusCode, 201);
    assert.equal(metricValue(await scrape(t), 'agent_fabric_files_storage_pct', { tenant_id: DEFAULT, agent_id: failing }), 95);
  });

  it('table reads are cached: a scraper asking faster than FABRIC_METRICS_CACHE_MS gets the same read', async () => {
    const agent = await provisionAgent(t);
    await t.app.inject({ method: 'PATCH', url: `/api/agents/${agent}`, headers: await t.auth('admin'), payload: { status: 'paused' } });
    const cached = new CachedSignals(t.db, 300);
    const depth = async () => (await cached.read()).queues.find((q) => q.agent_id === agent)?.depth ?? 0;
    const [first, concurrent] = await Promise.all([cached.read(), cached.read()]);
    assert.equal(first, concurrent, 'concurrent gauges share one read');
    assert.equal(await depth(), 0);
    await submit(t, { agent_id: agent, type: 'x' });
    assert.equal(await depth(), 0, 'within the ttl: the cached read, no query');
    await new Promise((r) => setTimeout(r, 350));
    assert.equal(await depth(), 1, 'after the ttl: read again');
  });

  it('memory_embed_latency_seconds observes every embedding call of semantic memory', async () => {
    const agent = await provisionAgent(t);
    const before = metricValue(await scrape(t), 'agent_fabric_memory_embed_latency_seconds_count') ?? 0;
    const res = await t.app.inject({ method: 'POST', url: `/api/agents/${agent}/memory/embed`, headers: await t.auth('admin'), payload: { text: 'hello metrics' } });
    assert.equal(res.statusCode, 201, res.body);
    const search = await t.app.inject({ method: 'POST', url: `/api/agents/${agent}/memory/search`, headers: await t.auth('admin'), payload: { query: 'hello' } });
    assert.equal(search.statusCode, 200, search.body);
    const text = await scrape(t);
    assert.equal(metricValue(text, 'agent_fabric_memory_embed_latency_seconds_count'), before + 2);
    assert.ok((metricValue(text, 'agent_fabric_memory_embed_latency_seconds_sum') ?? 0) >= 0.008, 'two calls of ≥ 5 ms');
  });

  it('transactions_rollback_rate is the share of withTransaction calls that rolled back over the alert window', async () => {
    await worker.stop(1000); // no other transactions in this process meanwhile
    const config = { ...base.alerts, evalSeconds: 3600 };
    const alerts = startAlertRuntime({ db: t.db, notifier: recordingNotifier(), config, schedule: false });
    try {
      await alerts.tick();
      for (const fail of [true, false, false, false]) {
        await withTransaction(t.db, async (tx) => {
          await tx.query('SELECT 1');
          if (fail) throw new Error('planned rollback');
        }).catch(() => {});
      }
      await alerts.tick();
      assert.equal(metricValue(await scrape(t), 'agent_fabric_transactions_rollback_rate'), 0.25);
    } finally {
      await alerts.stop();
      worker = await startWorker(t, scriptedExecutor({}));
    }
  });

  it('agent labels are capped by one helper: past the cap series fold into "_other"; off, every series is "_all"', async () => {
    const [a, b] = [await provisionAgent(t), await provisionAgent(t)];
    for (const agent of [a, b]) await t.app.inject({ method: 'PATCH', url: `/api/agents/${agent}`, headers: await t.auth('admin'), payload: { status: 'paused' } });
    await t.app.inject({ method: 'POST', url: '/api/tasks/batch', headers: await t.auth('admin'), payload: { tasks: [a, a, a, a, a, b, b].map((agent_id) => ({ agent_id, type: 'x' })) } });
    const depthOf = (text: string, agent: string) => metricValue(text, 'agent_fabric_queue_depth', { tenant_id: DEFAULT, agent_id: agent });
    try {
      const all = await scrape(t);
      const total = metricSeries(all, 'agent_fabric_queue_depth').reduce((n, l) => n + (depthOf(all, l.agent_id!) ?? 0), 0);
      configureAgentLabels({ enabled: true, maxAgents: 1 });
      let text = await scrape(t);
      const series = metricSeries(text, 'agent_fabric_queue_depth');
      assert.deepEqual(series.map((s) => s.agent_id).sort(), [a, '_other'].sort(), 'the deepest queue keeps its series');
      assert.equal(depthOf(text, a), 5);
      assert.equal(depthOf(text, '_other'), total - 5, 'the rest are summed, nothing lost');
      // a counter: the first agent counted keeps its series, later ones are "_other"
      const [x, y] = [await provisionAgent(t), await provisionAgent(t)];
      await run({ agent_id: x, type: 'fail', max_retries: 0 });
      await run({ agent_id: y, type: 'fail', max_retries: 0 });
      text = await scrape(t);
      assert.equal(metricValue(text, 'agent_fabric_tasks_total', { agent_id: x, status: 'dead_lettered' }), 1);
      assert.equal(metricValue(text, 'agent_fabric_tasks_total', { agent_id: y, status: 'dead_lettered' }), undefined);
      assert.ok((metricValue(text, 'agent_fabric_tasks_total', { agent_id: '_other', status: 'dead_lettered' }) ?? 0) >= 1);

      configureAgentLabels({ enabled: false });
      text = await scrape(t);
      assert.deepEqual(metricSeries(text, 'agent_fabric_queue_depth').map((s) => s.agent_id), ['_all']);
      assert.equal(depthOf(text, '_all'), total);
      assert.deepEqual([...new Set(metricSeries(text, 'agent_fabric_quota_tokens_pct').map((s) => s.agent_id))], ['_all']);
    } finally {
      configureAgentLabels({ enabled: true, maxAgents: 200 });
    }
  });
});
