import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { BillingService } from '../src/billing/index.js';
import { budgetSubmitHook } from '../src/budget/index.js';
import type { Worker } from '../src/worker/index.js';
import { startTestApp, type TestApp } from './support/app.js';
import { seededRandom } from './support/random.js';
import { ENGINE } from './support/engine.js';
import { provisionAgent, scriptedExecutor, startWorker, submit, terminal, waitForTask } from './support/queue.js';

interface Dim {
  dimension: string;
  consumed: string | number;
  cost_micros: string | number;
}

/**
 * The whole money path at once: tasks submitted through the budget and billing hooks, run by a
 * real worker whose executor reports usage, recorded with each attempt's end — then the
 * agent's quota counters, the usage rows and the tenant's usage report and export all agree,
 * to the micro-unit.
 */
describe(`usage reconciles end to end: worker → usage rows → quota counters → usage report (${ENGINE})`, () => {
  let t: TestApp;
  let worker: Worker;
  const rand = seededRandom(4242);
  before(async () => {
    const billing = new BillingService({});
    t = await startTestApp({ billing, queue: { onSubmit: [billing.submitHook, budgetSubmitHook({ budgetsCacheMs: 0 })] } });
    worker = await startWorker(
      t,
      scriptedExecutor({
        work: async (task, ctx) => {
          const calls = Number(task.payload.calls);
          for (let i = 0; i < calls; i++) ctx.reportUsage({ model: 'gpt-4o-mini', input_tokens: rand(900) + 1, output_tokens: rand(300), cost_micros: rand(25_000) });
          if (task.payload.fail) throw new Error('fails after spending');
          return { calls };
        },
      }),
      { concurrency: 4 },
    );
    assert.equal((await t.app.inject({ method: 'POST', url: '/api/subscription', headers: await t.auth('admin'), payload: { plan_id: 'pro' } })).statusCode, 201);
  });
  after(async () => {
    await worker?.stop(1000);
    await t?.close();
  });

  it('after a randomized workload (successes, failures, retries) every figure agrees', async () => {
    const agents = [await provisionAgent(t, { max_concurrency: 2 }), await provisionAgent(t, { max_concurrency: 2 })];
    const tasks = [];
    for (let i = 0; i < 24; i++) {
      const body = { agent_id: agents[rand(2)]!, type: 'work', payload: { calls: rand(4), fail: rand(5) === 0 }, max_retries: rand(2), estimated_tokens: rand(2000) };
      const res = await submit(t, body);
      assert.equal(res.statusCode, 201, res.body);
      tasks.push(res.json().task.id as string);
    }
    for (const id of tasks) {
      const done = await waitForTask(t, id, terminal, 30_000);
      assert.ok(terminal(done), `task ${id} ended`);
    }

    const rows = await t.db.query<{ agent_id: string; dimension: string; quantity: string; cost_micros: string }>(
      `SELECT agent_id::text, dimension, quantity::text, cost_micros::text FROM agent_quota_usage WHERE tenant_id = 'default'`,
    );
    const sum = (pick: (r: (typeof rows.rows)[number]) => boolean, field: 'quantity' | 'cost_micros') => rows.rows.filter(pick).reduce((s, r) => s + BigInt(r[field]), 0n);
    assert.ok(sum((r) => r.dimension === 'tokens', 'quantity') > 0n, 'the workload spent tokens');
    assert.ok(rows.rows.some((r) => r.dimension === 'compute'), 'every attempt charged its compute');

    // the agents' quota counters are the sum of their rows
    for (const agent of agents) {
      const q = (await t.app.inject({ method: 'GET', url: `/api/agents/${agent}/quota`, headers: await t.auth('admin') })).json().quota;
      assert.equal(BigInt(q.monthly_tokens_used), sum((r) => r.agent_id === agent && r.dimension === 'tokens', 'quantity'), `agent ${agent}: tokens`);
      assert.equal(BigInt(q.monthly_cost_used_micros), sum((r) => r.agent_id === agent, 'cost_micros'), `agent ${agent}: cost in micro-USD`);
    }

    // the tenant's usage report and export are the same rows
    const report = (await t.app.inject({ method: 'GET', url: '/api/usage?period=current', headers: await t.auth('admin') })).json() as { dimensions: Dim[] };
    for (const d of report.dimensions) {
      assert.equal(BigInt(d.consumed), sum((r) => r.dimension === d.dimension, 'quantity'), `${d.dimension}: consumed`);
      assert.equal(BigInt(d.cost_micros), sum((r) => r.dimension === d.dimension, 'cost_micros'), `${d.dimension}: cost`);
    }
    const lines = (await t.app.inject({ method: 'GET', url: '/api/usage/export?period=current&format=jsonl', headers: await t.auth('admin') })).body.trim().split('\n');
    assert.equal(lines.length, rows.rows.length, 'one export line per metered event');

    // no reservation is left open once every task has ended
    const open = await t.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM budget_reservations WHERE status = 'open'`);
    assert.equal(open.rows[0]!.n, 0);
  });
});
