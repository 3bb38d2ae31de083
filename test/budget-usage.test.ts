import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { meterUsage, sweepReservations } from '../src/budget/index.js';
import type { ManualClock } from '../src/clock/index.js';
import { withTransaction } from '../src/db/index.js';
import type { Task } from '../src/queue/index.js';
import type { ExecutionContext } from '../src/worker/index.js';
import type { TestApp } from './support/app.js';
import { setQuota, startBudgetApp } from './support/budget.js';
import { seededRandom } from './support/random.js';
import { ENGINE } from './support/engine.js';
import { provisionAgent, scriptedExecutor, startWorker, submit, terminal, waitForTask } from './support/queue.js';

/** The gateway's part, scripted: a model call of `tokens` tokens at 2 micro-USD per token. */
async function modelCall(t: TestApp, task: Task, tokens: number, n: number) {
  return withTransaction(t.db, (tx) =>
    meterUsage(tx, { tenantId: task.tenant_id, taskId: task.id, model: 'gpt-test', inputTokens: tokens - Math.floor(tokens / 3), outputTokens: Math.floor(tokens / 3), costMicros: 2 * tokens, key: `gw:${task.id}:${n}` }),
  );
}

describe(`budgets: usage, reservations, INSUFFICIENT_FUNDS (${ENGINE})`, () => {
  let t: TestApp & { clock: ManualClock };
  let worker: Awaited<ReturnType<typeof startWorker>>;
  before(async () => {
    t = await startBudgetApp();
    const handlers: Record<string, (task: Task, ctx: ExecutionContext) => unknown> = {
      // in-process model use reported through the context
      report: (task) => {
        const p = task.payload as { tokens: number };
        return { used: p.tokens };
      },
      // spends through the gateway until it is stopped
      spend: async (task, ctx) => {
        for (let i = 0; !(await modelCall(t, task, 400, i)).stopped; i++) await new Promise((r) => setTimeout(r, 20));
        // the gateway refuses further calls; the program waits until the worker stops it
        await new Promise((_, reject) => ctx.signal.addEventListener('abort', () => reject(new Error('stopped'))));
      },
      fail: () => {
        throw new Error('boom');
      },
    };
    const executor = scriptedExecutor(handlers);
    worker = await startWorker(t, {
      run: async (task, ctx) => {
        if (task.type === 'report') ctx.reportUsage({ model: 'gpt-test', input_tokens: (task.payload as { tokens: number }).tokens, output_tokens: 0, cost_micros: 3 * (task.payload as { tokens: number }).tokens });
        return executor.run(task, ctx);
      },
    }, { concurrency: 8, queue: { leaseSeconds: 1, maxRetryDelaySeconds: 0.1 } });
  });
  after(async () => {
    await worker?.stop(1000);
    await t?.close();
  });
  const quota = async (agent: string) => (await t.app.inject({ method: 'GET', url: `/api/agents/${agent}/quota`, headers: await t.auth('admin') })).json().quota;

  it('a completion writes agent_quota_usage rows (model, tokens, cost, compute) in the transaction of its terminal state, and settles its reservation', async () => {
    const agent = await provisionAgent(t, { quota: { monthly_token_limit: 10_000 } });
    const res = await submit(t, { agent_id: agent, type: 'report', payload: { tokens: 120 }, estimated_tokens: 200 });
    assert.equal(res.statusCode, 201);
    const task = await waitForTask(t, res.json().task.id, terminal);
    assert.equal(task.status, 'completed');
    const rows = await t.db.query<{ dimension: string; model: string; quantity: number; cost_micros: number; same_tx: boolean }>(
      `SELECT u.dimension, u.model, u.quantity, u.cost_micros, u.created_at = t.finished_at AS same_tx
         FROM agent_quota_usage u JOIN tasks t ON t.id = u.task_id WHERE u.task_id = $1 ORDER BY u.dimension`,
      [task.id],
    );
    assert.deepEqual(rows.rows.map((r) => [r.dimension, r.model, r.dimension === 'tokens' ? r.quantity : 'ms', r.cost_micros]), [
      ['compute', 'm', 'ms', 0],
      ['tokens', 'gpt-test', 120, 360],
    ]);
    assert.ok(rows.rows.every((r) => r.same_tx), 'now() of the usage rows = finished_at: one transaction');
    const q = await quota(agent);
    assert.equal(q.monthly_tokens_used, 120);
    assert.equal(q.monthly_cost_used_micros, 360);
    assert.equal(q.tokens_reserved, 0, 'the rest of the estimate was released');
    const r = await t.db.query<{ status: string; tokens_committed: number }>('SELECT status, tokens_committed FROM budget_reservations WHERE task_id = $1', [task.id]);
    assert.deepEqual(r.rows, [{ status: 'committed', tokens_committed: 120 }]);
  });

  it('a failed attempt records its compute; a task that ends failed releases its reservation', async () => {
    const agent = await provisionAgent(t);
    const res = await submit(t, { agent_id: agent, type: 'fail', estimated_tokens: 70, max_retries: 1 });
    const task = await waitForTask(t, res.json().task.id, terminal);
    assert.equal(task.status, 'dead_lettered');
    const n = await t.db.query<{ n: number }>("SELECT count(*)::int AS n FROM agent_quota_usage WHERE task_id = $1 AND dimension = 'compute'", [task.id]);
    assert.equal(n.rows[0]!.n, 2, 'one per attempt');
    assert.equal((await quota(agent)).tokens_reserved, 0);
  });

  it('race: 40 concurrent submissions for the last 100 units never oversubscribe; committed ≤ limit; nothing negative', async () => {
    const agent = await provisionAgent(t, { quota: { monthly_token_limit: 1000 }, max_queue_depth: 1000, max_concurrency: 8 });
    await setQuota(t, agent, { monthly_tokens_used: 900 });
    const results = await Promise.all(Array.from({ length: 40 }, () => submit(t, { agent_id: agent, type: 'report', payload: { tokens: 10 }, estimated_tokens: 10 })));
    const accepted = results.filter((r) => r.statusCode === 201);
    assert.equal(accepted.length, 10, results.map((r) => r.statusCode).join(','));
    assert.ok(results.every((r) => r.statusCode === 201 || r.json().error.code === 'quota_exceeded'));
    for (const r of accepted) await waitForTask(t, r.json().task.id, terminal);
    const q = await quota(agent);
    assert.equal(q.monthly_tokens_used, 1000);
    assert.equal(q.tokens_reserved, 0);
    const c = await t.db.query<{ s: number }>('SELECT coalesce(sum(tokens_committed), 0)::int AS s FROM budget_reservations WHERE agent_id = $1', [agent]);
    assert.ok(c.rows[0]!.s <= 100);
  });

  it('mid-run exhaustion: spend past a hard limit ends the task failed with INSUFFICIENT_FUNDS through the worker', async () => {
    const agent = await provisionAgent(t, { quota: { monthly_token_limit: 1000 } });
    const res = await submit(t, { agent_id: agent, type: 'spend', estimated_tokens: 500 });
    const task = await waitForTask(t, res.json().task.id, terminal, 15_000);
    assert.equal(task.status, 'failed');
    assert.equal(task.error?.code, 'INSUFFICIENT_FUNDS');
    const q = await quota(agent);
    assert.equal(q.monthly_tokens_used, 1200, 'three calls: the third passed the limit');
    assert.equal(q.monthly_cost_used_micros, 2400);
    assert.equal(q.tokens_reserved, 0);
    const audit = await t.db.query("SELECT 1 FROM audit_log WHERE action = 'task.insufficient_funds' AND target_id = $1", [task.id]);
    assert.equal(audit.rows.length, 1);
    // a retried gateway report (same key) is counted once
    const again = await withTransaction(t.db, (tx) => meterUsage(tx, { tenantId: 'default', taskId: task.id, model: 'gpt-test', inputTokens: 400, outputTokens: 0, costMicros: 800, key: `gw:${task.id}:0` }));
    assert.equal(again.stopped, false);
    assert.equal((await quota(agent)).monthly_tokens_used, q.monthly_tokens_used);
  });

  it('budgets above the agent: a workspace budget refuses past its hard threshold; the spend counts at every level', async () => {
    const ws = (await t.app.inject({ method: 'POST', url: '/api/workspaces', headers: await t.auth('admin'), payload: { name: `ws-${Date.now()}` } })).json();
    const wsId = (ws.workspace ?? ws).id as string;
    const mk = await t.app.inject({ method: 'POST', url: '/api/budgets', headers: await t.auth('admin'), payload: { scope: 'workspace', scope_id: wsId, max_tokens_per_day: 300, max_cost_per_day_usd: '1.5' } });
    assert.equal(mk.statusCode, 201, mk.body);
    const budget = mk.json().budget;
    assert.equal(budget.max_cost_per_day_usd, '1.5');
    const dup = await t.app.inject({ method: 'POST', url: '/api/budgets', headers: await t.auth('admin'), payload: { scope: 'workspace', scope_id: wsId } });
    assert.equal(dup.json().error.code, 'budget_exists');
    assert.equal((await t.app.inject({ method: 'POST', url: '/api/budgets', headers: await t.auth('operator'), payload: { scope: 'tenant' } })).statusCode, 403);
    const agent = await provisionAgent(t, { workspace_id: wsId });
    const ok = await submit(t, { agent_id: agent, type: 'report', payload: { tokens: 250 }, estimated_tokens: 250 });
    assert.equal(ok.statusCode, 201);
    const refused = await submit(t, { agent_id: agent, type: 'report', payload: { tokens: 10 }, estimated_tokens: 100 });
    assert.equal(refused.statusCode, 429);
    assert.equal(refused.json().error.scope, 'workspace');
    assert.equal(refused.json().error.limit, 'max_tokens_per_day');
    await waitForTask(t, ok.json().task.id, terminal);
    const b = (await t.app.inject({ method: 'GET', url: `/api/budgets/${budget.id}`, headers: await t.auth('viewer') })).json().budget;
    assert.equal(b.tokens_used, 250);
    assert.equal(b.cost_used_micros, 750);
    assert.equal(b.tokens_reserved, 0);
    assert.ok(b.compute_seconds_used >= 0);
    // a task without an estimate is checked too once the tenant has budgets: tokens are not exhausted yet
    assert.equal((await submit(t, { agent_id: agent, type: 'report', payload: { tokens: 0 } })).statusCode, 201);
    const del = await t.app.inject({ method: 'DELETE', url: `/api/budgets/${budget.id}`, headers: await t.auth('admin') });
    assert.equal(del.statusCode, 200);
  });

  it('the sweeper releases expired reservations (ManualClock) and those of tasks that ended without running', async () => {
    const agent = await provisionAgent(t, { status: undefined });
    await t.db.query("UPDATE agents SET status = 'paused' WHERE id = $1", [agent]); // nothing runs
    const a = (await submit(t, { agent_id: agent, type: 'report', estimated_tokens: 30 })).json().task;
    const b = (await submit(t, { agent_id: agent, type: 'report', estimated_tokens: 20 })).json().task;
    assert.equal((await quota(agent)).tokens_reserved, 50);
    await t.app.inject({ method: 'POST', url: `/api/tasks/${b.id}/cancel`, headers: await t.auth('admin') });
    assert.equal(await sweepReservations(t.db, t.clock.now()), 1);
    assert.equal((await quota(agent)).tokens_reserved, 30);
    t.clock.advance(86_400_000 + 1000);
    assert.equal(await sweepReservations(t.db, t.clock.now()), 1);
    assert.equal((await quota(agent)).tokens_reserved, 0);
    const s = await t.db.query<{ status: string }>('SELECT status FROM budget_reservations WHERE task_id = ANY ($1::uuid[]) ORDER BY tokens_requested', [[a.id, b.id]]);
    assert.deepEqual(s.rows.map((r) => r.status), ['released', 'expired']);
  });

  it('reconciliation: after a randomized workload the usage and ledger rows equal the counters to the micro-unit', async () => {
    const agents = [];
    for (let i = 0; i < 3; i++) agents.push(await provisionAgent(t, { quota: { monthly_token_limit: 50_000, overage_policy: i === 2 ? 'alert_only' : 'block' }, max_queue_depth: 500, max_concurrency: 4 }));
    const rand = seededRandom(42);
    const ids: string[] = [];
    for (let i = 0; i < 60; i++) {
      const agent = agents[rand(3)]!;
      const type = rand(5) === 0 ? 'fail' : 'report';
      const res = await submit(t, { agent_id: agent, type, payload: { tokens: rand(700) }, ...(rand(2) ? { estimated_tokens: rand(900) } : {}), max_retries: 0 });
      if (res.statusCode === 201) ids.push(res.json().task.id);
      if (rand(7) === 0) await t.app.inject({ method: 'POST', url: `/api/agents/${agent}/quota/adjustments`, headers: await t.auth('admin'), payload: { tokens_delta: rand(50) + 1, cost_delta_micros: rand(999), reason: 'reconcile test' } });
    }
    for (const id of ids) await waitForTask(t, id, terminal, 20_000);
    for (const agent of agents) {
      const sums = await t.db.query<{ tokens: string; cost: string; used: string; cost_used: string; reserved: string }>(
        `SELECT ((SELECT coalesce(sum(quantity), 0) FROM agent_quota_usage WHERE agent_id = $1 AND dimension = 'tokens')
                + (SELECT coalesce(sum(tokens), 0) FROM ledger_entries WHERE agent_id = $1 AND entry_type IN ('adjustment', 'period_reset')))::text AS tokens,
                ((SELECT coalesce(sum(cost_micros), 0) FROM agent_quota_usage WHERE agent_id = $1)
                + (SELECT coalesce(sum(cost_usd * 1000000), 0) FROM ledger_entries WHERE agent_id = $1 AND entry_type IN ('adjustment', 'period_reset')))::bigint::text AS cost,
                q.monthly_tokens_used::text AS used, (q.monthly_cost_used_usd * 1000000)::bigint::text AS cost_used, q.tokens_reserved::text AS reserved
           FROM agent_quotas q WHERE q.agent_id = $1`,
        [agent],
      );
      const s = sums.rows[0]!;
      assert.equal(s.tokens, s.used, `tokens of ${agent}`);
      assert.equal(s.cost, s.cost_used, `micro-USD of ${agent}`);
      assert.equal(s.reserved, '0');
    }
  });
});
