import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { countRows, startTestApp, type TestApp } from './support/app.js';
import { ENGINE } from './support/engine.js';

describe(`agents API and its isolation (${ENGINE})`, () => {
  let t: TestApp;
  let agentA: string;
  let agentB: string;
  before(async () => {
    t = await startTestApp();
    await t.app.inject({ method: 'POST', url: '/api/tenants', headers: await t.auth('platform_admin'), payload: { id: 'acme', name: 'Acme' } });
    agentA = (await provision({ name: 'a', model: 'gpt-4o-mini', tools: ['search'], isolation: { level: 'container', network_egress: ['api.example.com'] }, entrypoint: { command: ['node', 'agent.js'], code_dir: './agents/a' } })).json().agent.id;
    agentB = (await provision({ name: 'b', model: 'm' })).json().agent.id;
  });
  after(async () => t.close());

  async function provision(payload: object, role: 'admin' | 'operator' = 'admin', tenant = 'default') {
    return t.app.inject({ method: 'POST', url: '/api/agents/provision', headers: await t.auth(role, { tenant }), payload });
  }
  const get = async (url: string, headers: Record<string, string>) => t.app.inject({ method: 'GET', url, headers });

  it('stores the AgentConfig (model, tools, isolation, budget, policies) and what it runs', async () => {
    const res = await get(`/api/agents/${agentA}`, await t.auth('viewer'));
    assert.equal(res.statusCode, 200);
    const a = res.json().agent;
    assert.equal(a.model, 'gpt-4o-mini');
    assert.deepEqual(a.tools, ['search']);
    assert.deepEqual(a.isolation, { level: 'container', memory_mb: 512, cpu_cores: 1, filesystem_root: null, network_egress: ['api.example.com'] });
    assert.equal(a.budget.alert_threshold_percent, 80);
    assert.deepEqual(a.entrypoint, { command: ['node', 'agent.js'], code_dir: './agents/a' });
  });

  it('only admin and operator may provision', async () => {
    for (const role of ['member', 'viewer', 'agent'] as const) {
      const res = await t.app.inject({ method: 'POST', url: '/api/agents/provision', headers: await t.auth(role), payload: { name: `x-${role}`, model: 'm' } });
      assert.equal(res.statusCode, 403, role);
      assert.equal(res.json().error.code, 'forbidden');
    }
    assert.equal((await provision({ name: 'by-operator', model: 'm' }, 'operator')).statusCode, 201);
  });

  it('an agent reads itself but gets 403 for another agent and for the list', async () => {
    assert.equal((await get(`/api/agents/${agentA}`, await t.auth('agent', { sub: agentA }))).statusCode, 200);
    const other = await get(`/api/agents/${agentB}`, await t.auth('agent', { sub: agentA }));
    assert.equal(other.statusCode, 403);
    assert.equal((await get('/api/agents', await t.auth('agent', { sub: agentA }))).statusCode, 403);
  });

  it("another tenant's admin cannot see, change or delete this tenant's agents (404, nothing changes)", async () => {
    const acme = await t.auth('admin', { tenant: 'acme' });
    assert.equal((await get(`/api/agents/${agentA}`, acme)).statusCode, 404);
    assert.deepEqual((await get('/api/agents', acme)).json().agents, []);
    const patch = await t.app.inject({ method: 'PATCH', url: `/api/agents/${agentA}`, headers: acme, payload: { model: 'evil' } });
    assert.equal(patch.statusCode, 404);
    const del = await t.app.inject({ method: 'DELETE', url: `/api/agents/${agentA}`, headers: acme });
    assert.equal(del.statusCode, 404);
    assert.equal((await get(`/api/agents/${agentA}`, await t.auth('admin'))).json().agent.model, 'gpt-4o-mini');
  });

  it('an agent token of another tenant whose sub is this agent still cannot read it', async () => {
    const res = await get(`/api/agents/${agentA}`, await t.auth('agent', { sub: agentA, tenant: 'acme' }));
    assert.equal(res.statusCode, 404);
  });

  it('a workspace of another tenant cannot be used', async () => {
    const ws = (await get('/api/workspaces', await t.auth('admin', { tenant: 'acme' }))).json().workspaces[0].id;
    const res = await provision({ name: 'cross', model: 'm', workspace_id: ws });
    assert.equal(res.statusCode, 404);
  });

  it('names are unique among live agents of a tenant (409), free again after delete, and per tenant', async () => {
    const dup = await provision({ name: 'a', model: 'm' });
    assert.equal(dup.statusCode, 409);
    assert.equal(dup.json().error.code, 'agent_name_taken');
    assert.equal((await provision({ name: 'a', model: 'm' }, 'admin', 'acme')).statusCode, 201);
  });

  it('PATCH changes config and is audited with before and after', async () => {
    const res = await t.app.inject({ method: 'PATCH', url: `/api/agents/${agentB}`, headers: await t.auth('operator'), payload: { model: 'claude', max_concurrency: 4, status: 'paused' } });
    assert.equal(res.statusCode, 200, res.body);
    const a = res.json().agent;
    assert.deepEqual([a.model, a.max_concurrency, a.status], ['claude', 4, 'paused']);
    const audit = (await t.db.query<{ before: { model: string }; after: { model: string }; actor_role: string }>(`SELECT before, after, actor_role FROM audit_log WHERE action = 'agent.update' AND target_id = $1`, [agentB])).rows;
    assert.equal(audit.length, 1);
    assert.deepEqual([audit[0]!.before.model, audit[0]!.after.model, audit[0]!.actor_role], ['m', 'claude', 'operator']);
    const viewer = await t.app.inject({ method: 'PATCH', url: `/api/agents/${agentB}`, headers: await t.auth('viewer'), payload: { model: 'x' } });
    assert.equal(viewer.statusCode, 403);
  });

  it('PATCH of one nested field keeps the others (isolation and budget are merged, not reset)', async () => {
    const res = await t.app.inject({
      method: 'PATCH',
      url: `/api/agents/${agentA}`,
      headers: await t.auth('admin'),
      payload: { isolation: { memory_mb: 1024 }, budget: { max_tokens_per_day: 10 } },
    });
    assert.equal(res.statusCode, 200, res.body);
    const a = res.json().agent;
    assert.deepEqual(a.isolation, { level: 'container', memory_mb: 1024, cpu_cores: 1, filesystem_root: null, network_egress: ['api.example.com'] });
    assert.equal(a.budget.max_tokens_per_day, 10);
    assert.equal(a.budget.alert_threshold_percent, 80);
    const bad = await t.app.inject({ method: 'PATCH', url: `/api/agents/${agentA}`, headers: await t.auth('admin'), payload: { isolation: { level: 'vm' } } });
    assert.equal(bad.statusCode, 400);
  });

  it('PATCH without an entrypoint keeps a missing one SQL NULL', async () => {
    await t.app.inject({ method: 'PATCH', url: `/api/agents/${agentB}`, headers: await t.auth('admin'), payload: { description: 'no entrypoint' } });
    assert.equal(await countRows(t.db, 'agents', 'id = $1 AND entrypoint IS NULL', [agentB]), 1);
  });

  it('DELETE soft-deletes: gone from reads, row and history kept, audit-logged', async () => {
    const victim = (await provision({ name: 'doomed', model: 'm' })).json().agent.id;
    const res = await t.app.inject({ method: 'DELETE', url: `/api/agents/${victim}`, headers: await t.auth('admin') });
    assert.equal(res.statusCode, 200);
    assert.equal(res.json().agent.status, 'deleted');
    assert.equal((await get(`/api/agents/${victim}`, await t.auth('admin'))).statusCode, 404);
    assert.equal(await countRows(t.db, 'agents', 'id = $1 AND deleted_at IS NOT NULL', [victim]), 1);
    assert.equal(await countRows(t.db, 'audit_log', "action = 'agent.delete' AND target_id = $1", [victim]), 1);
    assert.equal((await t.app.inject({ method: 'DELETE', url: `/api/agents/${victim}`, headers: await t.auth('admin') })).statusCode, 404);
    assert.equal((await provision({ name: 'doomed', model: 'm' })).statusCode, 201, 'name is free again');
  });

  it('lists with keyset pagination and filters', async () => {
    for (let i = 0; i < 5; i++) await provision({ name: `page-${i}`, model: 'm' });
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const res = await get(`/api/agents?limit=2${cursor ? `&cursor=${cursor}` : ''}`, await t.auth('member'));
      assert.equal(res.statusCode, 200);
      const page = res.json();
      assert.ok(page.agents.length <= 2);
      seen.push(...page.agents.map((a: { id: string }) => a.id));
      cursor = page.next_cursor;
    } while (cursor);
    assert.equal(new Set(seen).size, seen.length, 'no agent twice');
    assert.equal(seen.length, await countRows(t.db, 'agents', "tenant_id = 'default' AND deleted_at IS NULL"));
    const paused = (await get('/api/agents?status=paused', await t.auth('member'))).json().agents;
    assert.deepEqual(paused.map((a: { id: string }) => a.id), [agentB]);
  });
});
