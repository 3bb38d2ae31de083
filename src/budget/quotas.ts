import { z } from 'zod';
import type { QuotaDefaults } from '../config/index.js';
import type { Tx } from '../db/index.js';

export const OveragePolicy = z.enum(['block', 'alert_only', 'allow']);

/** Limits a caller may set when provisioning (any subset; the rest come from config). */
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

/** The quota as the API shows it (isolation-runtime-prd §3.5 field names). */
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
  tokens_pct: z.number(),
  cost_pct: z.number(),
  storage_pct: z.number(),
  period_start: z.string(),
  updated_at: z.string(),
});
export type AgentQuota = z.infer<typeof AgentQuota>;

interface QuotaRow {
  agent_id: string;
  monthly_token_limit: number;
  monthly_tokens_used: number;
  monthly_cost_limit_usd: number;
  monthly_cost_used_usd: number;
  storage_limit_bytes: number;
  storage_used_bytes: number;
  overage_policy: AgentQuota['overage_policy'];
  alert_threshold_pct: number;
  period_start: Date;
  updated_at: Date;
}

const pct = (used: number, limit: number) => (limit > 0 ? Math.min(100, (used / limit) * 100) : used > 0 ? 100 : 0);

function toQuota(row: QuotaRow): AgentQuota {
  return {
    agent_id: row.agent_id,
    monthly_token_limit: row.monthly_token_limit,
    monthly_tokens_used: row.monthly_tokens_used,
    monthly_cost_limit_usd: row.monthly_cost_limit_usd,
    monthly_cost_used_usd: row.monthly_cost_used_usd,
    storage_limit_bytes: row.storage_limit_bytes,
    storage_used_bytes: row.storage_used_bytes,
    overage_policy: row.overage_policy,
    alert_threshold_pct: row.alert_threshold_pct,
    tokens_pct: pct(row.monthly_tokens_used, row.monthly_token_limit),
    cost_pct: pct(row.monthly_cost_used_usd, row.monthly_cost_limit_usd),
    storage_pct: pct(row.storage_used_bytes, row.storage_limit_bytes),
    period_start: row.period_start.toISOString(),
    updated_at: row.updated_at.toISOString(),
  };
}

/** Creates an agent's quota row (FR-14), limits from `input` over the configured defaults. */
export async function createAgentQuota(
  tx: Tx,
  tenantId: string,
  agentId: string,
  defaults: QuotaDefaults,
  input: QuotaLimitsInput = {},
): Promise<AgentQuota> {
  const r = await tx.query<QuotaRow>(
    `INSERT INTO agent_quotas (agent_id, tenant_id, monthly_token_limit, monthly_cost_limit_usd,
       storage_limit_bytes, overage_policy, alert_threshold_pct)
     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *`,
    [
      agentId,
      tenantId,
      input.monthly_token_limit ?? defaults.monthlyTokenLimit,
      input.monthly_cost_limit_usd ?? defaults.monthlyCostLimitUsd,
      input.storage_limit_bytes ?? defaults.storageLimitBytes,
      input.overage_policy ?? defaults.overagePolicy,
      input.alert_threshold_pct ?? defaults.alertThresholdPct,
    ],
  );
  return toQuota(r.rows[0]!);
}
