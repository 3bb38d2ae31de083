import { BillingService } from '../../src/billing/index.js';
import type { Role } from '../../src/auth/index.js';
import { ManualClock } from '../../src/clock/index.js';
import { startTestApp, type TestApp } from './app.js';
import { recordingNotifier } from './queue.js';

/** The API with billing on a clock the test sets, its submit hook in the queue, and a recording notifier. */
export async function startBillingApp(at: string, opts: { defaultPlan?: string } = {}) {
  const clock = new ManualClock(new Date(at));
  const notifier = recordingNotifier();
  const billing = new BillingService({ clock, notifier, defaultPlan: opts.defaultPlan });
  const t = await startTestApp({ billing, queue: { onSubmit: [billing.submitHook] } });
  return { t, clock, notifier, billing };
}

/** A fresh tenant (made by a platform_admin) and a way to call the API as one of its roles. */
export async function newTenant(t: TestApp, id: string) {
  const res = await t.app.inject({ method: 'POST', url: '/api/tenants', headers: await t.auth('platform_admin'), payload: { id, name: id } });
  if (res.statusCode !== 201) throw new Error(`tenant: ${res.body}`);
  const call = async (role: Role, method: 'GET' | 'POST' | 'PATCH', url: string, payload?: unknown) =>
    t.app.inject({ method, url, headers: await t.auth(role, { tenant: id }), ...(payload === undefined ? {} : { payload: payload as object }) });
  return {
    id,
    call,
    /** Provisions an agent (isolation none unless given); returns its id. */
    async agent(body: Record<string, unknown> = {}): Promise<string> {
      const r = await call('admin', 'POST', '/api/agents/provision', { name: `a-${Math.random().toString(36).slice(2, 10)}`, model: 'm', isolation: { level: 'none' }, ...body });
      if (r.statusCode !== 201) throw new Error(`provision: ${r.body}`);
      return r.json().agent.id;
    },
    submit: (agentId: string, extra: Record<string, unknown> = {}) => call('admin', 'POST', '/api/tasks', { agent_id: agentId, type: 'work', ...extra }),
  };
}

export interface UsageRow {
  tenant_id: string;
  dimension: 'tokens' | 'compute' | 'artifacts' | 'storage';
  quantity: bigint | number;
  cost_micros?: bigint | number;
  period_start: string;
  agent_id?: string | null;
  user_id?: string | null;
  task_id?: string | null;
  attempt?: number | null;
  session_id?: string | null;
  model?: string | null;
  idempotency_key?: string | null;
  billing_subject?: 'USER' | 'ORG' | null;
}

/** Writes metered events the way the usage writers will (agent_quota_usage is the contract). */
export async function meter(t: TestApp, rows: UsageRow[]): Promise<void> {
  for (const r of rows)
    await t.db.query(
      `INSERT INTO agent_quota_usage (tenant_id, agent_id, user_id, task_id, attempt, session_id, dimension, model, quantity, cost_micros, billing_subject, period_start, idempotency_key)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::bigint, $10::bigint, $11, $12, $13)`,
      [
        r.tenant_id,
        r.agent_id ?? null,
        r.user_id ?? null,
        r.task_id ?? null,
        r.attempt ?? null,
        r.session_id ?? null,
        r.dimension,
        r.model ?? null,
        String(r.quantity),
        String(r.cost_micros ?? 0),
        r.billing_subject ?? null,
        r.period_start,
        r.idempotency_key ?? null,
      ],
    );
}
