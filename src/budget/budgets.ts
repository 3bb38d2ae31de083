import { z } from 'zod';
import { recordAudit, type AuditActor } from '../audit/index.js';
import type { Queryable, Tx } from '../db/index.js';
import { badRequest, conflict, notFound } from '../errors/index.js';
import { isUsdAmount, microsToUsd, usdToMicros } from './money.js';
import { OveragePolicy, pct } from './quotas.js';

const Usd = z
  .union([z.number().min(0), z.string()])
  .refine((v) => isUsdAmount(v) && usdToMicros(v) >= 0n && usdToMicros(v) <= BigInt(Number.MAX_SAFE_INTEGER), 'a USD amount ≥ 0 with at most 6 decimals, e.g. 25 or "12.50"');
const Count = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);

/** BudgetConfig of agent-fabric.md (per day, in the tenant's time zone), plus its scope and policies. */
const BudgetFields = z.object({
  max_tokens_per_day: Count.nullable().describe('null: no token limit'),
  max_compute_seconds_per_day: Count.nullable().describe('sandbox wall-clock seconds; null: no limit'),
  max_cost_per_day_usd: Usd.nullable().describe('exact decimal (a string keeps every digit); null: no cost limit'),
  alert_threshold_percent: z.number().min(0).max(100).describe('soft threshold: an alert to #fleet-ops, once a day'),
  hard_threshold_percent: z.number().gt(0).max(1000).describe('hard threshold: with overage_policy block, work past it is refused (429 quota_exceeded) or stopped (INSUFFICIENT_FUNDS)'),
  overage_policy: OveragePolicy,
  reset_policy: z.enum(['reset', 'carry_over']).describe('at midnight: unused allowance lapses (reset) or is added to the next day (carry_over)'),
});

export const CreateBudgetBody = BudgetFields.partial()
  .extend({
    scope: z.enum(['tenant', 'workspace', 'user']).describe('what the budget covers: every agent of the tenant, of a workspace, or owned by a user'),
    scope_id: z.string().optional().describe('the workspace or user id (omit for tenant)'),
  })
  .strict();
export type CreateBudgetBody = z.infer<typeof CreateBudgetBody>;

export const UpdateBudgetBody = BudgetFields.partial().strict();
export type UpdateBudgetBody = z.infer<typeof UpdateBudgetBody>;

export const Budget = z.object({
  id: z.string(),
  scope: z.enum(['tenant', 'workspace', 'user']),
  scope_id: z.string(),
  max_tokens_per_day: z.number().nullable(),
  max_compute_seconds_per_day: z.number().nullable(),
  max_cost_per_day_usd: z.string().nullable().describe('exact decimal string'),
  alert_threshold_percent: z.number(),
  hard_threshold_percent: z.number(),
  overage_policy: OveragePolicy,
  reset_policy: z.enum(['reset', 'carry_over']),
  tokens_used: z.number(),
  compute_seconds_used: z.number(),
  cost_used_usd: z.string(),
  cost_used_micros: z.number(),
  tokens_reserved: z.number(),
  cost_reserved_micros: z.number(),
  carried: z.object({ tokens: z.number(), compute_seconds: z.number(), cost_usd: z.string() }),
  tokens_pct: z.number(),
  cost_pct: z.number(),
  compute_pct: z.number(),
  period_start: z.string(),
  created_at: z.string(),
  updated_at: z.string(),
});
export type Budget = z.infer<typeof Budget>;

interface BudgetRow {
  id: string;
  scope: Budget['scope'];
  scope_id: string;
  max_tokens_per_day: number | null;
  max_compute_seconds_per_day: number | null;
  max_cost_per_day_micros: number | null;
  alert_threshold_percent: number;
  hard_threshold_percent: number;
  overage_policy: Budget['overage_policy'];
  reset_policy: Budget['reset_policy'];
  tokens_used: number;
  compute_ms_used: number;
  cost_used_micros: number;
  tokens_reserved: number;
  cost_reserved_micros: number;
  tokens_carried: number;
  compute_ms_carried: number;
  cost_carried_micros: number;
  period_start: Date;
  created_at: Date;
  updated_at: Date;
}

function toBudget(r: BudgetRow): Budget {
  const opt = (v: number | null, carried: number) => (v === null ? 0 : v + carried);
  return {
    id: r.id,
    scope: r.scope,
    scope_id: r.scope_id,
    max_tokens_per_day: r.max_tokens_per_day,
    max_compute_seconds_per_day: r.max_compute_seconds_per_day,
    max_cost_per_day_usd: r.max_cost_per_day_micros === null ? null : microsToUsd(r.max_cost_per_day_micros),
    alert_threshold_percent: r.alert_threshold_percent,
    hard_threshold_percent: r.hard_threshold_percent,
    overage_policy: r.overage_policy,
    reset_policy: r.reset_policy,
    tokens_used: r.tokens_used,
    compute_seconds_used: r.compute_ms_used / 1000,
    cost_used_usd: microsToUsd(r.cost_used_micros),
    cost_used_micros: r.cost_used_micros,
    tokens_reserved: r.tokens_reserved,
    cost_reserved_micros: r.cost_reserved_micros,
    carried: { tokens: r.tokens_carried, compute_seconds: r.compute_ms_carried / 1000, cost_usd: microsToUsd(r.cost_carried_micros) },
    tokens_pct: r.max_tokens_per_day === null ? 0 : pct(r.tokens_used, opt(r.max_tokens_per_day, r.tokens_carried)),
    cost_pct: r.max_cost_per_day_micros === null ? 0 : pct(r.cost_used_micros, opt(r.max_cost_per_day_micros, r.cost_carried_micros)),
    compute_pct: r.max_compute_seconds_per_day === null ? 0 : pct(r.compute_ms_used, opt(r.max_compute_seconds_per_day * 1000, r.compute_ms_carried)),
    period_start: r.period_start.toISOString(),
    created_at: r.created_at.toISOString(),
    updated_at: r.updated_at.toISOString(),
  };
}

const micros = (v: string | number | null | undefined) => (v === undefined ? undefined : v === null ? null : usdToMicros(v).toString());

/** The scope's id, checked to exist in the tenant (a budget for a missing workspace would never apply). */
async function scopeId(q: Queryable, tenantId: string, body: CreateBudgetBody): Promise<string> {
  if (body.scope === 'tenant') {
    if (body.scope_id !== undefined && body.scope_id !== tenantId) throw badRequest('invalid_scope', `A tenant budget covers this tenant (${tenantId}); omit scope_id.`);
    return tenantId;
  }
  const table = body.scope === 'workspace' ? 'workspaces' : 'users';
  if (!body.scope_id || !/^[0-9a-f-]{36}$/i.test(body.scope_id))
    throw badRequest('invalid_scope', `A ${body.scope} budget needs scope_id: the ${body.scope}'s id (a UUID).`);
  const r = await q.query(`SELECT 1 FROM ${table} WHERE tenant_id = $1 AND id = $2`, [tenantId, body.scope_id]);
  if (r.rows.length === 0) throw notFound(body.scope, body.scope_id);
  return body.scope_id.toLowerCase();
}

/** Creates a budget; its first period is today in the tenant's time zone (at `now`). One per scope: another → 409 budget_exists. */
export async function createBudget(tx: Tx, actor: AuditActor, tenantId: string, body: CreateBudgetBody, now: Date): Promise<Budget> {
  const id = await scopeId(tx, tenantId, body);
  const r = await tx.query<BudgetRow>(
    `INSERT INTO budgets (tenant_id, scope, scope_id, max_tokens_per_day, max_compute_seconds_per_day, max_cost_per_day_micros,
                          alert_threshold_percent, hard_threshold_percent, overage_policy, reset_policy, period_start)
     SELECT $1, $2, $3, $4, $5, $6, coalesce($7, 80), coalesce($8, 100), coalesce($9, 'block'), coalesce($10, 'reset'),
            date_trunc('day', $11::timestamptz AT TIME ZONE t.time_zone) AT TIME ZONE t.time_zone
       FROM tenants t WHERE t.id = $1
     ON CONFLICT (tenant_id, scope, scope_id) DO NOTHING
     RETURNING *`,
    [
      tenantId,
      body.scope,
      id,
      body.max_tokens_per_day ?? null,
      body.max_compute_seconds_per_day ?? null,
      micros(body.max_cost_per_day_usd) ?? null,
      body.alert_threshold_percent ?? null,
      body.hard_threshold_percent ?? null,
      body.overage_policy ?? null,
      body.reset_policy ?? null,
      now,
    ],
  );
  if (!r.rows[0]) throw conflict('budget_exists', `The ${body.scope} ${id} already has a budget; change it with PUT /api/budgets/:id.`);
  const budget = toBudget(r.rows[0]);
  await recordAudit(tx, { tenantId, actor, action: 'budget.create', targetType: 'budget', targetId: budget.id, after: budget });
  return budget;
}

export async function getBudget(q: Queryable, tenantId: string, id: string, lock = false): Promise<Budget> {
  const r = await q.query<BudgetRow>(`SELECT * FROM budgets WHERE tenant_id = $1 AND id = $2${lock ? ' FOR UPDATE' : ''}`, [tenantId, id]);
  if (!r.rows[0]) throw notFound('budget', id);
  return toBudget(r.rows[0]);
}

export async function listBudgets(q: Queryable, tenantId: string): Promise<Budget[]> {
  const r = await q.query<BudgetRow>('SELECT * FROM budgets WHERE tenant_id = $1 ORDER BY scope, scope_id', [tenantId]);
  return r.rows.map(toBudget);
}

/** Changes any subset of a budget's limits and policies (counters are kept). Audited. */
export async function updateBudget(tx: Tx, actor: AuditActor, tenantId: string, id: string, body: UpdateBudgetBody): Promise<Budget> {
  const before = await getBudget(tx, tenantId, id, true);
  const set: string[] = [];
  const params: unknown[] = [tenantId, id];
  const put = (column: string, value: unknown) => {
    params.push(value);
    set.push(`${column} = $${params.length}`);
  };
  if (body.max_tokens_per_day !== undefined) put('max_tokens_per_day', body.max_tokens_per_day);
  if (body.max_compute_seconds_per_day !== undefined) put('max_compute_seconds_per_day', body.max_compute_seconds_per_day);
  if (body.max_cost_per_day_usd !== undefined) put('max_cost_per_day_micros', micros(body.max_cost_per_day_usd));
  if (body.alert_threshold_percent !== undefined) put('alert_threshold_percent', body.alert_threshold_percent);
  if (body.hard_threshold_percent !== undefined) put('hard_threshold_percent', body.hard_threshold_percent);
  if (body.overage_policy !== undefined) put('overage_policy', body.overage_policy);
  if (body.reset_policy !== undefined) put('reset_policy', body.reset_policy);
  if (set.length === 0) return before;
  const r = await tx.query<BudgetRow>(`UPDATE budgets SET ${set.join(', ')}, updated_at = now() WHERE tenant_id = $1 AND id = $2 RETURNING *`, params);
  const after = toBudget(r.rows[0]!);
  await recordAudit(tx, { tenantId, actor, action: 'budget.update', targetType: 'budget', targetId: id, before, after });
  return after;
}

/** Deletes a budget (its open reservations no longer hold anything against it). Audited. */
export async function deleteBudget(tx: Tx, actor: AuditActor, tenantId: string, id: string): Promise<Budget> {
  const before = await getBudget(tx, tenantId, id, true);
  await tx.query('DELETE FROM budgets WHERE tenant_id = $1 AND id = $2', [tenantId, id]);
  await recordAudit(tx, { tenantId, actor, action: 'budget.delete', targetType: 'budget', targetId: id, before });
  return before;
}

/** Sets the tenant's time zone (IANA name), which places every period's midnight. */
export async function setTenantTimeZone(tx: Tx, actor: AuditActor, tenantId: string, timeZone: string): Promise<string> {
  try {
    new Intl.DateTimeFormat('en', { timeZone });
  } catch {
    throw badRequest('invalid_time_zone', `"${timeZone}" is not an IANA time zone; use a name such as UTC, Europe/Berlin or America/New_York.`);
  }
  const ok = await tx.query<{ ok: boolean }>('SELECT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = $1) AS ok', [timeZone]);
  if (!ok.rows[0]!.ok) throw badRequest('invalid_time_zone', `The database does not know the time zone "${timeZone}"; use a name such as UTC, Europe/Berlin or America/New_York.`);
  const r = await tx.query<{ before: string }>('UPDATE tenants t SET time_zone = $2 FROM tenants o WHERE t.id = $1 AND o.id = t.id RETURNING o.time_zone AS before', [tenantId, timeZone]);
  await recordAudit(tx, { tenantId, actor, action: 'tenant.time_zone', targetType: 'tenant', targetId: tenantId, before: r.rows[0]?.before, after: timeZone });
  return timeZone;
}
