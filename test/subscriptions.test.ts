import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { countRows, type TestApp } from './support/app.js';
import { meter, newTenant, startBillingApp } from './support/billing.js';
import { ENGINE } from './support/engine.js';
import type { ManualClock } from '../src/clock/index.js';

describe(`plans and subscriptions (${ENGINE})`, () => {
  let t: TestApp;
  let clock: ManualClock;
  before(async () => {
    ({ t, clock } = await startBillingApp('2026-03-16T12:00:00Z'));
  });
  after(async () => t?.close());

  it('ships the tiers of managed-execution-prd §5.2 as the example plans', async () => {
    const res = await t.app.inject({ method: 'GET', url: '/api/plans', headers: await t.auth('viewer') });
    assert.equal(res.statusCode, 200);
    const plans = res.json().plans as { id: string; name: string; entitlements: { remote_execution: boolean; max_concurrency: number | null }; dimensions: Record<string, { included: number | null; included_unit: string }>; self_service: boolean }[];
    assert.deepEqual(plans.map((p) => p.name), ['Free', 'Plus', 'Pro', 'Max', 'Enterprise']);
    const by = Object.fromEntries(plans.map((p) => [p.id, p]));
    assert.equal(by.free!.entitlements.remote_execution, false, 'Free: no server sandbox execution');
    assert.equal(by.plus!.entitlements.remote_execution, false, 'Plus: no server sandbox execution');
    assert.equal(by.pro!.entitlements.remote_execution, true);
    assert.equal(by.max!.entitlements.remote_execution, true);
    assert.equal(by.enterprise!.entitlements.max_concurrency, null, 'Enterprise: no concurrency cap');
    assert.equal(by.enterprise!.dimensions.tokens!.included, null, 'Enterprise: unlimited');
    assert.equal(by.enterprise!.self_service, false);
    assert.equal(by.pro!.dimensions.compute!.included_unit, 'sandbox seconds');
    assert.ok(by.max!.dimensions.compute!.included! > by.pro!.dimensions.compute!.included!);
  });

  it('only a platform_admin creates and changes plans; bad terms are a 400', async () => {
    const plan = {
      id: 'team',
      name: 'Team',
      base_fee_micros: 99_000_000,
      dimensions: {
        tokens: { included: 1000, overage_rate_micros: 3000 },
        compute: { included: 60, overage_rate_micros: 100 },
        artifacts: { included: 10, overage_rate_micros: 50_000 },
        storage: { included: null, overage_rate_micros: 0 },
      },
      entitlements: { remote_execution: true, max_concurrency: 3, web_refactor: true },
    };
    const asAdmin = await t.app.inject({ method: 'POST', url: '/api/plans', headers: await t.auth('admin'), payload: plan });
    assert.equal(asAdmin.statusCode, 403);
    const created = await t.app.inject({ method: 'POST', url: '/api/plans', headers: await t.auth('platform_admin'), payload: plan });
    assert.equal(created.statusCode, 201, created.body);
    assert.equal(created.json().plan.entitlements.web_refactor, true);
    const again = await t.app.inject({ method: 'POST', url: '/api/plans', headers: await t.auth('platform_admin'), payload: plan });
    assert.equal(again.statusCode, 409);
    assert.equal(again.json().error.code, 'plan_exists');
    const bad = await t.app.inject({
      method: 'POST',
      url: '/api/plans',
      headers: await t.auth('platform_admin'),
      payload: { ...plan, id: 'bad', dimensions: { ...plan.dimensions, tokens: { included: 10, overage_rate_micros: 0.5 } } },
    });
    assert.equal(bad.statusCode, 400, 'rates are integer micro-USD');
    const patched = await t.app.inject({ method: 'PATCH', url: '/api/plans/team', headers: await t.auth('platform_admin'), payload: { base_fee_micros: 89_000_000 } });
    assert.equal(patched.statusCode, 200);
    assert.equal(patched.json().plan.base_fee_micros, 89_000_000);
    assert.equal(patched.json().plan.dimensions.tokens.included, 1000, 'untouched terms stay');
    const missing = await t.app.inject({ method: 'PATCH', url: '/api/plans/nope', headers: await t.auth('platform_admin'), payload: { name: 'x' } });
    assert.equal(missing.statusCode, 404);
  });

  it('a tenant that never subscribed is unrestricted (the self-hosted default)', async () => {
    const tn = await newTenant(t, 'nosub');
    const agent = await tn.agent({ isolation: { level: 'container' }, max_concurrency: 50 });
    assert.equal((await tn.submit(agent)).statusCode, 201);
    const sub = await tn.call('viewer', 'GET', '/api/subscription');
    assert.deepEqual(sub.json(), { subscription: null, plan_id: null, entitlements: null });
  });

  it('lifecycle: create, change plan, suspend (403 subscription_inactive), resume, cancel (accepted until period end, refused after, usage kept), subscribe again', async () => {
    clock.set(new Date('2026-03-16T12:00:00Z'));
    const tn = await newTenant(t, 'life');
    const agent = await tn.agent();

    const created = await tn.call('admin', 'POST', '/api/subscription', { plan_id: 'pro' });
    assert.equal(created.statusCode, 201, created.body);
    assert.equal(created.json().subscription.status, 'active');
    assert.equal(created.json().subscription.plan_id, 'pro');
    const twice = await tn.call('admin', 'POST', '/api/subscription', { plan_id: 'plus' });
    assert.equal(twice.statusCode, 409);
    assert.equal(twice.json().error.code, 'subscription_exists');
    assert.equal((await tn.call('operator', 'POST', '/api/subscription', { plan_id: 'plus' })).statusCode, 403, 'only the tenant admin subscribes');
    const unknown = await tn.call('admin', 'PATCH', '/api/subscription', { plan_id: 'platinum' });
    assert.equal(unknown.statusCode, 404);

    const changed = await tn.call('admin', 'PATCH', '/api/subscription', { plan_id: 'max' });
    assert.equal(changed.statusCode, 200);
    assert.equal(changed.json().subscription.plan_id, 'max');
    const ent = await tn.call('admin', 'PATCH', '/api/subscription', { plan_id: 'enterprise' });
    assert.equal(ent.statusCode, 403);
    assert.equal(ent.json().error.code, 'plan_not_self_service');
    assert.equal((await tn.call('viewer', 'GET', '/api/subscription')).json().plan_id, 'max');

    assert.equal((await tn.call('admin', 'POST', '/api/subscription/suspend')).statusCode, 403, 'a tenant admin cannot suspend (nor resume) itself');
    const suspended = await tn.call('platform_admin', 'POST', '/api/subscription/suspend');
    assert.equal(suspended.statusCode, 200);
    assert.equal(suspended.json().subscription.status, 'suspended');
    const refused = await tn.submit(agent);
    assert.equal(refused.statusCode, 403);
    assert.equal(refused.json().error.code, 'subscription_inactive');
    assert.match(refused.json().error.message, /suspended/);
    const resumed = await tn.call('platform_admin', 'POST', '/api/subscription/resume');
    assert.equal(resumed.json().subscription.status, 'active');
    assert.equal((await tn.submit(agent)).statusCode, 201);

    const cancelled = await tn.call('admin', 'POST', '/api/subscription/cancel');
    assert.equal(cancelled.statusCode, 200);
    assert.equal(cancelled.json().subscription.status, 'cancelled');
    assert.equal(cancelled.json().subscription.ends_at, '2026-04-01T00:00:00.000Z', 'the end of the billing period');
    assert.equal((await tn.submit(agent)).statusCode, 201, 'accepted until the period ends');
    await meter(t, [{ tenant_id: 'life', agent_id: agent, dimension: 'tokens', quantity: 1234, cost_micros: 567, period_start: '2026-03-01T00:00:00Z' }]);
    clock.set(new Date('2026-03-31T23:59:59.999Z'));
    assert.equal((await tn.submit(agent)).statusCode, 201);
    clock.set(new Date('2026-04-01T00:00:00Z'));
    const ended = await tn.submit(agent);
    assert.equal(ended.statusCode, 403);
    assert.equal(ended.json().error.code, 'subscription_inactive');
    assert.match(ended.json().error.message, /POST \/api\/subscription/);

    const report = await tn.call('viewer', 'GET', '/api/usage?period=previous');
    assert.equal(report.statusCode, 200);
    const tokens = report.json().dimensions.find((d: { dimension: string }) => d.dimension === 'tokens');
    assert.equal(tokens.consumed, 1234, 'usage data is kept after the subscription ended');
    assert.equal(tokens.cost_micros, 567);
    assert.equal(report.json().plan.id, 'max');
    assert.equal(await countRows(t.db, 'tasks', "tenant_id = 'life'"), 3, 'the three accepted tasks are kept');

    const again = await tn.call('admin', 'POST', '/api/subscription', { plan_id: 'plus' });
    assert.equal(again.statusCode, 201);
    assert.equal(again.json().subscription.status, 'active');
    assert.equal(again.json().subscription.id, created.json().subscription.id, 'the same subscription, reactivated');
    assert.equal((await tn.submit(agent)).statusCode, 201);
    assert.ok((await countRows(t.db, 'audit_log', "tenant_id = 'life' AND action LIKE 'subscription.%'")) >= 6, 'every change is audited');
    assert.equal(await countRows(t.db, 'system_events', "tenant_id = 'life' AND event_type = 'subscription.cancelled'"), 1);
  });

  it('cancelling a suspended subscription ends it at once', async () => {
    clock.set(new Date('2026-03-10T00:00:00Z'));
    const tn = await newTenant(t, 'suspcancel');
    const agent = await tn.agent();
    await tn.call('admin', 'POST', '/api/subscription', { plan_id: 'plus' });
    await tn.call('platform_admin', 'POST', '/api/subscription/suspend');
    const c = await tn.call('admin', 'POST', '/api/subscription/cancel');
    assert.equal(c.json().subscription.ends_at, '2026-03-10T00:00:00.000Z');
    assert.equal((await tn.submit(agent)).json().error.code, 'subscription_inactive');
  });

  it('403 ENTITLEMENT_INSUFFICIENT: remote_execution for process/container tasks, max_concurrency at provision, patch and submit', async () => {
    clock.set(new Date('2026-03-16T12:00:00Z'));
    const tn = await newTenant(t, 'ent');
    const sandboxed = await tn.agent({ isolation: { level: 'process' }, max_concurrency: 1 });
    const local = await tn.agent();
    await tn.call('admin', 'POST', '/api/subscription', { plan_id: 'free' });

    const before = await countRows(t.db, 'tasks', "tenant_id = 'ent'");
    const refused = await tn.submit(sandboxed);
    assert.equal(refused.statusCode, 403);
    assert.equal(refused.json().error.code, 'ENTITLEMENT_INSUFFICIENT');
    assert.equal(refused.json().error.entitlement, 'remote_execution');
    assert.deepEqual(refused.json().error.upgrade_plans, ['pro', 'team', 'max', 'enterprise'], 'the upgrade path: plans with it, cheapest first');
    const batch = await tn.call('admin', 'POST', '/api/tasks/batch', { tasks: [{ agent_id: local, type: 'x' }, { agent_id: sandboxed, type: 'y' }] });
    assert.equal(batch.statusCode, 403, 'one task lacking the entitlement refuses the batch');
    assert.equal(await countRows(t.db, 'tasks', "tenant_id = 'ent'"), before, 'nothing stored');
    assert.equal((await tn.submit(local)).statusCode, 201, 'isolation none runs on Free');

    const tooWide = await tn.call('admin', 'POST', '/api/agents/provision', { name: 'wide', model: 'm', isolation: { level: 'none' }, max_concurrency: 2 });
    assert.equal(tooWide.statusCode, 403);
    assert.equal(tooWide.json().error.code, 'ENTITLEMENT_INSUFFICIENT');
    assert.equal(tooWide.json().error.entitlement, 'max_concurrency');
    assert.equal(await countRows(t.db, 'agents', "tenant_id = 'ent' AND name = 'wide'"), 0);
    assert.equal((await tn.call('admin', 'PATCH', `/api/agents/${local}`, { max_concurrency: 3 })).json().error.code, 'ENTITLEMENT_INSUFFICIENT');

    await tn.call('admin', 'PATCH', '/api/subscription', { plan_id: 'pro' });
    assert.equal((await tn.submit(sandboxed)).statusCode, 201, 'Pro has remote_execution');
    assert.equal((await tn.call('admin', 'PATCH', `/api/agents/${local}`, { max_concurrency: 4 })).statusCode, 200);
    assert.equal((await tn.call('admin', 'PATCH', `/api/agents/${local}`, { max_concurrency: 5 })).statusCode, 403);

    await tn.call('admin', 'PATCH', '/api/subscription', { plan_id: 'plus' });
    const downgraded = await tn.submit(local);
    assert.equal(downgraded.statusCode, 403, 'after a downgrade an agent above the cap cannot take tasks');
    assert.equal(downgraded.json().error.entitlement, 'max_concurrency');
    assert.match(downgraded.json().error.message, /lower it to 2/);
  });

  it('billing subject: resolved from the workspace at submission, stored with the task, never changed', async () => {
    const tn = await newTenant(t, 'subject');
    const ws = await tn.call('admin', 'POST', '/api/workspaces', { name: 'personal', billing_subject: 'USER' });
    assert.equal(ws.statusCode, 201, ws.body);
    assert.equal(ws.json().workspace.billing_subject, 'USER');
    const personal = await tn.agent({ workspace_id: ws.json().workspace.id });
    const org = await tn.agent();
    const a = (await tn.submit(personal)).json().task.id;
    const b = (await tn.submit(org)).json().task.id;
    const subjectOf = async (id: string) => (await t.db.query<{ s: string }>('SELECT billing_subject AS s FROM tasks WHERE id = $1', [id])).rows[0]!.s;
    assert.equal(await subjectOf(a), 'USER');
    assert.equal(await subjectOf(b), 'ORG', 'workspaces default to ORG');
    const shown = await tn.call('viewer', 'GET', `/api/tasks/${a}`);
    assert.equal(shown.json().task.billing_subject, 'USER', 'the API shows it with the task');

    const flipped = await tn.call('admin', 'PATCH', `/api/workspaces/${ws.json().workspace.id}`, { billing_subject: 'ORG' });
    assert.equal(flipped.json().workspace.billing_subject, 'ORG');
    assert.equal((await tn.call('operator', 'PATCH', `/api/workspaces/${ws.json().workspace.id}`, { billing_subject: 'USER' })).statusCode, 403);
    const c = (await tn.submit(personal)).json().task.id;
    assert.equal(await subjectOf(c), 'ORG', 'new tasks take the new setting');
    assert.equal(await subjectOf(a), 'USER', 'submitted tasks keep theirs');

    await assert.rejects(t.db.query(`UPDATE tasks SET billing_subject = 'ORG' WHERE id = $1`, [a]), /billing_subject_immutable/);
    await assert.rejects(t.db.query(`UPDATE tasks SET billing_subject = NULL WHERE id = $1`, [a]), /billing_subject_immutable/);
    await t.db.query(`UPDATE tasks SET status = 'cancelled', billing_subject = 'USER' WHERE id = $1`, [a]);
    assert.equal(await subjectOf(a), 'USER', 'other updates of the row go through');
  });
});

describe(`a default plan for tenants without a subscription (${ENGINE})`, () => {
  let t: TestApp;
  before(async () => {
    ({ t } = await startBillingApp('2026-03-16T12:00:00Z', { defaultPlan: 'free' }));
  });
  after(async () => t?.close());

  it('FABRIC_BILLING_DEFAULT_PLAN=free: a tenant that never subscribed gets Free\'s entitlements and pricing', async () => {
    const tn = await newTenant(t, 'implicit');
    const sandboxed = await tn.agent({ isolation: { level: 'container' } });
    const refused = await tn.submit(sandboxed);
    assert.equal(refused.statusCode, 403);
    assert.equal(refused.json().error.code, 'ENTITLEMENT_INSUFFICIENT');
    const sub = (await tn.call('viewer', 'GET', '/api/subscription')).json();
    assert.equal(sub.subscription, null);
    assert.equal(sub.plan_id, 'free');
    assert.equal(sub.entitlements.remote_execution, false);
    const report = (await tn.call('viewer', 'GET', '/api/usage')).json();
    assert.equal(report.plan.id, 'free');
    assert.equal(report.dimensions.find((d: { dimension: string }) => d.dimension === 'artifacts').included, 90);
  });
});
