import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startTestApp, type TestApp } from './support/app.js';
import { ENGINE } from './support/engine.js';

describe(`HTTP conventions (${ENGINE})`, () => {
  let t: TestApp;
  before(async () => (t = await startTestApp()));
  after(async () => t.close());

  it('echoes a sane x-request-id and makes one otherwise', async () => {
    const given = await t.app.inject({ method: 'GET', url: '/healthz', headers: { 'x-request-id': 'abc-123' } });
    assert.equal(given.headers['x-request-id'], 'abc-123');
    const made = await t.app.inject({ method: 'GET', url: '/healthz', headers: { 'x-request-id': 'bad id with spaces' } });
    assert.match(String(made.headers['x-request-id']), /^[0-9a-f-]{36}$/);
  });

  it('/healthz and /readyz report the process and the database', async () => {
    assert.deepEqual((await t.app.inject({ method: 'GET', url: '/healthz' })).json(), { status: 'ok' });
    const ready = await t.app.inject({ method: 'GET', url: '/readyz' });
    assert.equal(ready.statusCode, 200);
    assert.deepEqual(ready.json().checks, { database: 'ok', migrations: 'ok' });
  });

  it('/readyz is 503 while migrations are pending', async () => {
    await t.db.query('DELETE FROM schema_migrations WHERE version = 1');
    try {
      const ready = await t.app.inject({ method: 'GET', url: '/readyz' });
      assert.equal(ready.statusCode, 503);
      assert.deepEqual(ready.json().pending_migrations, [1]);
    } finally {
      const m = (await import('../src/db/index.js')).loadMigrations()[0]!;
      await t.db.query('INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)', [m.version, m.name, m.checksum]);
    }
  });

  it('/metrics exposes request counts and latency by route and status, and process metrics', async () => {
    await t.app.inject({ method: 'GET', url: '/api/agents', headers: await t.auth('viewer') });
    await t.app.inject({ method: 'GET', url: '/api/agents' });
    await t.app.inject({ method: 'POST', url: '/api/agents/provision', headers: await t.auth('admin'), payload: { name: 'metered', model: 'm' } });
    const res = await t.app.inject({ method: 'GET', url: '/metrics' });
    assert.equal(res.statusCode, 200);
    assert.match(String(res.headers['content-type']), /text\/plain/);
    assert.match(res.body, /agent_fabric_http_requests_total\{method="GET",route="\/api\/agents",status="200"\} \d+/);
    assert.match(res.body, /agent_fabric_http_requests_total\{method="GET",route="\/api\/agents",status="401"\} \d+/);
    assert.match(res.body, /agent_fabric_http_request_duration_seconds_bucket\{le="0.005",method="GET",route="\/api\/agents",status="200"\}/);
    assert.match(res.body, /agent_fabric_process_resident_memory_bytes/);
    assert.match(res.body, /agent_fabric_transactions_total\{outcome="commit"\}/);
  });

  it('/openapi.json is OpenAPI 3.1 listing every route with its schemas; /docs is a browsable page', async () => {
    const doc = (await t.app.inject({ method: 'GET', url: '/openapi.json' })).json();
    assert.equal(doc.openapi, '3.1.0');
    for (const p of ['/api/agents/provision', '/api/agents', '/api/agents/{id}', '/api/tenants', '/api/workspaces', '/api/users', '/healthz', '/readyz'])
      assert.ok(doc.paths[p], `${p} documented`);
    const provision = doc.paths['/api/agents/provision'].post;
    assert.ok(provision.requestBody.content['application/json'].schema.properties.model);
    assert.ok(provision.responses['201']);
    assert.deepEqual(provision.security, [{ bearerAuth: [] }]);
    const docs = await t.app.inject({ method: 'GET', url: '/docs/' });
    assert.equal(docs.statusCode, 200);
    assert.match(docs.body, /<html/i);
  });

  it('every error uses the envelope', async () => {
    const res = await t.app.inject({ method: 'GET', url: '/nope' });
    assert.equal(res.statusCode, 404);
    assert.equal(res.json().error.code, 'route_not_found');
    const unauth = await t.app.inject({ method: 'GET', url: '/api/agents' });
    assert.equal(unauth.statusCode, 401);
    assert.equal(unauth.json().error.code, 'missing_token');
    assert.match(unauth.json().error.message, /agent-fabric token/);
  });
});
