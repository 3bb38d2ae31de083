import { z } from 'zod';
import { recordAudit, type AuditActor } from '../audit/index.js';
import type { Tx } from '../db/index.js';
import { badRequest } from '../errors/index.js';
import { recordLedgerEntry } from './ledger.js';
import { microsToUsd } from './money.js';
import { getQuota, QUOTA_COLUMNS, toQuota, type AgentQuota } from './quotas.js';

export const QuotaAdjustmentBody = z
  .object({
    tokens_delta: z.number().int().min(-Number.MAX_SAFE_INTEGER).max(Number.MAX_SAFE_INTEGER).default(0).describe('added to monthly_tokens_used (negative to credit back)'),
    cost_delta_micros: z.number().int().min(-Number.MAX_SAFE_INTEGER).max(Number.MAX_SAFE_INTEGER).default(0).describe('added to monthly_cost_used_usd, in integer micro-USD'),
    reason: z.string().trim().min(3).max(500).describe('why (kept in the audit log and the ledger)'),
  })
  .strict()
  .refine((b) => b.tokens_delta !== 0 || b.cost_delta_micros !== 0, { message: 'give a non-zero tokens_delta or cost_delta_micros' });
export type QuotaAdjustmentBody = z.infer<typeof QuotaAdjustmentBody>;

/**
 * Manually adjusts an agent's used counters (an admin operation): one `adjustment` ledger
 * entry and one audit row with the quota before and after, in the caller's transaction. A
 * counter would go below 0 → 400 adjustment_below_zero.
 */
export async function adjustQuotaUsage(tx: Tx, actor: AuditActor, tenantId: string, agentId: string, body: QuotaAdjustmentBody): Promise<AgentQuota> {
  const before = await getQuota(tx, tenantId, agentId, true);
  const tokens = before.monthly_tokens_used + body.tokens_delta;
  const cost = BigInt(before.monthly_cost_used_micros) + BigInt(body.cost_delta_micros);
  if (tokens < 0 || cost < 0n)
    throw badRequest(
      'adjustment_below_zero',
      `The adjustment would take the agent's used counters below zero (tokens ${before.monthly_tokens_used} → ${tokens}, cost ${before.monthly_cost_used_usd} → ${microsToUsd(cost)} USD); use a smaller credit.`,
    );
  const r = await tx.query<Parameters<typeof toQuota>[0]>(
    `UPDATE agent_quotas SET monthly_tokens_used = monthly_tokens_used + $3, monthly_cost_used_usd = monthly_cost_used_usd + $4::bigint / 1000000.0, updated_at = now()
      WHERE tenant_id = $1 AND agent_id = $2 RETURNING ${QUOTA_COLUMNS}`,
    [tenantId, agentId, body.tokens_delta, String(body.cost_delta_micros)],
  );
  const after = toQuota(r.rows[0]!);
  await recordLedgerEntry(tx, {
    tenantId,
    agentId,
    entryType: 'adjustment',
    tokens: body.tokens_delta,
    costUsd: microsToUsd(body.cost_delta_micros),
    details: { reason: body.reason, by: actor.sub, cost_delta_micros: body.cost_delta_micros, period_start: before.period_start },
  });
  await recordAudit(tx, { tenantId, actor, action: 'agent.quota.adjust', targetType: 'agent', targetId: agentId, before, after: { ...after, reason: body.reason } });
  return after;
}
