import type { Db, Queryable, Tx } from '../db/index.js';
import { FabricError } from '../errors/index.js';
import { microsToUsd } from './money.js';

/** What `fabric_budget_reserve` says when a `block` entity would pass a limit (FA429 DETAIL). */
interface ExceededDetail {
  entity_type: 'agent' | 'budget';
  entity_id: string;
  scope: 'agent' | 'user' | 'workspace' | 'tenant';
  limit: string;
  unit: 'tokens' | 'micro_usd' | 'compute_ms';
  limit_value: number;
  used: number;
  reserved: number;
  requested: number;
}

const show = (unit: ExceededDetail['unit'], v: number) =>
  unit === 'micro_usd' ? `${microsToUsd(v)} USD` : unit === 'compute_ms' ? `${v / 1000} compute seconds` : `${v} tokens`;

/** The 429 a caller gets: which limit, what is used and reserved, and what was requested. */
function quotaExceeded(d: ExceededDetail): FabricError {
  const who = d.entity_type === 'agent' ? `Agent ${d.entity_id}` : `The ${d.scope} budget ${d.entity_id}`;
  const wanted = d.requested > 0 ? `this request needs ${show(d.unit, d.requested)} more` : 'the limit is exhausted';
  return new FabricError(
    429,
    'quota_exceeded',
    `${who} has used ${show(d.unit, d.used)} (plus ${show(d.unit, d.reserved)} reserved by accepted tasks) of its ${d.limit} of ${show(d.unit, d.limit_value)} and its overage_policy is block; ${wanted}. Wait for the next period, lower estimated_tokens, or ask an admin to raise the limit (PUT /api/agents/:id/quota or /api/budgets/:id).`,
    {
      entity_type: d.entity_type,
      entity_id: d.entity_id,
      scope: d.scope,
      limit: d.limit,
      unit: d.unit,
      limit_value: d.limit_value,
      used: d.used,
      reserved: d.reserved,
      requested: d.requested,
    },
  );
}

/** Turns the SQL functions' FA429 into quota_exceeded; anything else passes through. */
export function budgetError(err: unknown): unknown {
  const e = err as { code?: string; message?: string; detail?: string };
  if (e.code === 'FA429' && e.message === 'quota_exceeded' && e.detail) return quotaExceeded(JSON.parse(e.detail) as ExceededDetail);
  return err;
}

/** One reservation request: units held for a task (or a gateway call) under an idempotency key. */
export interface ReserveRequest {
  agentId: string;
  taskId?: string | null;
  /** Unique per tenant; reserving again under the same key does nothing. */
  key: string;
  tokens?: number;
  costMicros?: bigint | number;
}

/**
 * Reserves units, all or nothing, against each agent's quota and every budget above it
 * (`fabric_budget_reserve`: one statement, row locks, conditional checks, so concurrent
 * reservations never oversubscribe). A `block` entity that would pass a limit → 429
 * quota_exceeded. A request of 0 units is only checked (refused once a limit is exhausted).
 * Returns how many alerts became due (the runtime delivers them).
 */
export async function reserve(tx: Tx, tenantId: string, requests: readonly ReserveRequest[], expiresAt: Date): Promise<number> {
  if (requests.length === 0) return 0;
  const rows = requests.map((r) => ({ agent_id: r.agentId, task_id: r.taskId ?? null, key: r.key, tokens: r.tokens ?? 0, cost_micros: String(r.costMicros ?? 0) }));
  try {
    const r = await tx.query<{ n: number }>('SELECT fabric_budget_reserve($1, $2::jsonb, $3) AS n', [tenantId, JSON.stringify(rows), expiresAt]);
    return r.rows[0]!.n;
  } catch (err) {
    throw budgetError(err);
  }
}

/** Releases what a reservation still holds (by its key); a settled or unknown key does nothing. Returns whether one was open. */
export async function releaseReservation(tx: Tx, tenantId: string, key: string): Promise<boolean> {
  const r = await tx.query<{ n: number }>(
    `SELECT fabric_budget_release(ARRAY(SELECT id FROM budget_reservations WHERE tenant_id = $1 AND idempotency_key = $2 AND status = 'open'), 'released') AS n`,
    [tenantId, key],
  );
  return r.rows[0]!.n > 0;
}

/**
 * The reservation sweeper: releases open reservations that expired (`expired`) or whose task
 * already ended without settling them (`released`: cancelled before it ran, failed on a
 * dependency). SKIP LOCKED, so many processes may sweep at once. Returns how many.
 */
export async function sweepReservations(db: Db | Queryable, now: Date, limit = 500): Promise<number> {
  const r = await db.query<{ expired: number; ended: number }>(
    `SELECT fabric_budget_release(ARRAY(SELECT r.id FROM budget_reservations r WHERE r.status = 'open' AND r.expires_at <= $1
                                         ORDER BY r.expires_at LIMIT $2 FOR UPDATE SKIP LOCKED), 'expired') AS expired,
            fabric_budget_release(ARRAY(SELECT r.id FROM budget_reservations r JOIN tasks t ON t.id = r.task_id
                                         WHERE r.status = 'open' AND t.status IN ('completed', 'failed', 'cancelled', 'timed_out', 'dead_lettered')
                                         LIMIT $2 FOR UPDATE OF r SKIP LOCKED), 'released') AS ended`,
    [now, limit],
  );
  return r.rows[0]!.expired + r.rows[0]!.ended;
}
