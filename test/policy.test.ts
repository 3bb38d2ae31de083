import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { createTokenVerifier } from '../src/auth/index.js';
import { openPostgres } from '../src/db/index.js';
import { buildApp } from '../src/http/index.js';
import { checkModelUse, PolicyEngine, policySubmitHook } from '../src/policy/index.js';
import { AgentScheduler } from '../src/queue/index.js';
import { EgressProxy } from '../src/sandbox/egress/index.js';
import { countRows, startTestApp, tokenOptions, type TestApp } from './support/app.js';
import { ENGINE, pgUrl } from './support/engine.js';
import { provisionAgent, recordingNotifier, submit } from './support/queue.js';

describe(`policies and approvals (${ENGINE})`, () => {
  let t: TestApp;
  let engine: PolicyEngine;
  const notifier = recordingNotifier();

  before(async () => {
    t = await startTestApp({
      withDb: (db) => {
        engine = new PolicyEngine({ db, notifier, decisionLog: { flushMs: 20 } });
        return { policies: engine, queue: { onSubmit: [policySubmitHook(engine)] } };
      },
    });
  });
  after(async () => {
    await engine?.close();
    await t?.close();
  });

  const admin = () => t.auth('admin');
  /** The test database through connections of its own, as a second process would have them (PostgreSQL). */
  const secondConnection = () => openPostgres({ url: pgUrl(t.db.name!), poolSize: 2, connectTimeoutMs: 5000, statementTimeoutMs: 30_000 });
  const createPolicy = async (body: Record<string, unknown>) => {
    const res = await t.app.inject({ method: 'POST', url: '/api/policies', headers: await admin(), payload: body });
    assert.equal(res.statusCode, 201, res.body);
    return res.json().policy as { id: string; version: number };
  };
  const check = async (agentId: string, body: Record<string, unknown>) => {
    const res = await t.app.inject({ method: 'POST', url: '/api/policy/check', headers: await t.auth('agent', { sub: agentId }), payload: body });
    assert.equal(res.statusCode, 200, res.body);
    return res.json();
  };

  it('creates, reads, versions and audits policies; refuses bad ones with a stable code', async () => {
    const agent = await provisionAgent(t);
    const p = await createPolicy({ name: 'crud', scope: { type: 'agent', id: agent }, rules: [{ action_pattern: 'tool.call', effect: 'deny' }] });
    assert.equal(p.version, 1);
    const put = await t.app.inject({ method: 'PUT', url: `/api/policies/${p.id}`, headers: await admin(), payload: { rules: [{ action_pattern: 'tool.call', effect: 'allow' }], version: 1 } });
    assert.equal(put.statusCode, 200, put.body);
    assert.equal(put.json().policy.version, 2);
    const stale = await t.app.inject({ method: 'PUT', url: `/api/policies/${p.id}`, headers: await admin(), payload: { priority: 3, version: 1 } });
    assert.equal(stale.statusCode, 409);
    assert.equal(stale.json().error.code, 'policy_version_conflict');
    const audit = await t.db.query<{ action: string; actor_sub: string }>(`SELECT action, actor_sub FROM audit_log WHERE target_id = $1 ORDER BY id`, [p.id]);
    assert.deepEqual(audit.rows.map((r) => r.action), ['policy.create', 'policy.update']);
    assert.equal(audit.rows[1]!.actor_sub, 'test-admin');
    const dup = await t.app.inject({ method: 'POST', url: '/api/policies', headers: await admin(), payload: { name: 'crud', rules: [] } });
    assert.equal(dup.json().error.code, 'policy_exists');
    const badScope = await t.app.inject({ method: 'POST', url: '/api/policies', headers: await admin(), payload: { name: 'x', scope: { type: 'workspace' }, rules: [] } });
    assert.equal(badScope.statusCode, 400);
    assert.equal(badScope.json().error.code, 'invalid_scope');
    const badTz = await t.app.inject({ method: 'POST', url: '/api/policies', headers: await admin(), payload: { name: 'y', rules: [{ action_pattern: '*', effect: 'deny', conditions: { time: { tz: 'Mars/Base' } } }] } });
    assert.equal(badTz.json().error.code, 'invalid_time_zone');
    const operator = await t.app.inject({ method: 'POST', url: '/api/policies', headers: await t.auth('operator'), payload: { name: 'z', rules: [] } });
    assert.equal(operator.statusCode, 403);
    const del = await t.app.inject({ method: 'DELETE', url: `/api/policies/${p.id}`, headers: await admin() });
    assert.equal(del.statusCode, 200);
  });

  it('path and command deny lists through /api/policy/check, every decision logged with its rule and latency', async () => {
    const agent = await provisionAgent(t);
    const p = await createPolicy({
      name: 'fs-and-shell',
      scope: { type: 'agent', id: agent },
      rules: [
        { action_pattern: 'fs.write', effect: 'allow', conditions: { resource: '/workspace/*' }, priority: 10 },
        { action_pattern: 'fs.write', effect: 'deny', reason: 'Agents write only under /workspace.' },
        { action_pattern: 'shell.exec', effect: 'deny', conditions: { resource: ['rm -rf *', 'curl * | sh'] } },
      ],
    });
    const ok = await check(agent, { action: 'fs.write', resource: '/workspace/out/report.md' });
    assert.deepEqual([ok.decision, ok.policy_id, ok.rule.index], ['allow', p.id, 0]);
    const escape = await check(agent, { action: 'fs.write', resource: '/workspace/../etc/passwd' });
    assert.deepEqual([escape.decision, escape.rule.index, escape.reason], ['deny', 1, 'Agents write only under /workspace.']);
    const rm = await check(agent, { action: 'shell.exec', resource: 'rm  -rf /' });
    assert.equal(rm.decision, 'deny');
    assert.equal(rm.rule.index, 2);
    const ls = await check(agent, { action: 'shell.exec', resource: 'ls -la' });
    assert.deepEqual([ls.decision, ls.policy_id, ls.rule], ['allow', null, null]);

    const log = await t.app.inject({ method: 'GET', url: `/api/policy/decisions?agent_id=${agent}`, headers: await admin() });
    assert.equal(log.statusCode, 200, log.body);
    const rows = log.json().decisions as { decision: string; resource: string; rule: number | null; latency_ms: number; door: string; policy_version: number }[];
    assert.deepEqual(rows.map((r) => r.decision), ['allow', 'deny', 'deny', 'allow']);
    assert.equal(rows[2]!.resource, '/etc/passwd', 'the normalized resource is logged');
    assert.ok(rows.every((r) => r.door === 'api' && r.latency_ms >= 0));
    const denies = await t.app.inject({ method: 'GET', url: `/api/policy/decisions?agent_id=${agent}&decision=deny&since=${encodeURIComponent(new Date(Date.now() - 60_000).toISOString())}`, headers: await admin() });
    assert.equal(denies.json().decisions.length, 2);
    const own = await t.app.inject({ method: 'GET', url: '/api/policy/decisions', headers: await t.auth('agent', { sub: agent }) });
    assert.equal(own.json().decisions.length, 4, 'an agent sees its own decisions');
    const metrics = await t.app.inject({ method: 'GET', url: '/metrics' });
    assert.match(metrics.body, /agent_fabric_policy_decisions_total\{decision="deny"\} \d+/);
  });

  it('task.submit refused with 403 policy_violation (and approval_required), nothing stored; idempotent submits too', async () => {
    const agent = await provisionAgent(t);
    await createPolicy({
      name: 'submits',
      scope: { type: 'agent', id: agent },
      rules: [
        { action_pattern: 'task.submit', effect: 'deny', conditions: { resource: 'wipe-*' } },
        { action_pattern: 'task.submit', effect: 'require_approval', conditions: { resource: 'deploy' }, approvers: { users: ['alice'], roles: [] } },
      ],
    });
    const before = await countRows(t.db, 'tasks');
    const denied = await submit(t, { agent_id: agent, type: 'wipe-db' });
    assert.equal(denied.statusCode, 403);
    assert.equal(denied.json().error.code, 'policy_violation');
    assert.equal(denied.json().error.decision, 'deny');
    const keyed = await submit(t, { agent_id: agent, type: 'wipe-all' }, { 'idempotency-key': `k-${agent}` });
    assert.equal(keyed.statusCode, 403);
    assert.equal(keyed.json().error.code, 'policy_violation');
    assert.equal(await countRows(t.db, 'tasks'), before);
    assert.equal((await submit(t, { agent_id: agent, type: 'summarise' })).statusCode, 201);

    const gated = await submit(t, { agent_id: agent, type: 'deploy' });
    assert.equal(gated.statusCode, 403);
    assert.equal(gated.json().error.code, 'approval_required');
    const approvalId = gated.json().error.approval_id as string;
    const ok = await t.app.inject({ method: 'POST', url: `/api/approvals/${approvalId}/decision`, headers: await t.auth('member', { sub: 'alice' }), payload: { approve: true } });
    assert.equal(ok.statusCode, 200, ok.body);
    assert.equal((await submit(t, { agent_id: agent, type: 'deploy' })).statusCode, 201, 'the approval lets the submit through once');
    assert.equal((await submit(t, { agent_id: agent, type: 'deploy' })).json().error.code, 'approval_required');
  });

  it('approval round trip: pending list, notified approvers, a non-approver refused, long-poll wakes on approve, used once; rejection; expiry denies', async () => {
    const agent = await provisionAgent(t);
    await createPolicy({
      name: 'deploys',
      scope: { type: 'tenant' },
      rules: [
        { action_pattern: 'tool.call', effect: 'require_approval', conditions: { resource: 'deploy', agent: { id: agent } }, approvers: { users: ['alice'], roles: ['operator'] } },
        { action_pattern: 'tool.call', effect: 'require_approval', conditions: { resource: 'quick', agent: { id: agent } }, approval_expires_seconds: 1 },
      ],
    });
    const first = await check(agent, { action: 'tool.call', resource: 'deploy', context: { service: 'web' }, task_id: '00000000-0000-4000-8000-000000000001' });
    assert.equal(first.decision, 'require_approval');
    const id = first.approval.id as string;
    assert.equal(first.approval.status, 'pending');
    assert.equal(first.approval.task_id, '00000000-0000-4000-8000-000000000001');
    const again = await check(agent, { action: 'tool.call', resource: 'deploy', context: { service: 'web' } });
    assert.equal(again.approval.id, id, 'asking again finds the same pending request');
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(notifier.alerts.filter((a) => a.fields?.approval_id === id).length, 1, 'approvers are told once');

    const pending = await t.app.inject({ method: 'GET', url: '/api/approvals?status=pending', headers: await admin() });
    assert.ok(pending.json().approvals.some((a: { id: string }) => a.id === id));

    for (const [role, sub] of [['admin', 'test-admin'], ['member', 'bob']] as const) {
      const no = await t.app.inject({ method: 'POST', url: `/api/approvals/${id}/decision`, headers: await t.auth(role, { sub }), payload: { approve: true } });
      assert.equal(no.statusCode, 403, `${role} ${sub}`);
      assert.equal(no.json().error.code, 'not_an_approver');
    }
    const self = await t.app.inject({ method: 'POST', url: `/api/approvals/${id}/decision`, headers: await t.auth('agent', { sub: agent }), payload: { approve: true } });
    assert.equal(self.statusCode, 403);

    const started = Date.now();
    const waiting = t.app.inject({ method: 'GET', url: `/api/approvals/${id}?wait=10`, headers: await t.auth('agent', { sub: agent }) });
    await new Promise((r) => setTimeout(r, 200));
    const yes = await t.app.inject({ method: 'POST', url: `/api/approvals/${id}/decision`, headers: await t.auth('member', { sub: 'alice' }), payload: { approve: true, comment: 'ship it' } });
    assert.equal(yes.statusCode, 200, yes.body);
    const waited = await waiting;
    assert.equal(waited.json().approval.status, 'approved');
    assert.equal(waited.json().approval.decided_by, 'alice');
    assert.ok(Date.now() - started < 3000, 'the long-poll woke on the decision');
    const twice = await t.app.inject({ method: 'POST', url: `/api/approvals/${id}/decision`, headers: await t.auth('operator'), payload: { approve: false } });
    assert.equal(twice.json().error.code, 'approval_already_decided');

    const resumed = await check(agent, { action: 'tool.call', resource: 'deploy', context: { service: 'web' } });
    assert.equal(resumed.decision, 'allow');
    assert.equal(resumed.approval.id, id);
    assert.match(resumed.reason, /Approved by alice/);
    const used = await check(agent, { action: 'tool.call', resource: 'deploy', context: { service: 'web' } });
    assert.equal(used.decision, 'require_approval', 'an approval is used once');
    assert.notEqual(used.approval.id, id);

    const rejected = await t.app.inject({ method: 'POST', url: `/api/approvals/${used.approval.id}/decision`, headers: await t.auth('operator', { sub: 'olga' }), payload: { approve: false, comment: 'not today' } });
    assert.equal(rejected.json().approval.status, 'rejected');
    const audit = await countRows(t.db, 'audit_log', "action IN ('approval.approve', 'approval.reject')");
    assert.equal(audit, 3);

    const quick = await check(agent, { action: 'tool.call', resource: 'quick' });
    const expired = await t.app.inject({ method: 'GET', url: `/api/approvals/${quick.approval.id}?wait=5`, headers: await t.auth('agent', { sub: agent }) });
    assert.equal(expired.json().approval.status, 'expired');
    const late = await t.app.inject({ method: 'POST', url: `/api/approvals/${quick.approval.id}/decision`, headers: await admin(), payload: { approve: true } });
    assert.equal(late.statusCode, 409);
    assert.equal(late.json().error.code, 'approval_expired');

    const sse = await t.app.inject({ method: 'GET', url: `/api/approvals/${id}/events`, headers: await t.auth('agent', { sub: agent }) });
    assert.match(sse.body, /event: approval\ndata: \{"id":"[^"]+","status":"approved"/);
    const other = await provisionAgent(t);
    const hidden = await t.app.inject({ method: 'GET', url: `/api/approvals/${id}`, headers: await t.auth('agent', { sub: other }) });
    assert.equal(hidden.statusCode, 404, "another agent cannot see the request");
  });

  it('the egress proxy refuses a host the policy denies, in memory, and the decision is logged', async () => {
    const agent = await provisionAgent(t);
    await createPolicy({ name: 'egress', scope: { type: 'agent', id: agent }, rules: [{ action_pattern: 'net.connect', effect: 'deny', conditions: { resource: '*.blocked.test' }, reason: 'No paste sites.' }] });
    const taskId = '00000000-0000-4000-8000-0000000000e1';
    const check = await engine.netConnectCheck('default', agent, taskId);
    const proxy = new EgressProxy({ allow: ['paste.blocked.test', 'api.ok.test'], check, lookup: async () => ['203.0.113.7'], connectTimeoutMs: 300 });
    await proxy.listen({ port: 0 });
    const port = (proxy.address() as net.AddressInfo).port;
    const ask = (target: string) =>
      new Promise<string>((resolve) => {
        const s = net.connect(port, '127.0.0.1', () => s.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`));
        let data = '';
        s.on('data', (d) => {
          data += d.toString('latin1');
          if (data.includes('\r\n\r\n')) s.destroy();
        });
        s.on('close', () => resolve(data));
        s.on('error', () => resolve(data));
      });
    try {
      const refused = await ask('paste.blocked.test:443');
      assert.match(refused, /^HTTP\/1\.1 403/);
      assert.match(refused, /refused by policy: No paste sites\./);
      assert.equal(proxy.decisions.at(-1)?.reason, 'policy: No paste sites.');
      const notListed = await ask('other.test:443');
      assert.match(notListed, /not on this agent's network_egress allow-list/);
    } finally {
      await proxy.close();
    }
    const log = await t.app.inject({ method: 'GET', url: `/api/policy/decisions?agent_id=${agent}`, headers: await admin() });
    const rows = log.json().decisions as { door: string; decision: string; resource: string; task_id: string; context: { port: number } }[];
    assert.deepEqual(
      rows.map((r) => [r.door, r.decision, r.resource, r.context.port, r.task_id]),
      [
        ['egress', 'allow', 'other.test', 443, taskId],
        ['egress', 'deny', 'paste.blocked.test', 443, taskId],
      ],
    );
  });

  it('a change applies at once in this process and, through the database notice, in a second engine within 1 s', async () => {
    const agent = await provisionAgent(t);
    const p = await createPolicy({ name: 'live', scope: { type: 'agent', id: agent }, rules: [{ action_pattern: 'tool.call', effect: 'deny' }] });
    const second = new PolicyEngine({ db: t.db, cacheSeconds: 3600 });
    try {
      const req = { tenantId: 'default', door: 'api' as const, actor: { sub: agent, role: 'agent' }, agentId: agent, action: 'tool.call', resource: 'x' };
      assert.equal((await second.check(t.db, req)).decision, 'deny');
      await second.start();
      const put = await t.app.inject({ method: 'PUT', url: `/api/policies/${p.id}`, headers: await admin(), payload: { rules: [{ action_pattern: 'tool.call', effect: 'allow' }] } });
      assert.equal(put.statusCode, 200);
      assert.equal((await check(agent, { action: 'tool.call', resource: 'x' })).decision, 'allow', 'the API process at once');
      const started = Date.now();
      while ((await second.check(t.db, req)).decision !== 'allow' && Date.now() - started < 1000) await new Promise((r) => setTimeout(r, 20));
      assert.equal((await second.check(t.db, req)).decision, 'allow');
      assert.ok(Date.now() - started < 1000, `took ${Date.now() - started} ms`);
    } finally {
      await second.close();
    }
  });

  it(
    'a second process (its own app and connections on the same PostgreSQL database) applies a PUT within 1 s',
    { skip: ENGINE === 'pglite' ? 'PGlite is one process: its engines share the in-process NOTIFY (previous test); several processes need PostgreSQL' : false },
    async () => {
      const agent = await provisionAgent(t);
      const p = await createPolicy({ name: 'live-2', scope: { type: 'agent', id: agent }, rules: [{ action_pattern: 'model.use', effect: 'deny' }] });
      const db2 = await secondConnection();
      const app2 = await buildApp({ db: db2, config: t.config, verifyToken: createTokenVerifier(tokenOptions), scheduler: new AgentScheduler(db2) });
      try {
        const ask = async () =>
          (await app2.inject({ method: 'POST', url: '/api/policy/check', headers: await t.auth('agent', { sub: agent }), payload: { action: 'model.use', resource: 'gpt-4o' } })).json().decision as string;
        assert.equal(await ask(), 'deny');
        const put = await t.app.inject({ method: 'PUT', url: `/api/policies/${p.id}`, headers: await admin(), payload: { enabled: false } });
        assert.equal(put.statusCode, 200);
        const started = Date.now();
        while ((await ask()) !== 'allow' && Date.now() - started < 1000) await new Promise((r) => setTimeout(r, 20));
        const took = Date.now() - started;
        assert.equal(await ask(), 'allow');
        assert.ok(took < 1000, `took ${took} ms`);
      } finally {
        await app2.close();
        await db2.close();
      }
    },
  );

  it(
    'a change made while an engine\'s LISTEN connection was down applies once it is back (not after the cache time)',
    { skip: ENGINE === 'pglite' ? 'PGlite listens in-process: nothing to drop' : false },
    async () => {
      const agent = await provisionAgent(t);
      const p = await createPolicy({ name: 'gap', scope: { type: 'agent', id: agent }, rules: [{ action_pattern: 'tool.call', effect: 'deny' }] });
      const db2 = await secondConnection();
      const second = new PolicyEngine({ db: db2, cacheSeconds: 3600 });
      try {
        const req = { tenantId: 'default', door: 'api' as const, actor: { sub: agent, role: 'agent' }, agentId: agent, action: 'tool.call', resource: 'x' };
        await second.start();
        assert.equal((await second.check(db2, req)).decision, 'deny');
        // every LISTEN connection of this database dropped; the change's notice goes nowhere
        await t.db.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'agent-fabric-listen' AND datname = current_database()`);
        const put = await t.app.inject({ method: 'PUT', url: `/api/policies/${p.id}`, headers: await admin(), payload: { enabled: false } });
        assert.equal(put.statusCode, 200);
        const started = Date.now();
        while ((await second.check(db2, req)).decision !== 'allow' && Date.now() - started < 5000) await new Promise((r) => setTimeout(r, 50));
        assert.equal((await second.check(db2, req)).decision, 'allow', 'reloaded when LISTEN came back');
      } finally {
        await second.close();
        await db2.close();
      }
    },
  );
});

describe(`model.use for the gateway (${ENGINE})`, () => {
  let t: TestApp;
  let engine: PolicyEngine;
  before(async () => {
    t = await startTestApp({ withDb: (db) => ((engine = new PolicyEngine({ db, decisionLog: { flushMs: 20 } })), { policies: engine }) });
  });
  after(async () => {
    await engine?.close();
    await t?.close();
  });

  it('checkModelUse refuses a model the policy does not allow, with the policy reason, and logs door gateway', async () => {
    const agent = await provisionAgent(t);
    const created = await t.app.inject({
      method: 'POST',
      url: '/api/policies',
      headers: await t.auth('admin'),
      payload: { name: 'models', scope: { type: 'agent', id: agent }, rules: [{ action_pattern: 'model.use', effect: 'deny', conditions: { resource_not: ['gpt-4o-mini'] }, reason: 'Only gpt-4o-mini for this agent.' }] },
    });
    assert.equal(created.statusCode, 201);
    const ok = await checkModelUse(engine, t.db, { tenantId: 'default', agentId: agent }, 'gpt-4o-mini');
    assert.equal(ok.allowed, true);
    const no = await checkModelUse(engine, t.db, { tenantId: 'default', agentId: agent, taskId: '00000000-0000-4000-8000-0000000000a1' }, 'o1-preview');
    assert.equal(no.allowed, false);
    assert.match(no.reason, /Only gpt-4o-mini for this agent\./);
    await engine.log.flush();
    const rows = await t.db.query<{ door: string; decision: string }>(`SELECT door, decision FROM policy_decisions WHERE agent_id = $1 ORDER BY id`, [agent]);
    assert.deepEqual(rows.rows.map((r) => [r.door, r.decision]), [['gateway', 'allow'], ['gateway', 'deny']]);
  });
});
