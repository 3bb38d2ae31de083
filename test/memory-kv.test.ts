import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { sweepExpiredMemory } from '../src/memory/index.js';
import { countRows, startTestApp, type TestApp } from './support/app.js';
import { ENGINE } from './support/engine.js';
import { provisionAgent } from './support/queue.js';

describe(`key-value memory (${ENGINE})`, () => {
  let t: TestApp;
  let a: string;
  let b: string;
  before(async () => {
    t = await startTestApp();
    a = await provisionAgent(t);
    b = await provisionAgent(t);
  });
  after(async () => t?.close());

  /** Calls the memory API as the agent itself (its own JWT) unless `as` names a role. */
  const call = async (method: 'GET' | 'PUT' | 'DELETE', agent: string, path: string, body?: unknown, as: { role?: 'admin' | 'viewer' | 'member'; agent?: string } = {}) => {
    const headers = as.role ? await t.auth(as.role) : await t.auth('agent', { sub: as.agent ?? agent });
    return t.app.inject({ method, url: `/api/agents/${agent}/memory${path}`, headers, ...(body === undefined ? {} : { payload: body as object }) });
  };

  it('PUT stores any JSON value, GET returns it with expires_at; PUT again replaces it', async () => {
    const put = await call('PUT', a, '/last_processed_lead_id', { value: { id: 4711, tags: ['x'] } });
    assert.equal(put.statusCode, 200, put.body);
    assert.deepEqual(put.json(), { key: 'last_processed_lead_id', value: { id: 4711, tags: ['x'] }, expires_at: null });
    assert.deepEqual((await call('GET', a, '/last_processed_lead_id')).json().value, { id: 4711, tags: ['x'] });
    await call('PUT', a, '/last_processed_lead_id', { value: 4712 });
    assert.equal((await call('GET', a, '/last_processed_lead_id')).json().value, 4712);
    for (const value of [null, 'text', 0, false, [1, 2]]) {
      await call('PUT', a, '/scalar', { value });
      assert.deepEqual((await call('GET', a, '/scalar')).json().value, value);
    }
  });

  it('a key with a TTL has expires_at ≈ now + ttl; after expiry a read is 404 not_found and the sweeper deletes it', async () => {
    const put = (await call('PUT', a, '/ephemeral', { value: 'soon gone', ttl_seconds: 3600 })).json();
    const ms = Date.parse(put.expires_at) - Date.now();
    assert.ok(ms > 3590_000 && ms <= 3600_000, `expires in ~1 h, got ${ms} ms`);
    await call('PUT', a, '/blink', { value: 'gone', ttl_seconds: 1 });
    assert.equal((await call('GET', a, '/blink')).statusCode, 200);
    await new Promise((r) => setTimeout(r, 1100));
    const gone = await call('GET', a, '/blink');
    assert.equal(gone.statusCode, 404);
    assert.equal(gone.json().error.code, 'not_found');
    assert.ok(!(await call('GET', a, '')).json().keys.some((k: { key: string }) => k.key === 'blink'), 'not listed either');
    assert.equal(await countRows(t.db, 'agent_memory_kv', "key = 'blink'"), 1, 'still stored until the sweep');
    assert.ok((await sweepExpiredMemory(t.db)) >= 1);
    assert.equal(await countRows(t.db, 'agent_memory_kv', "key = 'blink'"), 0);
    assert.equal(await countRows(t.db, 'agent_memory_kv', "key = 'ephemeral'"), 1, 'live keys are kept');
  });

  it("agent A's keys never appear in agent B's listing or reads; B's token on A's path is 403", async () => {
    await call('PUT', a, '/secret', { value: 'only for a' });
    await call('PUT', b, '/mine', { value: 'b' });
    const listB = (await call('GET', b, '')).json();
    assert.deepEqual(listB.keys.map((k: { key: string }) => k.key), ['mine']);
    assert.equal((await call('GET', b, '/secret')).statusCode, 404, "B's own namespace has no such key");
    for (const [method, path] of [['GET', '/secret'], ['PUT', '/secret'], ['DELETE', '/secret'], ['GET', '']] as const) {
      const res = await call(method, a, path, method === 'PUT' ? { value: 'overwrite' } : undefined, { agent: b });
      assert.equal(res.statusCode, 403, `${method} ${path} with B's token`);
    }
    assert.equal((await call('GET', a, '/secret')).json().value, 'only for a');
  });

  it("another tenant's admin, or an agent token of another tenant with this agent's id, cannot reach its memory (404)", async () => {
    await t.app.inject({ method: 'POST', url: '/api/tenants', headers: await t.auth('platform_admin'), payload: { id: 'acme', name: 'Acme' } });
    for (const headers of [await t.auth('admin', { tenant: 'acme' }), await t.auth('agent', { tenant: 'acme', sub: a })]) {
      for (const method of ['GET', 'PUT', 'DELETE'] as const) {
        const res = await t.app.inject({ method, url: `/api/agents/${a}/memory/secret`, headers, ...(method === 'PUT' ? { payload: { value: 'x' } } : {}) });
        assert.equal(res.statusCode, 404, `${method}: ${res.body}`);
      }
      assert.equal((await t.app.inject({ method: 'GET', url: `/api/agents/${a}/memory`, headers })).statusCode, 404);
    }
    assert.equal((await call('GET', a, '/secret')).json().value, 'only for a');
  });

  it('admins may set keys and TTLs for an agent (US-08); viewers may read but not write', async () => {
    assert.equal((await call('PUT', a, '/admin-set', { value: 1, ttl_seconds: 60 }, { role: 'admin' })).statusCode, 200);
    assert.equal((await call('GET', a, '/admin-set', undefined, { role: 'viewer' })).statusCode, 200);
    assert.equal((await call('PUT', a, '/admin-set', { value: 2 }, { role: 'viewer' })).statusCode, 403);
    assert.equal((await call('DELETE', a, '/admin-set', undefined, { role: 'member' })).statusCode, 403);
  });

  it('DELETE removes a key (204), a second DELETE is 404', async () => {
    await call('PUT', a, '/tmp', { value: 1 });
    assert.equal((await call('DELETE', a, '/tmp')).statusCode, 204);
    assert.equal((await call('GET', a, '/tmp')).statusCode, 404);
    assert.equal((await call('DELETE', a, '/tmp')).statusCode, 404);
  });

  it('lists keys by prefix in byte order with keyset pagination; reserved characters work URL-encoded', async () => {
    const c = await provisionAgent(t);
    const keys = ['lead/001', 'lead/002', 'lead/003', 'lead/010', 'leader', 'other', 'ünïcode ✓'];
    for (const k of keys) assert.equal((await call('PUT', c, `/${encodeURIComponent(k)}`, { value: k })).statusCode, 200);
    assert.equal((await call('GET', c, `/${encodeURIComponent('ünïcode ✓')}`)).json().value, 'ünïcode ✓');
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const page: { keys: { key: string }[]; next_cursor: string | null } = (await call('GET', c, `?prefix=${encodeURIComponent('lead/')}&limit=2${cursor ? `&cursor=${cursor}` : ''}`)).json();
      seen.push(...page.keys.map((k) => k.key));
      cursor = page.next_cursor;
    } while (cursor);
    assert.deepEqual(seen, ['lead/001', 'lead/002', 'lead/003', 'lead/010']);
    assert.equal((await call('GET', c, '?cursor=not-a-cursor!')).json().error.code, 'invalid_cursor');
  });

  it('refuses bad input with 400: missing value, zero TTL, an over-long key', async () => {
    assert.equal((await call('PUT', a, '/k', {})).statusCode, 400);
    assert.equal((await call('PUT', a, '/k', { value: 1, ttl_seconds: 0 })).statusCode, 400);
    const long = await call('PUT', a, `/${'k'.repeat(513)}`, { value: 1 });
    assert.equal(long.statusCode, 400);
    assert.equal(long.json().error.code, 'invalid_key');
  });
});
