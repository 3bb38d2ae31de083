import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { openPostgres, type Db } from '../src/db/index.js';
import { killSwitchSubmitHook, OperatorState } from '../src/operator/index.js';
import { createLogger, logger, registry, setLogger } from '../src/telemetry/index.js';
import type { Worker } from '../src/worker/index.js';
import { startTestApp, type TestApp } from './support/app.js';
import { ENGINE, pgUrl } from './support/engine.js';
import type { Task } from '../src/queue/index.js';
import { FAST_QUEUE, scriptedExecutor, startWorker, terminal } from './support/queue.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe(`operator controls: runtime settings, kill switch, zero-telemetry (${ENGINE})`, () => {
  let t: TestApp;
  let operator: OperatorState;
  let worker: Worker | undefined;
  /** Tasks of type "gate" run until the test opens their gate (or they are cancelled). */
  const gates = new Map<string, () => void>();
  const executor = scriptedExecutor({
    echo: (task) => ({ echoed: task.payload }),
    gate: (task, ctx) =>
      new Promise((resolve, reject) => {
        gates.set(task.id, () => resolve('opened'));
        ctx.signal.addEventListener('abort', () => reject(new Error('aborted')));
      }),
  });

  before(async () => {
    t = await startTestApp({
      withDb: (db) => {
        operator = new OperatorState(db, { pollMs: 60_000 });
        return { operator, queue: { ...FAST_QUEUE, onSubmit: [killSwitchSubmitHook(operator)] } };
      },
    });
    await operator.start();
    const pa = await t.auth('platform_admin');
    for (const id of ['acme', 'globex']) assert.equal((await t.app.inject({ method: 'POST', url: '/api/tenants', headers: pa, payload: { id, name: id } })).statusCode, 201);
  });
  after(async () => {
    await worker?.stop(1000);
    await operator.close();
    await t.close();
  });

  const as = (role: Parameters<TestApp['auth']>[0], tenant = 'default') => t.auth(role, { tenant });
  const agentIn = async (tenant: string) => {
    const res = await t.app.inject({ method: 'POST', url: '/api/agents/provision', headers: await as('admin', tenant), payload: { name: `a-${Math.random().toString(36).slice(2, 8)}`, model: 'm', isolation: { level: 'none' } } });
    assert.equal(res.statusCode, 201, res.body);
    return res.json().agent.id as string;
  };
  const submitIn = async (tenant: string, agent: string, type = 'echo') =>
    t.app.inject({ method: 'POST', url: '/api/tasks', headers: await as('admin', tenant), payload: { agent_id: agent, type, payload: {} } });
  const engage = async (body: Record<string, unknown>, role: Parameters<TestApp['auth']>[0] = 'platform_admin', tenant = 'default') =>
    t.app.inject({ method: 'POST', url: '/api/admin/kill-switch', headers: await as(role, tenant), payload: body });
  const release = async (body: Record<string, unknown>, role: Parameters<TestApp['auth']>[0] = 'platform_admin', tenant = 'default') =>
    t.app.inject({ method: 'POST', url: '/api/admin/kill-switch/release', headers: await as(role, tenant), payload: body });
  /** Polls a task of `tenant` until `done` or 10 s. */
  const waitIn = async (tenant: string, id: string, done: (x: Task) => boolean): Promise<Task> => {
    const until = Date.now() + 10_000;
    for (;;) {
      const task = (await t.app.inject({ method: 'GET', url: `/api/tasks/${id}`, headers: await as('admin', tenant) })).json().task as Task;
      if (done(task) || Date.now() > until) return task;
      await sleep(50);
    }
  };
  const statusOf = async (tenant: string, id: string) =>
    (await t.db.query<{ status: string }>('SELECT status FROM tasks WHERE tenant_id = $1 AND id = $2', [tenant, id])).rows[0]!.status;
  const audits = async (action: string) =>
    (await t.db.query<{ tenant_id: string | null; actor_sub: string; before: unknown; after: unknown }>('SELECT tenant_id, actor_sub, before, after FROM audit_log WHERE action = $1 ORDER BY id', [action])).rows;

  describe('runtime settings', () => {
    it('a tenant’s settings change (validated, audited with before/after); its model-call limits and global settings need platform_admin', async () => {
      const lift = await t.app.inject({ method: 'PUT', url: '/api/admin/settings', headers: await as('admin', 'acme'), payload: { gateway_tenant_tpm: 0 } });
      assert.equal(lift.statusCode, 403, 'a tenant admin cannot lift (or set) its own model-call limits');
      assert.match(lift.json().error.message, /platform_admin/);
      const put = await t.app.inject({ method: 'PUT', url: '/api/admin/settings', headers: await as('platform_admin', 'acme'), payload: { gateway_agent_rpm: 30 } });
      assert.equal(put.statusCode, 200, put.body);
      assert.deepEqual(put.json(), { scope: 'tenant', tenant_id: 'acme', settings: { gateway_agent_rpm: 30 } });
      const again = await t.app.inject({ method: 'PUT', url: '/api/admin/settings', headers: await as('platform_admin', 'acme'), payload: { gateway_agent_rpm: 60, gateway_tenant_tpm: 1000 } });
      assert.equal(again.statusCode, 200, again.body);
      const rows = await audits('settings.update');
      assert.deepEqual(rows.at(-1), { tenant_id: 'acme', actor_sub: 'test-platform_admin', before: { gateway_agent_rpm: 30 }, after: { gateway_agent_rpm: 60, gateway_tenant_tpm: 1000 } });
      const get = await t.app.inject({ method: 'GET', url: '/api/admin/settings', headers: await as('operator', 'acme') });
      assert.equal(get.statusCode, 200);
      assert.deepEqual(get.json().tenant.settings, { gateway_agent_rpm: 60, gateway_tenant_tpm: 1000 });
      assert.equal(operator.setting('gateway_agent_rpm', 'acme'), 60, 'applied in this process at once');
      assert.equal(operator.setting('gateway_agent_rpm', 'globex'), undefined, 'other tenants keep the environment value');

      for (const [payload, code] of [
        [{ gateway_agent_rpm: -1 }, 'validation_failed'],
        [{ gateway_agent_rpm: 'fast' }, 'validation_failed'],
        [{ colour: 'red' }, 'validation_failed'],
        [{}, 'validation_failed'],
        [{ log_level: 'debug' }, 'setting_not_allowed'],
      ] as const) {
        const res = await t.app.inject({ method: 'PUT', url: '/api/admin/settings', headers: await as('admin', 'acme'), payload });
        assert.equal(res.statusCode, 400, JSON.stringify(payload));
        assert.equal(res.json().error.code, code, res.body);
        assert.ok(res.json().error.message.length > 10);
      }
      const denied = await t.app.inject({ method: 'PUT', url: '/api/admin/settings?scope=global', headers: await as('admin'), payload: { gateway_agent_rpm: 1 } });
      assert.equal(denied.statusCode, 403);
      assert.equal((await t.app.inject({ method: 'PUT', url: '/api/admin/settings', headers: await as('member'), payload: { gateway_agent_rpm: 1 } })).statusCode, 403);
      const unset = await t.app.inject({ method: 'PUT', url: '/api/admin/settings', headers: await as('platform_admin', 'acme'), payload: { gateway_agent_rpm: null, gateway_tenant_tpm: null } });
      assert.deepEqual(unset.json().settings, {});
    });

    it('a change reaches another process’s view within 1 s (NOTIFY), and log_level changes the live logger', async () => {
      // A second view on its own connection (PostgreSQL: a second pool, as another node has), polling only hourly.
      let otherDb: Db = t.db;
      if (ENGINE === 'postgres') otherDb = await openPostgres({ url: pgUrl(t.db.name!), poolSize: 2, connectTimeoutMs: 5000, statementTimeoutMs: 30_000 });
      const other = new OperatorState(otherDb, { pollMs: 3_600_000, baseLogLevel: 'info' });
      const previous = logger();
      setLogger(createLogger({ level: 'info', destination: new Writable({ write: (_c, _e, cb) => cb() }) }));
      try {
        await other.start();
        const put = await t.app.inject({ method: 'PUT', url: '/api/admin/settings?scope=global', headers: await as('platform_admin'), payload: { log_level: 'debug', gateway_tenant_rpm: 5 } });
        assert.equal(put.statusCode, 200, put.body);
        const started = Date.now();
        while (other.setting('gateway_tenant_rpm', 'globex') !== 5 && Date.now() - started < 1000) await sleep(20);
        assert.equal(other.setting('gateway_tenant_rpm', 'globex'), 5, 'the other view applied the global setting within 1 s');
        assert.equal(logger().level, 'debug', 'the process logger runs at the new level without a restart');
        assert.deepEqual((await audits('settings.update')).at(-1)!.after, { log_level: 'debug', gateway_tenant_rpm: 5 });
        await t.app.inject({ method: 'PUT', url: '/api/admin/settings?scope=global', headers: await as('platform_admin'), payload: { log_level: null, gateway_tenant_rpm: null } });
        const back = Date.now();
        while (other.setting('gateway_tenant_rpm', 'globex') !== undefined && Date.now() - back < 1000) await sleep(20);
        assert.equal(other.setting('gateway_tenant_rpm', 'globex'), undefined);
        assert.notEqual(logger().level, 'debug', 'unset: back to the configured level');
      } finally {
        await other.close();
        setLogger(previous);
        if (otherDb !== t.db) await otherDb.close();
      }
    });
  });

  describe('kill switch', () => {
    it('tenant scope: its submits are refused (503) and its queued tasks do not start; other tenants run; release resumes', async () => {
      const a = await agentIn('default');
      const b = await agentIn('acme');
      // no worker yet, so the task is still queued when the switch is engaged
      const queued = (await submitIn('default', a)).json().task.id as string;

      const res = await engage({ scope: 'tenant', tenant_id: 'default', mode: 'drain', reason: 'incident 42' }, 'admin');
      assert.equal(res.statusCode, 200, res.body);
      assert.equal(res.json().kill_switch.mode, 'drain');
      assert.equal(res.json().running_tasks_cancelled, 0);
      const refused = await submitIn('default', a);
      assert.equal(refused.statusCode, 503);
      assert.equal(refused.json().error.code, 'kill_switch_engaged');
      assert.match(refused.json().error.message, /incident 42/);
      const list = await t.app.inject({ method: 'GET', url: '/api/admin/kill-switch', headers: await as('operator') });
      assert.deepEqual(list.json().kill_switches.map((k: { scope: string; tenant_id: string }) => [k.scope, k.tenant_id]), [['tenant', 'default']]);

      worker = await startWorker(t, executor, { concurrency: 4 });
      const other = await submitIn('acme', b);
      assert.equal(other.statusCode, 201, 'another tenant is unaffected');
      assert.equal((await waitIn('acme', other.json().task.id, terminal)).status, 'completed');
      await sleep(1200);
      assert.equal(await statusOf('default', queued), 'queued', 'nothing of the tenant starts while engaged');

      const rel = await release({ scope: 'tenant' }, 'admin');
      assert.equal(rel.statusCode, 200, rel.body);
      assert.equal((await waitIn('default', queued, terminal)).status, 'completed', 'released: the queued task runs');
      assert.equal((await submitIn('default', a)).statusCode, 201);
      const again = await release({ scope: 'tenant' }, 'admin');
      assert.equal(again.statusCode, 404);
      assert.equal(again.json().error.code, 'kill_switch_not_engaged');
      const engaged = (await audits('kill_switch.engage')).at(-1)!;
      assert.equal(engaged.tenant_id, 'default');
      assert.equal(engaged.before, null);
      assert.equal((engaged.after as { reason: string }).reason, 'incident 42');
      assert.equal(((await audits('kill_switch.release')).at(-1)!.before as { mode: string }).mode, 'drain');
    });

    it('drain lets a running task finish; stop cancels it (the queue’s cancel path)', async () => {
      worker ??= await startWorker(t, executor, { concurrency: 4 });
      const a = await agentIn('globex');
      const drained = (await submitIn('globex', a, 'gate')).json().task.id as string;
      await waitIn('globex', drained, (x) => x.status === 'running');
      assert.equal((await engage({ scope: 'tenant', tenant_id: 'globex', mode: 'drain', reason: 'drain test' })).statusCode, 200);
      // engaged by a platform_admin: the tenant's own admin can neither release nor soften it
      for (const attempt of [await release({ scope: 'tenant' }, 'admin', 'globex'), await engage({ scope: 'tenant', mode: 'drain', reason: 'mine now' }, 'admin', 'globex')]) {
        assert.equal(attempt.statusCode, 403, attempt.body);
        assert.equal(attempt.json().error.code, 'kill_switch_held');
      }
      await sleep(300);
      gates.get(drained)!();
      assert.equal((await waitIn('globex', drained, terminal)).status, 'completed', 'drain: the running task finished');
      assert.equal((await release({ scope: 'tenant', tenant_id: 'globex' })).statusCode, 200);

      const stopped = (await submitIn('globex', a, 'gate')).json().task.id as string;
      await waitIn('globex', stopped, (x) => x.status === 'running');
      const res = await engage({ scope: 'tenant', tenant_id: 'globex', mode: 'stop', reason: 'stop test' });
      assert.equal(res.statusCode, 200, res.body);
      assert.equal(res.json().running_tasks_cancelled, 1);
      assert.equal((await waitIn('globex', stopped, terminal)).status, 'cancelled', 'stop: the running task was cancelled');
      assert.equal((await release({ scope: 'tenant', tenant_id: 'globex' })).statusCode, 200);
    });

    it('global scope: every tenant’s submits refused and nothing starts; only platform_admin may engage it; release resumes', async () => {
      worker ??= await startWorker(t, executor, { concurrency: 4 });
      const forbidden = await engage({ scope: 'global', mode: 'drain', reason: 'x' }, 'admin');
      assert.equal(forbidden.statusCode, 403);
      const otherTenant = await engage({ scope: 'tenant', tenant_id: 'default', mode: 'drain', reason: 'x' }, 'admin', 'acme');
      assert.equal(otherTenant.statusCode, 403, 'a tenant admin cannot stop another tenant');
      assert.equal((await engage({ scope: 'tenant', tenant_id: 'nope', mode: 'drain', reason: 'x' })).statusCode, 404);
      assert.equal((await engage({ scope: 'global', tenant_id: 'acme', mode: 'drain', reason: 'x' })).statusCode, 400);
      assert.equal((await engage({ scope: 'global', mode: 'pause', reason: 'x' })).statusCode, 400);

      const a = await agentIn('acme');
      await worker!.stop(1000);
      worker = undefined;
      const queued = (await submitIn('acme', a)).json().task.id as string;
      const res = await engage({ scope: 'global', mode: 'drain', reason: 'maintenance' });
      assert.equal(res.statusCode, 200, res.body);
      assert.equal(res.json().kill_switch.tenant_id, null);
      for (const tenant of ['default', 'acme', 'globex']) {
        const refused = await t.app.inject({ method: 'POST', url: '/api/tasks', headers: await as('admin', tenant), payload: { agent_id: a, type: 'echo' } });
        assert.equal(refused.statusCode, 503, tenant);
        assert.equal(refused.json().error.code, 'kill_switch_engaged');
      }
      const list = await t.app.inject({ method: 'GET', url: '/api/admin/kill-switch', headers: await as('admin', 'acme') });
      assert.equal(list.json().kill_switches[0].scope, 'global');
      assert.match(await registry.metrics(), /agent_fabric_kill_switches_engaged\{scope="global",mode="drain"\} 1/);
      worker = await startWorker(t, executor, { concurrency: 4 });
      await sleep(1200);
      assert.equal(await statusOf('acme', queued), 'queued', 'a global switch stops every start');
      assert.equal((await release({ scope: 'global' })).statusCode, 200);
      assert.equal((await waitIn('acme', queued, terminal)).status, 'completed');
      const engaged = (await audits('kill_switch.engage')).at(-1)!;
      assert.equal(engaged.tenant_id, null);
      assert.equal(engaged.actor_sub, 'test-platform_admin');
    });
  });

  describe('manual quota adjustment', () => {
    it("a platform_admin adjusts any tenant's agent quota (x-fabric-tenant); audited with before/after and reason; a tenant admin cannot reach another tenant's agent", async () => {
      const agent = await agentIn('globex');
      const res = await t.app.inject({
        method: 'POST',
        url: `/api/agents/${agent}/quota/adjustments`,
        headers: { ...(await as('platform_admin')), 'x-fabric-tenant': 'globex' },
        payload: { tokens_delta: 1234, reason: 'operator correction' },
      });
      assert.equal(res.statusCode, 200, res.body);
      assert.equal(res.json().quota.monthly_tokens_used, 1234);
      const row = (await audits('agent.quota.adjust')).at(-1)!;
      assert.equal(row.tenant_id, 'globex');
      assert.equal(row.actor_sub, 'test-platform_admin');
      assert.equal((row.before as { monthly_tokens_used: number }).monthly_tokens_used, 0);
      assert.equal((row.after as { monthly_tokens_used: number; reason: string }).monthly_tokens_used, 1234);
      assert.equal((row.after as { reason: string }).reason, 'operator correction');
      const other = await t.app.inject({ method: 'POST', url: `/api/agents/${agent}/quota/adjustments`, headers: await as('admin', 'acme'), payload: { tokens_delta: 1, reason: 'sneaky' } });
      assert.equal(other.statusCode, 404, 'another tenant’s agent is invisible');
    });
  });

  describe('zero-telemetry mode', () => {
    it('with the mode on, the tenant’s per-agent metric series and success access lines are gone; audit rows and refusals are kept', async () => {
      worker ??= await startWorker(t, executor, { concurrency: 4 });
      const quiet = await agentIn('acme');
      const loud = await agentIn('globex');
      const on = await t.app.inject({ method: 'PUT', url: '/api/admin/settings', headers: await as('admin', 'acme'), payload: { zero_telemetry: true } });
      assert.equal(on.statusCode, 200, on.body);
      const lines: string[] = [];
      const previous = logger();
      setLogger(createLogger({ level: 'info', destination: new Writable({ write: (c, _e, cb) => (lines.push(String(c)), cb()) }) }));
      try {
        const q = (await submitIn('acme', quiet)).json().task.id as string;
        const l = (await submitIn('globex', loud)).json().task.id as string;
        assert.equal((await waitIn('acme', q, terminal)).status, 'completed');
        assert.equal((await waitIn('globex', l, terminal)).status, 'completed');
        const denied = await t.app.inject({ method: 'PUT', url: '/api/admin/settings?scope=global', headers: await as('admin', 'acme'), payload: { zero_telemetry: true } });
        assert.equal(denied.statusCode, 403);
      } finally {
        setLogger(previous);
      }
      const metrics = await registry.metrics();
      const tasksTotal = metrics.split('\n').filter((x) => x.startsWith('agent_fabric_tasks_total{'));
      assert.deepEqual(metrics.split('\n').filter((x) => x.includes(quiet)), [], 'no metric series names the zero-telemetry tenant’s agent');
      assert.ok(tasksTotal.some((x) => x.includes('agent_id="_zero_telemetry"')), 'its tasks are still counted, without the agent');
      assert.ok(tasksTotal.some((x) => x.includes(`agent_id="${loud}"`)), 'other tenants keep per-agent series');
      const requests = lines.map((x) => JSON.parse(x) as { msg: string; tenant_id?: string; status?: number }).filter((x) => x.msg === 'request');
      assert.ok(requests.some((x) => x.tenant_id === 'globex' && x.status === 201), 'other tenants keep their access lines');
      assert.ok(!requests.some((x) => x.tenant_id === 'acme' && (x.status ?? 0) < 400), 'no success access line of the zero-telemetry tenant');
      assert.ok(requests.some((x) => x.tenant_id === 'acme' && x.status === 403), 'its refusals are kept (security)');
      const audit = (await audits('settings.update')).filter((r) => r.tenant_id === 'acme').at(-1)!;
      assert.deepEqual(audit.after, { zero_telemetry: true }, 'the audit log keeps recording the tenant');
      const events = await t.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM system_events WHERE tenant_id = 'acme' AND subject_type = 'task'`);
      assert.ok(events.rows[0]!.n > 0, 'task state (the tenant’s own data) is kept');
    });
  });
});
