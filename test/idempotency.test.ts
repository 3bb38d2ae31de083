import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { countRows, startTestApp, type TestApp } from './support/app.js';
import { ENGINE } from './support/engine.js';

describe(`idempotent creates (${ENGINE})`, () => {
  let t: TestApp;
  before(async () => {
    t = await startTestApp();
    const other = await t.app.inject({ method: 'POST', url: '/api/tenants', headers: await t.auth('platform_admin'), payload: { id: 'acme', name: 'Acme' } });
    assert.equal(other.statusCode, 201, other.body);
  });
  after(async () => t.close());

  const provision = async (key: string | undefined, payload: object, tenant = 'default') =>
    t.app.inject({
      method: 'POST',
      url: '/api/agents/provision',
      headers: { ...(await t.auth('admin', { tenant })), ...(key ? { 'idempotency-key': key } : {}) },
      payload,
    });

  it('a repeat with the same key returns the first body with 200 and creates nothing', async () => {
    const first = await provision('key-1', { name: 'idem-a', model: 'm' });
    assert.equal(first.statusCode, 201);
    const again = await provision('key-1', { model: 'm', name: 'idem-a' }); // same body, other key order
    assert.equal(again.statusCode, 200);
    assert.deepEqual(again.json(), first.json());
    assert.equal(await countRows(t.db, 'agents', "name = 'idem-a'"), 1);
    assert.equal(await countRows(t.db, 'ledger_entries', 'agent_id = $1', [first.json().agent.id]), 1);
  });

  it('the same key with a different body is 422 idempotency_key_reused', async () => {
    await provision('key-2', { name: 'idem-b', model: 'm' });
    const res = await provision('key-2', { name: 'idem-b2', model: 'm' });
    assert.equal(res.statusCode, 422);
    assert.equal(res.json().error.code, 'idempotency_key_reused');
    assert.equal(await countRows(t.db, 'agents', "name = 'idem-b2'"), 0);
  });

  it('concurrent duplicates execute once', async () => {
    const results = await Promise.all(Array.from({ length: 20 }, () => provision('key-3', { name: 'idem-c', model: 'm' })));
    const statuses = results.map((r) => r.statusCode).sort();
    assert.deepEqual(statuses, [...Array(19).fill(200), 201].sort());
    const ids = new Set(results.map((r) => r.json().agent.id));
    assert.equal(ids.size, 1);
    assert.equal(await countRows(t.db, 'agents', "name = 'idem-c'"), 1);
    assert.equal(await countRows(t.db, 'system_events', "event_type = 'agent.provisioned' AND agent_id = $1", [[...ids][0]]), 1);
  });

  it('keys are scoped per tenant', async () => {
    const a = await provision('shared-key', { name: 'idem-d', model: 'm' });
    const b = await provision('shared-key', { name: 'idem-d', model: 'm' }, 'acme');
    assert.equal(a.statusCode, 201);
    assert.equal(b.statusCode, 201);
    assert.notEqual(a.json().agent.id, b.json().agent.id);
    assert.equal(b.json().agent.tenant_id, 'acme');
  });

  it('a failed create leaves no key behind, so a retry can succeed', async () => {
    const bad = await provision('key-4', { name: 'idem-e', model: 'm', workspace_id: '00000000-0000-4000-8000-000000000000' });
    assert.equal(bad.statusCode, 404);
    assert.equal(await countRows(t.db, 'idempotency_keys', "key = 'key-4'"), 0);
    const good = await provision('key-4', { name: 'idem-e', model: 'm' });
    assert.equal(good.statusCode, 201);
  });

  it('a record past its 24 h expiry is taken over by a new request', async () => {
    await provision('key-5', { name: 'idem-f', model: 'm' });
    await t.db.query("UPDATE idempotency_keys SET expires_at = now() - interval '1 second' WHERE key = 'key-5'");
    const res = await provision('key-5', { name: 'idem-g', model: 'm' });
    assert.equal(res.statusCode, 201);
    assert.equal(res.json().agent.name, 'idem-g');
    const row = (await t.db.query<{ expires_at: Date; created_at: Date }>("SELECT expires_at, created_at FROM idempotency_keys WHERE key = 'key-5'")).rows[0]!;
    assert.equal(Math.round((row.expires_at.getTime() - row.created_at.getTime()) / 1000), 86_400);
  });

  it('without a key every request creates', async () => {
    const a = await provision(undefined, { name: 'idem-h1', model: 'm' });
    const b = await provision(undefined, { name: 'idem-h2', model: 'm' });
    assert.equal(a.statusCode, 201);
    assert.equal(b.statusCode, 201);
  });

  it('other creates (workspaces) are idempotent too', async () => {
    const headers = { ...(await t.auth('admin')), 'idempotency-key': 'ws-1' };
    const w1 = await t.app.inject({ method: 'POST', url: '/api/workspaces', headers, payload: { name: 'research' } });
    const w2 = await t.app.inject({ method: 'POST', url: '/api/workspaces', headers, payload: { name: 'research' } });
    assert.deepEqual([w1.statusCode, w2.statusCode], [201, 200]);
    assert.deepEqual(w2.json(), w1.json());
  });
});
