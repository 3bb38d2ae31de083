import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { loadWordTable } from '../src/embeddings/index.js';
import { ENGINE } from './support/engine.js';
import { startTestApp, type TestApp } from './support/app.js';
import { provisionAgent } from './support/queue.js';

describe(`semantic memory over HTTP (${ENGINE})`, () => {
  let t: TestApp;
  let a: string;
  let b: string;
  before(async () => {
    t = await startTestApp();
    await loadWordTable(t.config.embeddings.cacheDir); // built once per machine; not part of the 2 s
    a = await provisionAgent(t);
    b = await provisionAgent(t);
  });
  after(() => t.close());

  const as = async (agent: string) => t.auth('agent', { sub: agent });
  const embed = async (agent: string, body: unknown, who = agent) =>
    t.app.inject({ method: 'POST', url: `/api/agents/${agent}/memory/embed`, headers: await as(who), payload: body as object });
  const search = async (agent: string, body: unknown, who = agent) =>
    t.app.inject({ method: 'POST', url: `/api/agents/${agent}/memory/search`, headers: await as(who), payload: body as object });

  test('a memory about the FBX lead is found first for "FBX lead follow-up", similarity >= 0.75, stored within 2 s', async () => {
    const started = Date.now();
    const res = await embed(a, { text: 'Followed up with the FBX lead about pricing and next steps', metadata: { lead: 'FBX' } });
    assert.equal(res.statusCode, 201, res.body);
    assert.ok(Date.now() - started < 2000, `embed took ${Date.now() - started} ms`);
    const { id } = res.json();
    for (const text of ['The weather in Lisbon was sunny all week', 'Renewed the TLS certificate of the API domain', 'Booked a flight to Berlin for the conference'])
      assert.equal((await embed(a, { text })).statusCode, 201);
    const found = await search(a, { query: 'FBX lead follow-up' });
    assert.equal(found.statusCode, 200, found.body);
    const { results, space } = found.json();
    assert.equal(space, 'local:wink-sg-100d-sif-v1:100');
    assert.equal(results[0].id, id);
    assert.ok(results[0].similarity >= 0.75, `similarity ${results[0].similarity}`);
    assert.deepEqual(results[0].metadata, { lead: 'FBX' });
    assert.ok(results.length <= 5);
    for (let i = 1; i < results.length; i++) assert.ok(results[i - 1].similarity >= results[i].similarity, 'ranked by similarity');
    const row = await t.db.query<{ provider: string; model: string; dimensions: number }>('SELECT provider, model, dimensions FROM semantic_memories WHERE id = $1', [id]);
    assert.deepEqual(row.rows[0], { provider: 'local', model: 'wink-sg-100d-sif-v1', dimensions: 100 });
  });

  test('top_k and a metadata filter (containment) narrow the results', async () => {
    const res = await search(a, { query: 'FBX lead follow-up', top_k: 2 });
    assert.equal(res.json().results.length, 2);
    const filtered = await search(a, { query: 'weather', filter: { lead: 'FBX' } });
    assert.deepEqual(filtered.json().results.map((r: { text: string }) => r.text), ['Followed up with the FBX lead about pricing and next steps']);
    assert.deepEqual((await search(a, { query: 'weather', filter: { lead: 'nobody' } })).json().results, []);
  });

  test("agent B never sees agent A's memories, and may not use A's paths", async () => {
    const res = await search(b, { query: 'FBX lead follow-up' });
    assert.equal(res.statusCode, 200);
    assert.deepEqual(res.json().results, []);
    for (const r of [await search(a, { query: 'FBX' }, b), await embed(a, { text: 'planted by B' }, b)]) {
      assert.equal(r.statusCode, 403);
      assert.equal(r.json().error.code, 'forbidden');
    }
  });

  test("another tenant's agent is a 404; people need a role", async () => {
    const other = await t.app.inject({ method: 'POST', url: '/api/tenants', headers: await t.auth('platform_admin'), payload: { id: 'other-sm', name: 'Other' } });
    assert.equal(other.statusCode, 201, other.body);
    const res = await t.app.inject({ method: 'POST', url: `/api/agents/${a}/memory/search`, headers: await t.auth('admin', { tenant: 'other-sm' }), payload: { query: 'FBX' } });
    assert.equal(res.statusCode, 404);
    assert.equal(res.json().error.code, 'not_found');
    const viewer = await t.app.inject({ method: 'POST', url: `/api/agents/${a}/memory/embed`, headers: await t.auth('viewer'), payload: { text: 'x' } });
    assert.equal(viewer.statusCode, 403);
  });

  test('bad input is a 400 with a stable code', async () => {
    for (const body of [{}, { text: '' }, { text: 'x', metadata: [1] }, { text: 'x', extra: 1 }]) {
      const res = await embed(a, body);
      assert.equal(res.statusCode, 400, JSON.stringify(body));
      assert.equal(res.json().error.code, 'validation_failed');
    }
    assert.equal((await search(a, { query: 'x', top_k: 0 })).statusCode, 400);
    assert.equal((await search(a, { query: 'x', top_k: 101 })).statusCode, 400);
  });

  test('a memory can be deleted, once', async () => {
    const { id } = (await embed(a, { text: 'A memory that will be forgotten about zebras' })).json();
    const url = `/api/agents/${a}/memory/embeddings/${id}`;
    assert.equal((await t.app.inject({ method: 'DELETE', url, headers: await as(b) })).statusCode, 403);
    const del = await t.app.inject({ method: 'DELETE', url, headers: await as(a) });
    assert.equal(del.statusCode, 204, del.body);
    const again = await t.app.inject({ method: 'DELETE', url, headers: await as(a) });
    assert.equal(again.statusCode, 404);
    const res = await search(a, { query: 'zebras', top_k: 100 });
    assert.ok(!res.json().results.some((r: { id: string }) => r.id === id));
  });
});
