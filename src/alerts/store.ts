import { z } from 'zod';
import type { Queryable } from '../db/index.js';
import type { AlertRule, Breach } from './rules.js';

/** An alert as GET /api/alerts shows it. */
export const AlertView = z.object({
  id: z.string(),
  tenant_id: z.string().nullable().describe('null: a fleet-wide alert (rollback rate, error rate, embed latency), shown to platform_admin'),
  rule: z.string(),
  subject: z.string().describe('the agent id, the tenant id, or "fleet"'),
  agent_id: z.string().nullable(),
  severity: z.enum(['info', 'warning', 'critical']),
  state: z.enum(['firing', 'resolved']),
  value: z.number().describe('the last value seen while firing'),
  threshold: z.number(),
  summary: z.string(),
  fired_at: z.string(),
  last_seen_at: z.string(),
  resolved_at: z.string().nullable(),
  resolved_by: z.string().nullable().describe('who resolved it by hand; null when its condition cleared'),
});
export type AlertView = z.infer<typeof AlertView>;

export interface AlertRow {
  id: string;
  tenant_id: string | null;
  rule: string;
  subject: string;
  agent_id: string | null;
  severity: AlertView['severity'];
  state: AlertView['state'];
  held: boolean;
  value: number;
  threshold: number;
  summary: string;
  fired_at: Date;
  last_seen_at: Date;
  resolved_at: Date | null;
  resolved_by: string | null;
}

const COLUMNS = `id::text, tenant_id, rule, subject, agent_id::text, severity, state, held, value, threshold, summary, fired_at, last_seen_at, resolved_at, resolved_by`;

export function toView(r: AlertRow): AlertView {
  const { held: _held, ...rest } = r;
  return {
    ...rest,
    fired_at: r.fired_at.toISOString(),
    last_seen_at: r.last_seen_at.toISOString(),
    resolved_at: r.resolved_at ? r.resolved_at.toISOString() : null,
  };
}

export const keyOf = (a: { rule: string; tenant_id?: string | null; tenantId?: string | null; subject: string }) => `${a.rule}\u0000${a.tenant_id ?? a.tenantId ?? ''}\u0000${a.subject}`;

/** Rows that stand for a rule and subject now: firing, or resolved by hand while the condition still holds. */
export async function heldAlerts(q: Queryable): Promise<AlertRow[]> {
  return (await q.query<AlertRow>(`SELECT ${COLUMNS} FROM alerts WHERE held`)).rows;
}

/**
 * Records a firing alert unless one is already held for its rule and subject. Returns the row
 * only to the one process whose INSERT won (the partial unique index alerts_held): that process,
 * and only it, sends the notification.
 */
export async function fireAlert(q: Queryable, rule: AlertRule, b: Breach, summary: string): Promise<AlertRow | undefined> {
  const r = await q.query<AlertRow>(
    `INSERT INTO alerts (tenant_id, rule, subject, agent_id, severity, state, value, threshold, summary)
     VALUES ($1, $2, $3, $4, $5, 'firing', $6, $7, $8)
     ON CONFLICT (rule, coalesce(tenant_id, ''), subject) WHERE held DO NOTHING
     RETURNING ${COLUMNS}`,
    [b.tenantId, b.rule, b.subject, b.agentId, rule.severity, b.value, b.threshold, summary],
  );
  return r.rows[0];
}

/** Updates the last value of firing alerts whose condition still holds (one statement). */
export async function touchAlerts(q: Queryable, seen: { id: string; value: number }[]): Promise<void> {
  if (!seen.length) return;
  await q.query(
    `UPDATE alerts a SET value = v.value, last_seen_at = now()
       FROM unnest($1::bigint[], $2::float8[]) AS v(id, value)
      WHERE a.id = v.id AND a.state = 'firing'`,
    [seen.map((s) => s.id), seen.map((s) => s.value)],
  );
}

/**
 * Releases a held alert whose condition cleared: a firing one becomes resolved. Returns the row
 * to the one process that released it; `resolved_by` null means it was firing until now (send
 * the resolved notice), set means an operator had resolved it already (nothing more to say).
 */
export async function releaseAlert(q: Queryable, id: string): Promise<AlertRow | undefined> {
  const r = await q.query<AlertRow>(
    `UPDATE alerts SET held = false, state = 'resolved', resolved_at = coalesce(resolved_at, now())
      WHERE id = $1 AND held RETURNING ${COLUMNS}`,
    [id],
  );
  return r.rows[0];
}

/** Which alerts a caller sees: its tenant's, plus the fleet-wide ones for platform_admin. */
export interface AlertScope {
  tenantId: string;
  fleet: boolean;
}

const SCOPE_SQL = `(tenant_id = $1 OR ($2::boolean AND tenant_id IS NULL))`;

/** Alerts newest first, filtered by state and rule, in keyset pages on id. */
export async function listAlerts(
  q: Queryable,
  scope: AlertScope,
  filters: { state?: 'firing' | 'resolved' | undefined; rule?: string | undefined },
  page: { limit: number; before?: string | undefined },
): Promise<{ alerts: AlertView[]; next_cursor: string | null }> {
  const r = await q.query<AlertRow>(
    `SELECT ${COLUMNS} FROM alerts
      WHERE ${SCOPE_SQL} AND ($3::text IS NULL OR state = $3) AND ($4::text IS NULL OR rule = $4) AND ($5::bigint IS NULL OR id < $5)
      ORDER BY id DESC LIMIT $6`,
    [scope.tenantId, scope.fleet, filters.state ?? null, filters.rule ?? null, page.before ?? null, page.limit + 1],
  );
  const more = r.rows.length > page.limit;
  const rows = r.rows.slice(0, page.limit);
  return { alerts: rows.map(toView), next_cursor: more ? Buffer.from(rows[rows.length - 1]!.id).toString('base64url') : null };
}

/** One alert in scope, or undefined. */
export async function getAlert(q: Queryable, scope: AlertScope, id: string): Promise<AlertRow | undefined> {
  return (await q.query<AlertRow>(`SELECT ${COLUMNS} FROM alerts WHERE id = $3 AND ${SCOPE_SQL}`, [scope.tenantId, scope.fleet, id])).rows[0];
}

/**
 * An operator resolves a firing alert by hand. The row stays held, so the rule does not fire
 * again for that subject until its condition has cleared once (then the evaluator releases it).
 */
export async function resolveAlertByHand(q: Queryable, scope: AlertScope, id: string, by: string): Promise<AlertRow | undefined> {
  const r = await q.query<AlertRow>(
    `UPDATE alerts SET state = 'resolved', resolved_at = now(), resolved_by = $4
      WHERE id = $3 AND ${SCOPE_SQL} AND state = 'firing' RETURNING ${COLUMNS}`,
    [scope.tenantId, scope.fleet, id, by],
  );
  return r.rows[0];
}
