import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { backfillAgentQuotas, dispatchBudgetAlerts, resetPeriods } from '../src/budget/index.js';
import type { ManualClock } from '../src/clock/index.js';
import { createNotifier } from '../src/notify/index.js';
import { countRows, type TestApp } from './support/app.js';
import { fakeWebhook, setQuota, startBudgetApp } from './support/budget.js';
import { ENGINE } from './support/engine.js';
import { provisionAgent, submit } from './support/queue.js';

describe(`quotas: §3.5 acceptance (${ENGINE})`, () => {
  let t: TestApp & { clock: ManualClock };
  let hook: Awaited<ReturnType<typeof fakeWebhook>>;
  before(async () => {
    t = await startBudgetApp();
    hook = await fakeWebhook();
  });
  after(async () => {
    await t?.close();
    await hook?.close();
  });
  const quotaOf = async (agent: string) => (await t.app.inject({ method: 'GET', url: `/api/agents/${agent}/quota`, headers: await t.auth('viewer') })).json().quota;

  it('block: limit 1000, used 950, estimated_tokens 100 → 429 quota_exceeded saying which limit, used and requested; nothing stored', async () => {
    const agent = await provisionAgent(t, { quota: { monthly_token_limit: 1000, overage_policy: 'block' } });
    await setQuota(t, agent, { monthly_tokens_used: 950 });
    const tasksBefore = await countRows(t.db, 'tasks');
    const res = await submit(t, { agent_id: agent, type: 'work', estimated_tokens: 100 });
    assert.equal(res.statusCode, 429);
    const err = res.json().error;
    assert.equal(err.code, 'quota_exceeded');
    assert.equal(err.limit, 'monthly_token_limit');
    assert.equal(err.limit_value, 1000);
    assert.equal(err.used, 950);
    assert.equal(err.requested, 100);
    assert.equal(err.entity_type, 'agent');
    assert.match(err.message, /950 tokens .* monthly_token_limit of 1000 tokens .*block/);
    assert.equal(await countRows(t.db, 'tasks'), tasksBefore, 'no task row');
    assert.equal(await countRows(t.db, 'budget_reservations', 'agent_id = $1', [agent]), 0);
    // what fits is accepted and reserved
    const ok = await submit(t, { agent_id: agent, type: 'work', estimated_tokens: 50 });
    assert.equal(ok.statusCode, 201);
    assert.equal((await quotaOf(agent)).tokens_reserved, 50);
    // the limit is now reached: even a task without units is refused
    const none = await submit(t, { agent_id: agent, type: 'work', estimated_tokens: 0 });
    assert.equal(none.statusCode, 429);
    // a batch is all or nothing
    const batch = await t.app.inject({ method: 'POST', url: '/api/tasks/batch', headers: await t.auth('admin'), payload: { tasks: [{ agent_id: agent, type: 'x', estimated_tokens: 1 }] } });
    assert.equal(batch.statusCode, 429);
  });

  it('alert_only: the task is accepted AND an alert reaches #fleet-ops, once per period', async () => {
    const agent = await provisionAgent(t, { quota: { monthly_token_limit: 1000, overage_policy: 'alert_only' } });
    await setQuota(t, agent, { monthly_tokens_used: 950 });
    const res = await submit(t, { agent_id: agent, type: 'work', estimated_tokens: 100 });
    assert.equal(res.statusCode, 201);
    const notifier = createNotifier({ webhookUrl: hook.url, retries: 0 });
    await dispatchBudgetAlerts(t.db, notifier);
    const mine = () => hook.bodies.filter((b) => JSON.stringify(b).includes(agent));
    assert.ok(mine().length >= 2, 'threshold and exhaustion/overage alerts');
    for (const b of mine()) assert.equal(b.channel, '#fleet-ops');
    assert.ok(mine().some((b) => /Budget overage started/.test(String(b.text))));
    const events = await t.db.query<{ event_type: string }>(`SELECT event_type FROM system_events WHERE subject_id = $1 AND event_type LIKE 'budget.%' ORDER BY id`, [agent]);
    assert.deepEqual(events.rows.map((e) => e.event_type).sort(), ['budget.exhausted', 'budget.overage_started', 'budget.threshold_reached']);
    // again in the same period: accepted, no new alert
    const n = mine().length;
    assert.equal((await submit(t, { agent_id: agent, type: 'work', estimated_tokens: 100 })).statusCode, 201);
    await dispatchBudgetAlerts(t.db, notifier);
    assert.equal(mine().length, n);
  });

  it('allow: accepted and the overage recorded (event, no notification)', async () => {
    const agent = await provisionAgent(t, { quota: { monthly_token_limit: 1000, overage_policy: 'allow' } });
    await setQuota(t, agent, { monthly_tokens_used: 950 });
    assert.equal((await submit(t, { agent_id: agent, type: 'work', estimated_tokens: 100 })).statusCode, 201);
    assert.equal(await countRows(t.db, 'budget_alerts', "entity_id = $1 AND kind = 'overage' AND NOT notify", [agent]), 1);
    assert.equal(await countRows(t.db, 'system_events', "subject_id = $1 AND event_type = 'budget.overage_started'", [agent]), 1);
    assert.equal((await quotaOf(agent)).tokens_reserved, 100);
  });

  it('GET /quota: tokens_pct, cost_pct, storage_pct as floats 0–100, for the agent itself and readers', async () => {
    const agent = await provisionAgent(t, { quota: { monthly_token_limit: 3000, monthly_cost_limit_usd: 30, storage_limit_bytes: 4000 } });
    await setQuota(t, agent, { monthly_tokens_used: 1000, monthly_cost_used_usd: '7.5', storage_used_bytes: 5000 });
    const res = await t.app.inject({ method: 'GET', url: `/api/agents/${agent}/quota`, headers: await t.auth('agent', { sub: agent }) });
    assert.equal(res.statusCode, 200);
    const q = res.json().quota;
    assert.ok(Math.abs(q.tokens_pct - 33.333333) < 1e-4, String(q.tokens_pct));
    assert.equal(q.cost_pct, 25);
    assert.equal(q.storage_pct, 100, 'clamped to 100');
    assert.equal(q.monthly_cost_used_micros, 7_500_000);
    for (const k of ['tokens_pct', 'cost_pct', 'storage_pct']) assert.equal(typeof q[k], 'number');
    const other = await provisionAgent(t);
    assert.equal((await t.app.inject({ method: 'GET', url: `/api/agents/${agent}/quota`, headers: await t.auth('agent', { sub: other }) })).statusCode, 403);
  });

  it('PUT /quota: admin only (every other role → 403); any subset; audited', async () => {
    const agent = await provisionAgent(t);
    for (const role of ['operator', 'member', 'viewer'] as const) {
      const res = await t.app.inject({ method: 'PUT', url: `/api/agents/${agent}/quota`, headers: await t.auth(role), payload: { monthly_token_limit: 5 } });
      assert.equal(res.statusCode, 403, role);
    }
    const self = await t.app.inject({ method: 'PUT', url: `/api/agents/${agent}/quota`, headers: await t.auth('agent', { sub: agent }), payload: { monthly_token_limit: 5 } });
    assert.equal(self.statusCode, 403);
    const res = await t.app.inject({ method: 'PUT', url: `/api/agents/${agent}/quota`, headers: await t.auth('admin'), payload: { monthly_cost_limit_usd: 12.34, overage_policy: 'alert_only' } });
    assert.equal(res.statusCode, 200);
    assert.equal(res.json().quota.monthly_cost_limit_usd, 12.34);
    assert.equal(res.json().quota.monthly_cost_limit_micros, 12_340_000);
    assert.equal(res.json().quota.overage_policy, 'alert_only');
    assert.equal(await countRows(t.db, 'audit_log', "action = 'agent.quota.update' AND target_id = $1", [agent]), 1);
    const empty = await t.app.inject({ method: 'PUT', url: `/api/agents/${agent}/quota`, headers: await t.auth('admin'), payload: {} });
    assert.equal(empty.statusCode, 400);
  });

  it('manual adjustment: admin only, audited with before/after, a ledger entry, never below zero', async () => {
    const agent = await provisionAgent(t);
    const url = `/api/agents/${agent}/quota/adjustments`;
    assert.equal((await t.app.inject({ method: 'POST', url, headers: await t.auth('operator'), payload: { tokens_delta: 5, reason: 'test' } })).statusCode, 403);
    const res = await t.app.inject({ method: 'POST', url, headers: await t.auth('admin'), payload: { tokens_delta: 500, cost_delta_micros: 1_250_000, reason: 'imported usage' } });
    assert.equal(res.statusCode, 200);
    assert.equal(res.json().quota.monthly_tokens_used, 500);
    assert.equal(res.json().quota.monthly_cost_used_micros, 1_250_000);
    const audit = await t.db.query<{ before: { monthly_tokens_used: number }; after: { monthly_tokens_used: number; reason: string } }>(
      "SELECT before, after FROM audit_log WHERE action = 'agent.quota.adjust' AND target_id = $1",
      [agent],
    );
    assert.equal(audit.rows[0]!.before.monthly_tokens_used, 0);
    assert.equal(audit.rows[0]!.after.monthly_tokens_used, 500);
    assert.equal(audit.rows[0]!.after.reason, 'imported usage');
    assert.equal(await countRows(t.db, 'ledger_entries', "entry_type = 'adjustment' AND agent_id = $1 AND cost_usd = 1.25", [agent]), 1);
    const below = await t.app.inject({ method: 'POST', url, headers: await t.auth('admin'), payload: { tokens_delta: -501, reason: 'too much' } });
    assert.equal(below.statusCode, 400);
    assert.equal(below.json().error.code, 'adjustment_below_zero');
  });

  it('monthly reset at 00:00 on the 1st in the tenant time zone (ManualClock); reservations are kept; exactly one resetter', async () => {
    const tz = await t.app.inject({ method: 'PUT', url: '/api/budget-settings', headers: await t.auth('admin'), payload: { time_zone: 'America/New_York' } });
    assert.equal(tz.statusCode, 200);
    const bad = await t.app.inject({ method: 'PUT', url: '/api/budget-settings', headers: await t.auth('admin'), payload: { time_zone: 'Mars/Base' } });
    assert.equal(bad.json().error.code, 'invalid_time_zone');
    const agent = await provisionAgent(t);
    // March in New York starts at 05:00 UTC (EST); April at 04:00 UTC (EDT)
    await setQuota(t, agent, { period_start: '2026-03-01T05:00:00Z', monthly_tokens_used: 777, monthly_cost_used_usd: '3.000001', tokens_reserved: 40 });
    await t.db.query("UPDATE agent_quotas SET period_start = '2026-04-01T04:00:00Z' WHERE agent_id <> $1", [agent]); // others are not due
    const before = await resetPeriods(t.db, new Date('2026-04-01T03:59:59.999Z')); // 23:59:59.999 on March 31st in New York
    assert.equal(before.agents, 0);
    assert.equal((await quotaOf(agent)).monthly_tokens_used, 777);
    const [a, b] = await Promise.all([resetPeriods(t.db, new Date('2026-04-01T04:00:00Z')), resetPeriods(t.db, new Date('2026-04-01T04:00:00Z'))]);
    assert.equal(a.agents + b.agents, 1, 'exactly one of two concurrent resetters resets it');
    const q = await quotaOf(agent);
    assert.equal(q.monthly_tokens_used, 0);
    assert.equal(q.monthly_cost_used_usd, 0);
    assert.equal(q.tokens_reserved, 40, 'running tasks keep their reservations');
    assert.equal(q.period_start, '2026-04-01T04:00:00.000Z');
    const ledger = await t.db.query<{ tokens: number; cost_usd: number }>("SELECT tokens, cost_usd FROM ledger_entries WHERE entry_type = 'period_reset' AND agent_id = $1", [agent]);
    assert.deepEqual(ledger.rows, [{ tokens: -777, cost_usd: -3.000001 }]);
    await t.db.query("UPDATE tenants SET time_zone = 'UTC' WHERE id = 'default'");
  });

  it('backfill: an agent without a quota row gets the configured defaults', async () => {
    const agent = await provisionAgent(t);
    await t.db.query('DELETE FROM agent_quotas WHERE agent_id = $1', [agent]);
    assert.equal((await t.app.inject({ method: 'GET', url: `/api/agents/${agent}/quota`, headers: await t.auth('admin') })).statusCode, 404);
    assert.equal(await backfillAgentQuotas(t.db, t.config.quotaDefaults), 1);
    assert.equal(await backfillAgentQuotas(t.db, t.config.quotaDefaults), 0);
    const q = await quotaOf(agent);
    assert.equal(q.monthly_token_limit, t.config.quotaDefaults.monthlyTokenLimit);
    assert.equal(q.monthly_cost_limit_usd, t.config.quotaDefaults.monthlyCostLimitUsd);
    assert.equal(q.overage_policy, t.config.quotaDefaults.overagePolicy);
  });
});
