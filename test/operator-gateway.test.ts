import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setLogger, createLogger } from '../src/telemetry/index.js';
import { ENGINE } from './support/engine.js';
import { gatewayAgent, runningSession, startGatewayApp, type GatewayApp } from './support/gateway.js';

// Operator controls reaching the model gateway: live rate limits, and the kill switch's stop mode.
describe(`operator controls at the model gateway (${ENGINE})`, () => {
  let t: GatewayApp;
  before(async () => {
    t = await startGatewayApp({ agentRpm: 0, agentTpm: 0, tenantRpm: 0, tenantTpm: 0 });
  });
  after(async () => {
    await t.close();
    setLogger(createLogger({ level: process.env.FABRIC_LOG_LEVEL ?? 'silent' }));
  });

  const call = async (token: string) => {
    const res = await fetch(`${t.base}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }], max_tokens: 5 }),
    });
    return { status: res.status, body: (await res.json()) as { error?: { code: string } } };
  };
  const settings = async (payload: Record<string, unknown>) =>
    t.app.inject({ method: 'PUT', url: '/api/admin/settings', headers: await t.auth('platform_admin'), payload });

  it('gateway_agent_rpm set for the tenant limits its agents from the next call, and unset lifts it, without a restart', async () => {
    const s = await runningSession(t, await gatewayAgent(t));
    for (let i = 0; i < 3; i++) assert.equal((await call(s.token)).status, 200, 'unlimited by the environment');
    assert.equal((await settings({ gateway_agent_rpm: 2 })).statusCode, 200);
    const results = [await call(s.token), await call(s.token), await call(s.token)];
    assert.deepEqual(results.map((r) => r.status), [200, 200, 429]);
    assert.equal(results[2]!.body.error!.code, 'rate_limit_exceeded');
    assert.equal((await settings({ gateway_agent_rpm: null })).statusCode, 200);
    assert.equal((await call(s.token)).status, 200, 'unset: back to the environment (unlimited)');
  });

  it('a kill switch in stop mode ends the running task’s model calls (403 task_stopped)', async () => {
    const s = await runningSession(t, await gatewayAgent(t));
    assert.equal((await call(s.token)).status, 200);
    const engaged = await t.app.inject({ method: 'POST', url: '/api/admin/kill-switch', headers: await t.auth('admin'), payload: { scope: 'tenant', mode: 'stop', reason: 'gateway test' } });
    assert.equal(engaged.statusCode, 200, engaged.body);
    assert.ok(engaged.json().running_tasks_cancelled >= 1);
    const after = await call(s.token);
    assert.equal(after.status, 403);
    assert.equal(after.body.error!.code, 'task_stopped');
    assert.equal((await t.app.inject({ method: 'POST', url: '/api/admin/kill-switch/release', headers: await t.auth('admin'), payload: { scope: 'tenant' } })).statusCode, 200);
  });
});
