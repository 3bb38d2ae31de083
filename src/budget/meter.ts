import { recordAudit } from '../audit/index.js';
import type { Tx } from '../db/index.js';
import { notFound } from '../errors/index.js';
import { EVENTS_CHANNEL, recordEvents } from '../events/index.js';
import { countTokens } from './metrics.js';
import { microsToUsd } from './money.js';
import type { UsageItem } from './usage-item.js';

/** What the model gateway reports for one model call of a running task. */
export interface MeterInput {
  tenantId: string;
  taskId: string;
  model: string;
  inputTokens: number;
  outputTokens: number;
  /** Integer micro-USD. */
  costMicros: bigint | number;
  sessionId?: string;
  /** Unique per tenant (e.g. the gateway's request id): a retried report is counted once. */
  key: string;
}

/** A hard limit that spend has passed. */
export interface ExhaustedLimit {
  entity_type: 'agent' | 'budget';
  entity_id: string;
  limit: string;
  unit: 'tokens' | 'micro_usd' | 'compute_ms';
  limit_value: number;
  used: number;
}

export interface MeterResult {
  /** The first `block` limit the agent's spend is now past, if any. */
  exhausted: ExhaustedLimit | null;
  /** Whether this call asked the task to stop with INSUFFICIENT_FUNDS (the gateway should refuse further calls). */
  stopped: boolean;
}

/**
 * Records one model call's spend during a run, in the caller's transaction: an
 * agent_quota_usage row (idempotent by key), charged against the task's open reservation, the
 * agent's monthly counters and every budget above it. When the spend has taken a `block`
 * entity past its hard limit, the task is stopped with INSUFFICIENT_FUNDS
 * (stopForInsufficientFunds). The gateway calls it after each model call.
 */
export async function meterUsage(tx: Tx, m: MeterInput): Promise<MeterResult> {
  const t = await tx.query<{ agent_id: string; attempts: number }>('SELECT agent_id, attempts FROM tasks WHERE tenant_id = $1 AND id = $2 FOR NO KEY UPDATE', [m.tenantId, m.taskId]);
  const task = t.rows[0];
  if (!task) throw notFound('task', m.taskId);
  const item: UsageItem = {
    dimension: 'tokens',
    quantity: m.inputTokens + m.outputTokens,
    model: m.model,
    input_tokens: m.inputTokens,
    output_tokens: m.outputTokens,
    cost_micros: String(m.costMicros),
    session_id: m.sessionId,
    key: m.key,
  };
  await tx.query('SELECT fabric_budget_settle($1::jsonb, false)', [JSON.stringify([{ id: m.taskId, attempt: task.attempts, usage: [item] }])]);
  countTokens(m.tenantId, task.agent_id, [item]);
  const exhausted = await exhaustedLimit(tx, task.agent_id);
  const stopped = exhausted ? await stopForInsufficientFunds(tx, m.tenantId, m.taskId, exhausted) : false;
  return { exhausted, stopped };
}

/** The first `block` limit (the agent's quota, then the budgets above it) that spend is past. */
export async function exhaustedLimit(tx: Tx, agentId: string): Promise<ExhaustedLimit | null> {
  const r = await tx.query<ExhaustedLimit>(
    `SELECT * FROM (
       SELECT 1 AS lvl, 'agent' AS entity_type, q.agent_id::text AS entity_id, d.ord, d.name AS limit, d.unit, d.lim AS limit_value, d.used
         FROM agent_quotas q
         CROSS JOIN LATERAL (VALUES (1, 'monthly_token_limit', 'tokens', q.monthly_token_limit, q.monthly_tokens_used),
                                    (2, 'monthly_cost_limit_usd', 'micro_usd', (q.monthly_cost_limit_usd * 1000000)::bigint, (q.monthly_cost_used_usd * 1000000)::bigint)) d(ord, name, unit, lim, used)
        WHERE q.agent_id = $1 AND q.overage_policy = 'block'
       UNION ALL
       SELECT 2, 'budget', b.id::text, d.ord, d.name, d.unit, d.lim, d.used
         FROM agents a JOIN budgets b ON b.tenant_id = a.tenant_id AND fabric_budget_covers(b, a.workspace_id, a.owner_user_id)
         CROSS JOIN LATERAL (VALUES
           (1, 'max_tokens_per_day', 'tokens', fabric_budget_hard(b.max_tokens_per_day, b.hard_threshold_percent, b.tokens_carried), b.tokens_used),
           (2, 'max_cost_per_day_usd', 'micro_usd', fabric_budget_hard(b.max_cost_per_day_micros, b.hard_threshold_percent, b.cost_carried_micros), b.cost_used_micros),
           (3, 'max_compute_seconds_per_day', 'compute_ms', fabric_budget_hard(b.max_compute_seconds_per_day * 1000, b.hard_threshold_percent, b.compute_ms_carried), b.compute_ms_used)
         ) d(ord, name, unit, lim, used)
        WHERE a.id = $1 AND b.overage_policy = 'block'
     ) x WHERE x.limit_value IS NOT NULL AND x.used > x.limit_value ORDER BY lvl, entity_id, ord LIMIT 1`,
    [agentId],
  );
  const row = r.rows[0];
  return row ? { entity_type: row.entity_type, entity_id: row.entity_id, limit: row.limit, unit: row.unit, limit_value: Number(row.limit_value), used: Number(row.used) } : null;
}

/**
 * Ends a running task `failed` with INSUFFICIENT_FUNDS (managed-execution-prd §8.7): it is
 * flagged like a cancel (cancel_requested, plus stop_error), its worker sees that at the next
 * lease renewal (every leaseSeconds / 3) and aborts the attempt through its AbortSignal — a
 * sandbox still stops its program and wipes — and the attempt's outcome is recorded as
 * `failed` with this error, never retried. Audited. Returns false when the task is not running
 * (or already being stopped).
 */
export async function stopForInsufficientFunds(tx: Tx, tenantId: string, taskId: string, limit: ExhaustedLimit): Promise<boolean> {
  const shown = limit.unit === 'micro_usd' ? `${microsToUsd(limit.used)} of ${microsToUsd(limit.limit_value)} USD` : `${limit.used} of ${limit.limit_value} ${limit.unit}`;
  const error = {
    code: 'INSUFFICIENT_FUNDS',
    message: `Spend passed the hard limit ${limit.limit} of ${limit.entity_type} ${limit.entity_id} (${shown}); the task was stopped. Raise the limit or wait for the next period, then submit it again.`,
    limit,
  };
  const r = await tx.query<{ id: string; tenant_id: string; agent_id: string; revision: number; attempts: number }>(
    `UPDATE tasks SET cancel_requested = true, stop_error = $3::jsonb, revision = revision + 1, updated_at = now()
      WHERE tenant_id = $1 AND id = $2 AND status = 'running' AND stop_error IS NULL
      RETURNING id, tenant_id, agent_id, revision, attempts`,
    [tenantId, taskId, JSON.stringify(error)],
  );
  const row = r.rows[0];
  if (!row) return false;
  await recordEvents(tx, [
    {
      tenantId,
      agentId: row.agent_id,
      eventType: 'task.running',
      subjectType: 'task',
      subjectId: row.id,
      data: { status: 'running', revision: row.revision, attempt: row.attempts, error: { code: 'INSUFFICIENT_FUNDS', message: 'Spend passed a hard limit; the worker is stopping the attempt.' } },
    },
  ]);
  tx.notifyAfterCommit(EVENTS_CHANNEL);
  await recordAudit(tx, { tenantId, actor: { sub: 'budget', role: 'system' }, action: 'task.insufficient_funds', targetType: 'task', targetId: row.id, after: error });
  return true;
}
