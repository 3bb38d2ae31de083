import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startTestApp, type TestApp } from './support/app.js';
import { ENGINE } from './support/engine.js';

const METRICS_TOKEN = 'metrics-token-0123456789abcdef0123456789abcdef';

// NFR-SEC-1: no unauthenticated internal endpoint (README "Inter-component authentication").
describe(`inter-component authentication: /metrics token, operator endpoints (${ENGINE})`, () => {
  let t: TestApp;
  let open: TestApp;
  before(async () => {
    t = await startTestApp({ config: { metricsToken: METRICS_TOKEN } });
    open = await startTestApp();
  });
  after(async () => {
    await t.close();
    await open.close();
  });

  it('with FABRIC_METRICS_TOKEN, a scrape without the token or with a wrong one is 401; with it, 200', async () => {
    const none = await t.app.inject({ method: 'GET', url: '/metrics' });
    assert.equal(none.statusCode, 401);
    assert.equal(none.json().error.code, 'missing_token');
    assert.ok(!none.body.includes('agent_fabric_'), 'no metric leaks with the refusal');
    for (const authorization of [`Bearer ${METRICS_TOKEN}x`, `Bearer ${METRICS_TOKEN.slice(1)}`, `Basic ${METRICS_TOKEN}`, 'Bearer', `Bearer ${await t.token('platform_admin')}`]) {
      const res = await t.app.inject({ method: 'GET', url: '/metrics', headers: { authorization } });
      assert.equal(res.statusCode, 401, authorization.slice(0, 20));
      assert.equal(res.json().error.code, 'invalid_token');
    }
    const ok = await t.app.inject({ method: 'GET', url: '/metrics', headers: { authorization: `Bearer ${METRICS_TOKEN}` } });
    assert.equal(ok.statusCode, 200);
    assert.match(ok.body, /agent_fabric_http_requests_total/);
    assert.equal((await t.app.inject({ method: 'GET', url: '/healthz' })).statusCode, 200, 'probes stay open');
  });

  it('without it, /metrics stays open (the default, for a loopback or private scrape)', async () => {
    assert.equal((await open.app.inject({ method: 'GET', url: '/metrics' })).statusCode, 200);
  });

  it('operator endpoints: no token 401; global scope needs platform_admin; agents and members 403', async () => {
    for (const [method, url] of [['GET', '/api/admin/settings'], ['PUT', '/api/admin/settings?scope=global'], ['GET', '/api/admin/kill-switch'], ['POST', '/api/admin/kill-switch'], ['POST', '/api/admin/kill-switch/release']] as const) {
      const res = await t.app.inject({ method, url, payload: method === 'GET' ? undefined : {} });
      assert.equal(res.statusCode, 401, `${method} ${url}`);
    }
    for (const role of ['agent', 'member', 'viewer'] as const) {
      assert.equal((await t.app.inject({ method: 'GET', url: '/api/admin/kill-switch', headers: await t.auth(role) })).statusCode, 403, role);
      const engage = await t.app.inject({ method: 'POST', url: '/api/admin/kill-switch', headers: await t.auth(role), payload: { scope: 'tenant', mode: 'stop', reason: 'x' } });
      assert.equal(engage.statusCode, 403, role);
    }
    for (const role of ['admin', 'operator'] as const) {
      const res = await t.app.inject({ method: 'POST', url: '/api/admin/kill-switch', headers: await t.auth(role), payload: { scope: 'global', mode: 'stop', reason: 'x' } });
      assert.equal(res.statusCode, 403, role);
      const put = await t.app.inject({ method: 'PUT', url: '/api/admin/settings?scope=global', headers: await t.auth(role), payload: { log_level: 'debug' } });
      assert.equal(put.statusCode, 403, role);
    }
    assert.equal((await t.db.query(`SELECT 1 FROM kill_switches`)).rows.length, 0, 'nothing was engaged');
  });
});
