import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startTestApp, type TestApp } from './support/app.js';
import { ENGINE } from './support/engine.js';

describe(`tenants, workspaces and users (${ENGINE})`, () => {
  let t: TestApp;
  before(async () => (t = await startTestApp()));
  after(async () => t.close());

  it('the default tenant exists with a default workspace', async () => {
    const cur = await t.app.inject({ method: 'GET', url: '/api/tenants/current', headers: await t.auth('viewer') });
    assert.equal(cur.json().tenant.id, 'default');
    const ws = await t.app.inject({ method: 'GET', url: '/api/workspaces', headers: await t.auth('viewer') });
    assert.deepEqual(ws.json().workspaces.map((w: { name: string }) => w.name), ['default']);
  });

  it('only platform_admin lists and creates tenants; ids are validated; duplicates 409', async () => {
    const pa = await t.auth('platform_admin');
    assert.equal((await t.app.inject({ method: 'POST', url: '/api/tenants', headers: pa, payload: { id: 'globex', name: 'Globex' } })).statusCode, 201);
    const dup = await t.app.inject({ method: 'POST', url: '/api/tenants', headers: pa, payload: { id: 'globex', name: 'Globex' } });
    assert.equal(dup.statusCode, 409);
    assert.equal(dup.json().error.code, 'tenant_exists');
    assert.equal((await t.app.inject({ method: 'POST', url: '/api/tenants', headers: pa, payload: { id: 'Bad Id', name: 'x' } })).statusCode, 400);
    const list = await t.app.inject({ method: 'GET', url: '/api/tenants', headers: pa });
    assert.deepEqual(list.json().tenants.map((x: { id: string }) => x.id).sort(), ['default', 'globex']);
    for (const role of ['admin', 'operator'] as const) {
      assert.equal((await t.app.inject({ method: 'GET', url: '/api/tenants', headers: await t.auth(role) })).statusCode, 403);
      assert.equal((await t.app.inject({ method: 'POST', url: '/api/tenants', headers: await t.auth(role), payload: { id: 'x1', name: 'x' } })).statusCode, 403);
    }
  });

  it('a platform_admin acts on another tenant with x-fabric-tenant; nobody else may', async () => {
    const pa = { ...(await t.auth('platform_admin')), 'x-fabric-tenant': 'globex' };
    const res = await t.app.inject({ method: 'POST', url: '/api/agents/provision', headers: pa, payload: { name: 'g', model: 'm' } });
    assert.equal(res.statusCode, 201);
    assert.equal(res.json().agent.tenant_id, 'globex');
    const admin = { ...(await t.auth('admin')), 'x-fabric-tenant': 'globex' };
    assert.equal((await t.app.inject({ method: 'GET', url: '/api/agents', headers: admin })).statusCode, 403);
    const missing = { ...(await t.auth('platform_admin')), 'x-fabric-tenant': 'nope' };
    assert.equal((await t.app.inject({ method: 'GET', url: '/api/agents', headers: missing })).json().error.code, 'tenant_not_found');
  });

  it('a token for a tenant that does not exist is refused', async () => {
    const res = await t.app.inject({ method: 'GET', url: '/api/agents', headers: await t.auth('admin', { tenant: 'ghost' }) });
    assert.equal(res.statusCode, 403);
    assert.equal(res.json().error.code, 'tenant_not_found');
  });

  it('admins create workspaces and users with roles; users are per tenant', async () => {
    const admin = await t.auth('admin');
    const ws = await t.app.inject({ method: 'POST', url: '/api/workspaces', headers: admin, payload: { name: 'research' } });
    assert.equal(ws.statusCode, 201);
    assert.equal((await t.app.inject({ method: 'POST', url: '/api/workspaces', headers: admin, payload: { name: 'research' } })).statusCode, 409);
    const user = await t.app.inject({ method: 'POST', url: '/api/users', headers: admin, payload: { email: 'Ops@Example.com', role: 'operator' } });
    assert.equal(user.statusCode, 201);
    assert.equal(user.json().user.email, 'ops@example.com');
    const dup = await t.app.inject({ method: 'POST', url: '/api/users', headers: admin, payload: { email: 'ops@example.com', role: 'viewer' } });
    assert.equal(dup.statusCode, 409);
    const id = user.json().user.id;
    assert.equal((await t.app.inject({ method: 'GET', url: `/api/users/${id}`, headers: await t.auth('operator') })).statusCode, 200);
    assert.equal((await t.app.inject({ method: 'GET', url: `/api/users/${id}`, headers: await t.auth('admin', { tenant: 'globex' }) })).statusCode, 404);
    assert.equal((await t.app.inject({ method: 'POST', url: '/api/users', headers: await t.auth('operator'), payload: { email: 'x@example.com', role: 'admin' } })).statusCode, 403);
    // an agent owned by this user spends against the user's budget later; the owner must be of the same tenant
    const owned = await t.app.inject({ method: 'POST', url: '/api/agents/provision', headers: admin, payload: { name: 'owned', model: 'm', owner_user_id: id, workspace_id: ws.json().workspace.id } });
    assert.equal(owned.statusCode, 201, owned.body);
    const foreign = await t.app.inject({ method: 'POST', url: '/api/agents/provision', headers: await t.auth('admin', { tenant: 'globex' }), payload: { name: 'o2', model: 'm', owner_user_id: id } });
    assert.equal(foreign.statusCode, 404);
  });
});
