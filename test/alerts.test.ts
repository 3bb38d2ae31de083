import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startAlertRuntime, type AlertRuntime } from '../src/alerts/index.js';
import { ALERT_RULE_NAMES, loadConfig, type AlertsConfig } from '../src/config/index.js';
import { openPostgres, withTransaction, type Db } from '../src/db/index.js';
import { SemanticMemoryService } from '../src/memory/semantic/index.js';
import { createNotifier } from '../src/notify/index.js';
import type { Task } from '../src/queue/index.js';
import { PermanentError, type ExecutionContext } from '../src/worker/index.js';
import { countRows, startTestApp, type TestApp } from './support/app.js';
import { fakeWebhook } from './support/budget.js';
import { ENGINE, pgUrl } from './support/engine.js';
import { slowEmbeddings, uploadFile } from './support/monitoring.js';
import { provisionAgent, scriptedExecutor, startWorker, submit, terminal, waitForTask } from './support/queue.js';

type Body = { channel: string; text: string; attachments: { color: string; title: string; text: string; fields: { title: string; value: string; short: boolean }[] }[] };
const field = (b: Body, name: string) => b.attachments[0]!.fields.find((f) => f.title === name)?.value;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe(`alert rules: fire once, stay quiet while firing, resolve when cleared (${ENGINE})`, () => {
  let t: TestApp;
  let hook: Awaited<ReturnType<typeof fakeWebhook>>;
  let worker: Awaited<ReturnType<typeof startWorker>>;
  const embeddings = slowEmbeddings(0);
  const failedOnce = new Set<string>();
  const base = loadConfig({});
  const runtimes: AlertRuntime[] = [];

  before(async () => {
    hook = await fakeWebhook();
    t = await startTestApp({
      config: { alertWebhookUrl: hook.url, metrics: { ...base.metrics, cacheMs: 0 } },
      withDb: (db) => ({ semanticMemory: new SemanticMemoryService(db, embeddings) }),
    });
    const handlers: Record<string, (task: Task, ctx: ExecutionContext) => unknown> = {
      report: (task, ctx) => {
        ctx.reportUsage({ model: 'gpt-alerts', input_tokens: (task.payload as { tokens: number }).tokens, output_tokens: 0 });
        return { ok: true };
      },
      // fails its first run, succeeds once re-driven
      flaky: (task) => {
        if (failedOnce.has(task.id)) return { ok: true };
        failedOnce.add(task.id);
        throw new Error('first run fails');
      },
      broken: () => {
        throw new PermanentError('always broken');
      },
    };
    worker = await startWorker(t, scriptedExecutor(handlers));
  });
  after(async () => {
    for (const r of runtimes) await r.stop();
    await worker?.stop(1000);
    await t?.close();
    await hook?.close();
  });

  /**
   * An evaluator on `db` with only `rule` enabled (and its overrides); ticks by hand. The ones
   * before it stop first (unless `keep`): in this one process they share the counters, so their
   * reports would count the same transactions twice — in production each process runs one.
   */
  const evaluator = async (rule: string, override: Record<string, unknown> = {}, more: Partial<AlertsConfig> = {}, db: Db = t.db, keep = false) => {
    if (!keep) for (const r of runtimes.splice(0)) await r.stop();
    const rules = Object.fromEntries(ALERT_RULE_NAMES.map((r) => [r, r === rule ? { enabled: true, ...override } : { enabled: false }]));
    const r = startAlertRuntime({ db, notifier: createNotifier({ webhookUrl: hook.url, retries: 0 }), config: { ...base.alerts, evalSeconds: 3600, ...more, rules }, schedule: false });
    runtimes.push(r);
    return r;
  };
  const bodies = (rule: string, state?: string) => (hook.bodies as Body[]).filter((b) => field(b, 'rule') === rule && (!state || field(b, 'state') === state));
  const run = async (body: Record<string, unknown>) => {
    const res = await submit(t, body);
    assert.equal(res.statusCode, 201, res.body);
    return waitForTask(t, res.json().task.id, terminal);
  };
  const list = async (qs = '', role: 'admin' | 'operator' | 'platform_admin' = 'admin', tenant?: string) => {
    const res = await t.app.inject({ method: 'GET', url: `/api/alerts${qs}`, headers: await t.auth(role, tenant ? { tenant } : {}) });
    assert.equal(res.statusCode, 200, res.body);
    return res.json().alerts as { id: string; rule: string; subject: string; state: string; value: number; threshold: number; resolved_by: string | null; tenant_id: string | null }[];
  };

  it('queue_depth: 76 waiting tasks fire one Slack-compatible warning; the 77th stays quiet; cancelling below 75 resolves it', async () => {
    const agent = await provisionAgent(t);
    await t.app.inject({ method: 'PATCH', url: `/api/agents/${agent}`, headers: await t.auth('admin'), payload: { status: 'paused' } });
    const batch = await t.app.inject({ method: 'POST', url: '/api/tasks/batch', headers: await t.auth('admin'), payload: { tasks: Array.from({ length: 76 }, () => ({ agent_id: agent, type: 'x' })) } });
    assert.equal(batch.statusCode, 201, batch.body);
    const ev = await evaluator('queue_depth');
    const first = await ev.tick();
    assert.equal(first.fired.length, 1);
    const [fired] = bodies('queue_depth', 'firing');
    assert.ok(fired, 'the webhook got the firing alert');
    assert.equal(bodies('queue_depth', 'firing').length, 1);
    // Slack's incoming-webhook shape: text, plus attachments with color, title, text and fields
    assert.equal(fired.channel, '#fleet-ops');
    assert.match(fired.text, /^\[warning\] Queue backing up \(firing\)$/);
    assert.match(fired.attachments[0]!.text, new RegExp(`Agent ${agent} has 76 tasks waiting`));
    assert.equal(fired.attachments[0]!.color, '#ECB22E');
    assert.equal(field(fired, 'agent'), agent);
    assert.equal(field(fired, 'value'), '76');
    assert.equal(field(fired, 'threshold'), '75');

    await submit(t, { agent_id: agent, type: 'x' });
    assert.equal((await ev.tick()).fired.length, 0);
    assert.equal(bodies('queue_depth', 'firing').length, 1, 'not re-sent while firing');
    const [listed] = await list('?state=firing&rule=queue_depth');
    assert.equal(listed?.subject, agent);
    assert.equal(listed?.value, 77, 'the last value seen while firing');

    for (const task of (batch.json().tasks as { id: string }[]).slice(0, 3))
      assert.equal((await t.app.inject({ method: 'POST', url: `/api/tasks/${task.id}/cancel`, headers: await t.auth('admin'), payload: {} })).statusCode, 200);
    const cleared = await ev.tick();
    assert.equal(cleared.resolved.length, 1);
    const [resolved] = bodies('queue_depth', 'resolved');
    assert.match(resolved!.text, /^\[info\] Queue backing up \(resolved\)$/);
    assert.match(resolved!.attachments[0]!.text, /resolved: the condition cleared/);
    const after = (await list('?rule=queue_depth')).find((a) => a.id === listed!.id)!;
    assert.equal(after.state, 'resolved');
    assert.equal(after.resolved_by, null);
    assert.equal((await ev.tick()).resolved.length, 0, 'resolved once');
  });

  it('tasks_dead_lettered: a dead letter fires one critical alert for the tenant; re-driving it resolves the alert', async () => {
    const agent = await provisionAgent(t);
    const ev = await evaluator('tasks_dead_lettered');
    await ev.tick();
    const task = await run({ agent_id: agent, type: 'flaky', max_retries: 0 });
    assert.equal(task.status, 'dead_lettered');
    assert.equal((await ev.tick()).fired.length, 1);
    assert.equal((await ev.tick()).fired.length, 0);
    const fired = bodies('tasks_dead_lettered', 'firing');
    assert.equal(fired.length, 1);
    assert.match(fired[0]!.text, /^\[critical\] /);
    assert.equal(field(fired[0]!, 'subject'), 'default');
    const retry = await t.app.inject({ method: 'POST', url: `/api/tasks/${task.id}/retry`, headers: await t.auth('admin'), payload: {} });
    assert.equal(retry.statusCode, 200, retry.body);
    assert.equal((await waitForTask(t, task.id, terminal)).status, 'completed');
    assert.equal((await ev.tick()).resolved.length, 1);
    assert.equal(bodies('tasks_dead_lettered', 'resolved').length, 1);
  });

  it('quota_tokens_pct: usage recorded past 80 % fires; a higher limit resolves it', async () => {
    const agent = await provisionAgent(t, { quota: { monthly_token_limit: 1000 } });
    const ev = await evaluator('quota_tokens_pct');
    assert.equal((await run({ agent_id: agent, type: 'report', payload: { tokens: 850 } })).status, 'completed');
    const { fired } = await ev.tick();
    assert.deepEqual(fired.map((a) => [a.subject, a.value, a.threshold]), [[agent, 85, 80]]);
    assert.equal((await ev.tick()).fired.length, 0);
    const put = await t.app.inject({ method: 'PUT', url: `/api/agents/${agent}/quota`, headers: await t.auth('admin'), payload: { monthly_token_limit: 10_000 } });
    assert.equal(put.statusCode, 200, put.body);
    assert.deepEqual((await ev.tick()).resolved.map((a) => a.subject), [agent]);
    assert.equal(bodies('quota_tokens_pct', 'firing').length, 1);
    assert.equal(bodies('quota_tokens_pct', 'resolved').length, 1);
  });

  it('files_storage_pct: files past 90 % of the limit fire; deleting one resolves it', async () => {
    const agent = await provisionAgent(t);
    await t.app.inject({ method: 'PUT', url: `/api/agents/${agent}/quota`, headers: await t.auth('admin'), payload: { storage_limit_bytes: 1000 } });
    const ev = await evaluator('files_storage_pct');
    const up = await uploadFile(t, agent, 950);
    assert.equal(up.statusCode, 201, up.body);
    assert.deepEqual((await ev.tick()).fired.map((a) => [a.subject, a.value]), [[agent, 95]]);
    assert.equal((await ev.tick()).fired.length, 0);
    const del = await t.app.inject({ method: 'DELETE', url: `/api/agents/${agent}/files/${up.json().file.id}`, headers: await t.auth('admin') });
    assert.ok([200, 204].includes(del.statusCode), del.body);
    assert.deepEqual((await ev.tick()).resolved.map((a) => a.subject), [agent]);
  });

  it('transactions_rollback_rate: rollbacks above 1 % of the window fire a fleet-wide page; a quiet window resolves it', async () => {
    const ev = await evaluator('transactions_rollback_rate', { min_events: 4 }, { windowSeconds: 1 });
    await ev.tick();
    for (const fail of [true, false, false, false])
      await withTransaction(t.db, async (tx) => {
        await tx.query('SELECT 1');
        if (fail) throw new Error('planned rollback');
      }).catch(() => {});
    const { fired } = await ev.tick();
    assert.equal(fired.length, 1);
    assert.equal(fired[0]!.tenant_id, null);
    assert.equal(fired[0]!.subject, 'fleet');
    assert.ok(fired[0]!.value > 1 && fired[0]!.value <= 25, `rate ${fired[0]!.value} %`);
    assert.match(bodies('transactions_rollback_rate', 'firing')[0]!.text, /^\[critical\] /);
    assert.equal((await ev.tick()).fired.length, 0);
    await sleep(1100); // the window now starts after the rollback
    assert.equal((await ev.tick()).resolved.length, 1);
  });

  it('memory_embed_latency_p99: embedding calls slower than 500 ms at p99 fire; a quiet window resolves it', async () => {
    const agent = await provisionAgent(t);
    const ev = await evaluator('memory_embed_latency_p99', { min_events: 2 }, { windowSeconds: 1 });
    await ev.tick();
    embeddings.delayMs = 600;
    try {
      for (const text of ['one slow memory', 'two slow memories'])
        assert.equal((await t.app.inject({ method: 'POST', url: `/api/agents/${agent}/memory/embed`, headers: await t.auth('admin'), payload: { text } })).statusCode, 201);
    } finally {
      embeddings.delayMs = 0;
    }
    const { fired } = await ev.tick();
    assert.equal(fired.length, 1);
    assert.ok(fired[0]!.value > 0.5 && fired[0]!.value <= 0.75, `p99 ${fired[0]!.value} s (bucket 0.5–0.75 s)`);
    await sleep(1100);
    assert.equal((await ev.tick()).resolved.length, 1);
  });

  it('error_rate_anomaly: failures well above the trailing baseline fire; a quiet window resolves it', async () => {
    const agent = await provisionAgent(t);
    const ev = await evaluator('error_rate_anomaly', { min_events: 3, threshold: 1 }, { windowSeconds: 2 });
    await ev.tick();
    await sleep(2100); // the baseline: this quiet stretch
    for (let i = 0; i < 3; i++) assert.equal((await run({ agent_id: agent, type: 'broken' })).status, 'failed');
    const { fired } = await ev.tick();
    assert.equal(fired.length, 1);
    assert.ok(fired[0]!.value > fired[0]!.threshold);
    assert.equal(bodies('error_rate_anomaly', 'firing').length, 1);
    await sleep(2100);
    assert.equal((await ev.tick()).resolved.length, 1);
  });

  it('two evaluators on one database fire and resolve once', async () => {
    const agent = await provisionAgent(t, { quota: { monthly_token_limit: 100 } });
    // on PostgreSQL the second evaluator has its own connection pool, like another API process
    const second = ENGINE === 'postgres' ? await openPostgres({ url: pgUrl(t.db.name!), poolSize: 2, connectTimeoutMs: 5000, statementTimeoutMs: 30_000 }) : t.db;
    try {
      const a = await evaluator('quota_tokens_pct');
      const b = await evaluator('quota_tokens_pct', {}, {}, second, true);
      await a.tick();
      await b.tick();
      const before = bodies('quota_tokens_pct').length;
      assert.equal((await run({ agent_id: agent, type: 'report', payload: { tokens: 95 } })).status, 'completed');
      const [ra, rb] = await Promise.all([a.tick(), b.tick()]);
      assert.equal(ra.fired.length + rb.fired.length, 1, 'one process won the insert');
      await Promise.all([a.tick(), b.tick()]);
      assert.equal(bodies('quota_tokens_pct').length, before + 1, 'one notification');
      await t.app.inject({ method: 'PUT', url: `/api/agents/${agent}/quota`, headers: await t.auth('admin'), payload: { monthly_token_limit: 100_000 } });
      const [xa, xb] = await Promise.all([a.tick(), b.tick()]);
      assert.equal(xa.resolved.length + xb.resolved.length, 1);
      assert.equal(bodies('quota_tokens_pct', 'resolved').length, bodies('quota_tokens_pct', 'firing').length);
      assert.equal(await countRows(t.db, 'alerts', "rule = 'quota_tokens_pct' AND subject = $1", [agent]), 1);
    } finally {
      if (second !== t.db) await second.close();
    }
  });

  it('GET /api/alerts is per tenant (fleet-wide alerts for platform_admin); POST /api/alerts/:id/resolve is audited and holds the rule until the condition clears', async () => {
    const agent = await provisionAgent(t);
    await t.app.inject({ method: 'PATCH', url: `/api/agents/${agent}`, headers: await t.auth('admin'), payload: { status: 'paused' } });
    const ev = await evaluator('queue_depth', { threshold: 1 });
    await t.app.inject({ method: 'POST', url: '/api/tasks/batch', headers: await t.auth('admin'), payload: { tasks: [1, 2].map(() => ({ agent_id: agent, type: 'x' })) } });
    const [alert] = (await ev.tick()).fired.filter((a) => a.subject === agent);
    assert.ok(alert);

    assert.equal((await t.app.inject({ method: 'GET', url: '/api/alerts', headers: await t.auth('viewer') })).statusCode, 403);
    assert.equal((await t.app.inject({ method: 'GET', url: '/api/alerts' })).statusCode, 401);
    assert.equal((await t.app.inject({ method: 'POST', url: '/api/tenants', headers: await t.auth('platform_admin'), payload: { id: 'other-co', name: 'Other' } })).statusCode, 201);
    assert.deepEqual(await list('', 'admin', 'other-co'), [], "another tenant sees none of this tenant's alerts");
    const mine = await list('', 'operator');
    assert.ok(mine.some((a) => a.id === alert.id));
    assert.ok(mine.every((a) => a.tenant_id === 'default'), 'fleet-wide alerts are not shown to tenant admins');
    assert.ok((await list('', 'platform_admin')).some((a) => a.tenant_id === null), 'platform_admin sees the fleet-wide ones');
    const paged = await t.app.inject({ method: 'GET', url: '/api/alerts?limit=1', headers: await t.auth('admin') });
    const next = paged.json().next_cursor as string;
    const page2 = await list(`?limit=1&cursor=${next}`);
    assert.ok(Number(page2[0]!.id) < Number(paged.json().alerts[0].id));
    assert.equal((await t.app.inject({ method: 'GET', url: '/api/alerts?cursor=bm9wZQ', headers: await t.auth('admin') })).json().error.code, 'invalid_cursor');

    const post = async (id: string, tenant?: string) =>
      t.app.inject({ method: 'POST', url: `/api/alerts/${id}/resolve`, headers: await t.auth('operator', { sub: 'op-7', ...(tenant ? { tenant } : {}) }) });
    assert.equal((await post(alert.id, 'other-co')).statusCode, 404, "another tenant's alert is not found");
    const done = await post(alert.id);
    assert.equal(done.statusCode, 200, done.body);
    assert.equal(done.json().alert.state, 'resolved');
    assert.equal(done.json().alert.resolved_by, 'op-7');
    const again = await post(alert.id);
    assert.equal(again.statusCode, 409);
    assert.equal(again.json().error.code, 'alert_already_resolved');
    assert.equal((await post('999999999')).statusCode, 404);
    const audit = await t.db.query<{ actor_sub: string; before: { state: string }; after: { state: string } }>(`SELECT actor_sub, before, after FROM audit_log WHERE action = 'alert.resolve' AND target_id = $1`, [alert.id]);
    assert.deepEqual(audit.rows.map((r) => [r.actor_sub, r.before.state, r.after.state]), [['op-7', 'firing', 'resolved']]);
    const notice = bodies('queue_depth', 'resolved').find((b) => field(b, 'alert_id') === alert.id)!;
    assert.match(notice.attachments[0]!.text, /resolved by op-7/);

    // the condition still holds: no new firing until it clears once
    const heldTick = await ev.tick();
    assert.equal(heldTick.fired.filter((a) => a.subject === agent).length, 0);
    assert.equal(heldTick.resolved.filter((a) => a.subject === agent).length, 0, 'no second resolved notice');
    const tasks = (await t.db.query<{ id: string }>(`SELECT id FROM tasks WHERE agent_id = $1 AND status = 'queued'`, [agent])).rows;
    for (const task of tasks) await t.app.inject({ method: 'POST', url: `/api/tasks/${task.id}/cancel`, headers: await t.auth('admin'), payload: {} });
    await ev.tick();
    await t.app.inject({ method: 'POST', url: '/api/tasks/batch', headers: await t.auth('admin'), payload: { tasks: [1, 2].map(() => ({ agent_id: agent, type: 'x' })) } });
    const refired = (await ev.tick()).fired.filter((a) => a.subject === agent);
    assert.equal(refired.length, 1, 'after clearing once, a new breach fires anew');
    assert.notEqual(refired[0]!.id, alert.id);
  });
});
