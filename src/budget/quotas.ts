import { z } from 'zod';
import type { QuotaDefaults } from '../config/index.js';
import type { Queryable, Tx } from '../db/index.js';
import { notFound } from '../errors/index.js';
import { usdToMicros } from './money.js';

export const OveragePolicy = z.enum(['block', 'alert_only', 'allow']);
export type OveragePolicy = z.infer<typeof OveragePolicy>;

/** Limits a caller may set when provisioning or with PUT /quota (any subset; the rest come from config or stay). */
export const QuotaLimitsInput = z
  .object({
    monthly_token_limit: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
    monthly_cost_limit_usd: z.number().min(0).max(99_999_999), // numeric(14, 6)
    storage_limit_bytes: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
    overage_policy: OveragePolicy,
    alert_threshold_pct: z.number().min(0).max(100),
  })
  .partial()
  .strict();
export type QuotaLimitsInput = z.infer<typeof QuotaLimitsInput>;

/** The quota as the API shows it (isolation-runtime-prd §3.5 field names; money also as exact micro-USD). */
export const AgentQuota = z.object({
  agent_id: z.string(),
  monthly_token_limit: z.number(),
  monthly_tokens_used: z.number(),
  monthly_cost_limit_usd: z.number(),
  monthly_cost_used_usd: z.number(),
  storage_limit_bytes: z.number(),
  storage_used_bytes: z.number(),
  overage_policy: OveragePolicy,
  alert_threshold_pct: z.number(),
  tokens_pct: z.number().describe('monthly_tokens_used / monthly_token_limit × 100, 0–100'),
  cost_pct: z.number().describe('monthly_cost_used_usd / monthly_cost_limit_usd × 100, 0–100'),
  storage_pct: z.number().describe('storage_used_bytes / storage_limit_bytes × 100, 0–100'),
  monthly_cost_limit_micros: z.number().int().describe('the cost limit in integer micro-USD (exact)'),
  monthly_cost_used_micros: z.number().int().describe('the cost used in integer micro-USD (exact)'),
  tokens_reserved: z.number().int().describe('tokens held by open reservations (estimates of accepted tasks)'),
  cost_reserved_micros: z.number().int(),
  period_start: z.string().describe('start of the current month in the tenant\'s time zone'),
  updated_at: z.string(),
});
export type AgentQuota = z.infer<typeof AgentQuota>;

interface QuotaRow {
  agent_id: string;
  monthly_token_limit: number;
  monthly_tokens_used: number;
  monthly_cost_limit_usd: string;
  monthly_cost_used_usd: string;
  cost_limit_micros: string;
  cost_used_micros: string;
  storage_limit_bytes: number;
  storage_used_bytes: number;
  overage_policy: OveragePolicy;
  alert_threshold_pct: number;
  tokens_reserved: number;
  cost_reserved_micros: number;
  period_start: Date;
  updated_at: Date;
}

/** Money columns as text (exact), micros computed in SQL. */
export const QUOTA_COLUMNS = `agent_id, monthly_token_limit, monthly_tokens_used, monthly_cost_limit_usd::text AS monthly_cost_limit_usd,
  monthly_cost_used_usd::text AS monthly_cost_used_usd, (monthly_cost_limit_usd * 1000000)::bigint::text AS cost_limit_micros,
  (monthly_cost_used_usd * 1000000)::bigint::text AS cost_used_micros, storage_limit_bytes, storage_used_bytes, overage_policy,
  alert_threshold_pct, tokens_reserved, cost_reserved_micros, period_start, updated_at`;

/** used / limit as a percentage clamped to 0–100 (a 0 limit: 100 once anything is used). */
export function pct(used: number | bigint, limit: number | bigint): number {
  const u = Number(used);
  const l = Number(limit);
  return l > 0 ? Math.min(100, (u / l) * 100) : u > 0 ? 100 : 0;
}

export function toQuota(row: QuotaRow): AgentQuota {
  return {
    agent_id: row.agent_id,
    monthly_token_limit: row.monthly_token_limit,
    monthly_tokens_used: row.monthly_tokens_used,
    monthly_cost_limit_usd: Number(row.monthly_cost_limit_usd),
    monthly_cost_used_usd: Number(row.monthly_cost_used_usd),
    storage_limit_bytes: row.storage_limit_bytes,
    storage_used_bytes: row.storage_used_bytes,
    overage_policy: row.overage_policy,
    alert_threshold_pct: row.alert_threshold_pct,
    tokens_pct: pct(row.monthly_tokens_used, row.monthly_token_limit),
    cost_pct: pct(BigInt(row.cost_used_micros), BigInt(row.cost_limit_micros)),
    storage_pct: pct(row.storage_used_bytes, row.storage_limit_bytes),
    monthly_cost_limit_micros: Number(row.cost_limit_micros),
    monthly_cost_used_micros: Number(row.cost_used_micros),
    tokens_reserved: row.tokens_reserved,
    cost_reserved_micros: row.cost_reserved_micros,
    period_start: row.period_start.toISOString(),
    updated_at: row.updated_at.toISOString(),
  };
}

/** Start of the current month in the tenant's time zone, as SQL over tenants `t` and a time `$n`. */
export const monthStartSql = (at: string) => `(date_trunc('month', ${at} AT TIME ZONE t.time_zone) AT TIME ZONE t.time_zone)`;

/** Creates an agent's quota row (FR-14), limits from `input` over the configured defaults; its period is the tenant's current month. */
export async function createAgentQuota(
  tx: Tx,
  tenantId: string,
  agentId: string,
  defaults: QuotaDefaults,
  input: QuotaLimitsInput = {},
): Promise<AgentQuota> {
  const r = await tx.query<QuotaRow>(
    `INSERT INTO agent_quotas (agent_id, tenant_id, monthly_token_limit, monthly_cost_limit_usd,
       storage_limit_bytes, overage_policy, alert_threshold_pct, period_start)
     SELECT $1, $2, $3, $4::numeric, $5, $6, $7, ${monthStartSql('now()')} FROM tenants t WHERE t.id = $2
     RETURNING ${QUOTA_COLUMNS}`,
    [
      agentId,
      tenantId,
      input.monthly_token_limit ?? defaults.monthlyTokenLimit,
      String(input.monthly_cost_limit_usd ?? defaults.monthlyCostLimitUsd),
      input.storage_limit_bytes ?? defaults.storageLimitBytes,
      input.overage_policy ?? defaults.overagePolicy,
      input.alert_threshold_pct ?? defaults.alertThresholdPct,
    ],
  );
  return toQuota(r.rows[0]!);
}

/** An agent's quota; 404 when the agent (or its quota) is not in this tenant. */
export async function getQuota(q: Queryable, tenantId: string, agentId: string, lock = false): Promise<AgentQuota> {
  const r = await q.query<QuotaRow>(`SELECT ${QUOTA_COLUMNS} FROM agent_quotas WHERE tenant_id = $1 AND agent_id = $2${lock ? ' FOR UPDATE' : ''}`, [tenantId, agentId]);
  if (!r.rows[0]) throw notFound('agent', agentId);
  return toQuota(r.rows[0]);
}

/** Changes any subset of an agent's limits and policy; returns the quota before and after. */
export async function updateQuotaLimits(tx: Tx, tenantId: string, agentId: string, input: QuotaLimitsInput): Promise<{ before: AgentQuota; after: AgentQuota }> {
  const before = await getQuota(tx, tenantId, agentId, true);
  const cost = input.monthly_cost_limit_usd === undefined ? null : (usdToMicros(input.monthly_cost_limit_usd).toString());
  const r = await tx.query<QuotaRow>(
    `UPDATE agent_quotas SET monthly_token_limit = coalesce($3, monthly_token_limit),
            monthly_cost_limit_usd = coalesce($4::bigint / 1000000.0, monthly_cost_limit_usd),
            storage_limit_bytes = coalesce($5, storage_limit_bytes), overage_policy = coalesce($6, overage_policy),
            alert_threshold_pct = coalesce($7, alert_threshold_pct), updated_at = now()
      WHERE tenant_id = $1 AND agent_id = $2 RETURNING ${QUOTA_COLUMNS}`,
    [tenantId, agentId, input.monthly_token_limit ?? null, cost, input.storage_limit_bytes ?? null, input.overage_policy ?? null, input.alert_threshold_pct ?? null],
  );
  return { before, after: toQuota(r.rows[0]!) };
}

/**
 * Gives every agent without a quota row the configured defaults (agents created before
 * quotas existed, or by a path that skipped provisioning). Returns how many were created.
 */
export async function backfillAgentQuotas(q: Queryable, defaults: QuotaDefaults): Promise<number> {
  const r = await q.query(
    `INSERT INTO agent_quotas (agent_id, tenant_id, monthly_token_limit, monthly_cost_limit_usd, storage_limit_bytes, overage_policy, alert_threshold_pct, period_start)
     SELECT a.id, a.tenant_id, $1, $2::numeric, $3, $4, $5, ${monthStartSql('now()')}
       FROM agents a JOIN tenants t ON t.id = a.tenant_id
      WHERE NOT EXISTS (SELECT 1 FROM agent_quotas x WHERE x.agent_id = a.id)
     ON CONFLICT (agent_id) DO NOTHING`,
    [defaults.monthlyTokenLimit, String(defaults.monthlyCostLimitUsd), defaults.storageLimitBytes, defaults.overagePolicy, defaults.alertThresholdPct],
  );
  return r.rowCount;
}
