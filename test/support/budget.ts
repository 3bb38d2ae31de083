import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { budgetSubmitHook } from '../../src/budget/index.js';
import { ManualClock } from '../../src/clock/index.js';
import { startTestApp, type TestApp } from './app.js';

/** A test app whose scheduler runs the budget hook, on a clock the test sets. */
export async function startBudgetApp(clock = new ManualClock(new Date())): Promise<TestApp & { clock: ManualClock }> {
  const t = await startTestApp({ clock, queue: { onSubmit: [budgetSubmitHook({ clock, budgetsCacheMs: 0 })] } });
  return Object.assign(t, { clock });
}

/** Sets an agent's quota columns directly (the state a test starts from). */
export async function setQuota(t: TestApp, agentId: string, columns: Record<string, unknown>): Promise<void> {
  const keys = Object.keys(columns);
  await t.db.query(`UPDATE agent_quotas SET ${keys.map((k, i) => `${k} = $${i + 2}`).join(', ')} WHERE agent_id = $1`, [agentId, ...Object.values(columns)]);
}

/** A Slack-compatible webhook that keeps the bodies it receives. */
export async function fakeWebhook(): Promise<{ url: string; bodies: Record<string, unknown>[]; close(): Promise<void> }> {
  const bodies: Record<string, unknown>[] = [];
  const server = http.createServer((req, res) => {
    let data = '';
    req.on('data', (c) => (data += c));
    req.on('end', () => {
      bodies.push(JSON.parse(data));
      res.end('ok');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`,
    bodies,
    close: () => new Promise((r) => server.close(() => r())),
  };
}
