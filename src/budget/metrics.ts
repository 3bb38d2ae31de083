import { Counter, Gauge } from 'prom-client';
import type { Queryable } from '../db/index.js';
import { agentLabel, registry } from '../telemetry/index.js';
import type { UsageItem } from './usage-item.js';

export const tokensTotal = new Counter({
  name: 'agent_fabric_tokens_total',
  help: 'Model tokens recorded (input + output), by agent and model (agent_id capped: FABRIC_METRICS_MAX_AGENT_LABELS, the rest "_other").',
  labelNames: ['agent_id', 'model'] as const,
  registers: [registry],
});

export const budgetUsageRatio = new Gauge({
  name: 'agent_fabric_budget_usage_ratio',
  help: 'Highest used ÷ limit over the dimensions of an agent quota (entity_id = agent id) or a budget (entity_id = budget id), as last seen by this process.',
  labelNames: ['entity_id'] as const,
  registers: [registry],
});

/** Counts the tokens of recorded usage items (agent label withheld for a tenant in zero-telemetry mode). */
export function countTokens(tenantId: string, agentId: string, usage: readonly UsageItem[] | undefined): void {
  const agent = agentLabel(tenantId, agentId);
  for (const u of usage ?? []) if (u.dimension === 'tokens' && u.quantity > 0) tokensTotal.inc({ agent_id: agent, model: u.model ?? 'unknown' }, u.quantity);
}

/**
 * Sets agent_fabric_budget_usage_ratio for quotas and budgets changed since `since` (the
 * budget runtime calls it every sweep, so the gauge follows spend from every process).
 */
export async function refreshUsageRatios(q: Queryable, since: Date): Promise<number> {
  const r = await q.query<{ tenant_id: string; agent: boolean; entity_id: string; ratio: number }>(
    `SELECT tenant_id, true AS agent, agent_id::text AS entity_id,
            greatest(CASE WHEN monthly_token_limit > 0 THEN monthly_tokens_used::float8 / monthly_token_limit END,
                     CASE WHEN monthly_cost_limit_usd > 0 THEN (monthly_cost_used_usd / monthly_cost_limit_usd)::float8 END, 0) AS ratio
       FROM agent_quotas WHERE updated_at >= $1
     UNION ALL
     SELECT tenant_id, false, id::text,
            greatest(CASE WHEN max_tokens_per_day > 0 THEN tokens_used::float8 / (max_tokens_per_day + tokens_carried) END,
                     CASE WHEN max_cost_per_day_micros > 0 THEN cost_used_micros::float8 / (max_cost_per_day_micros + cost_carried_micros) END,
                     CASE WHEN max_compute_seconds_per_day > 0 THEN compute_ms_used::float8 / (max_compute_seconds_per_day * 1000 + compute_ms_carried) END, 0)
       FROM budgets WHERE updated_at >= $1`,
    [since],
  );
  // an agent of a tenant in zero-telemetry mode gets no series of its own (README "Zero-telemetry mode")
  for (const row of r.rows) if (!row.agent || agentLabel(row.tenant_id, row.entity_id) === row.entity_id) budgetUsageRatio.set({ entity_id: row.entity_id }, row.ratio);
  return r.rows.length;
}

/** Token and storage use of one live agent's quota, 0–100 (as GET /api/agents/:id/quota computes them). */
export interface QuotaUsage {
  tenant_id: string;
  agent_id: string;
  tokens_pct: number;
  storage_pct: number;
}

/** tokens_pct and storage_pct of every live agent's quota, every tenant (quota gauges and alert rules). */
export async function readQuotaUsage(q: Queryable): Promise<QuotaUsage[]> {
  const r = await q.query<QuotaUsage>(
    `SELECT q.tenant_id, q.agent_id::text,
            CASE WHEN q.monthly_token_limit > 0 THEN least(100, q.monthly_tokens_used * 100.0 / q.monthly_token_limit)
                 WHEN q.monthly_tokens_used > 0 THEN 100 ELSE 0 END::float8 AS tokens_pct,
            CASE WHEN q.storage_limit_bytes > 0 THEN least(100, q.storage_used_bytes * 100.0 / q.storage_limit_bytes)
                 WHEN q.storage_used_bytes > 0 THEN 100 ELSE 0 END::float8 AS storage_pct
       FROM agent_quotas q JOIN agents a ON a.id = q.agent_id AND a.tenant_id = q.tenant_id
      WHERE a.deleted_at IS NULL`,
  );
  return r.rows;
}
