import { z } from 'zod';
import { recordAudit, type AuditActor } from '../audit/index.js';
import type { Queryable, Tx } from '../db/index.js';
import { FabricError, forbidden, notFound } from '../errors/index.js';
import { requestCancelRunning } from '../queue/index.js';
import { OPERATOR_CHANNEL } from './settings.js';

/** POST /api/admin/kill-switch */
export const EngageBody = z
  .object({
    scope: z.enum(['tenant', 'global']),
    /** The tenant (scope tenant); default the caller's. */
    tenant_id: z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'a tenant id').optional(),
    /** drain: running tasks finish; stop: running tasks are cancelled. */
    mode: z.enum(['drain', 'stop']),
    reason: z.string().trim().min(1, 'say why (it is shown to callers and kept in the audit log)').max(500),
  })
  .strict()
  .refine((b) => b.scope === 'tenant' || b.tenant_id === undefined, { message: 'tenant_id goes with scope tenant only', path: ['tenant_id'] });
export type EngageBody = z.output<typeof EngageBody>;

export const KillSwitch = z.object({
  scope: z.enum(['tenant', 'global']),
  tenant_id: z.string().nullable(),
  mode: z.enum(['drain', 'stop']),
  reason: z.string(),
  engaged_by: z.string(),
  engaged_at: z.string(),
});
export type KillSwitch = z.infer<typeof KillSwitch>;

interface Row {
  tenant_id: string | null;
  mode: 'drain' | 'stop';
  reason: string;
  engaged_by: string;
  engaged_by_role: string;
  engaged_at: Date | string;
}

/** A tenant's admin may not undo what a platform_admin did to the tenant (an abusive tenant must not lift its own switch). */
function assertMayChange(actor: AuditActor, existing: Row | undefined, doing: string): void {
  if (existing?.engaged_by_role === 'platform_admin' && actor.role !== 'platform_admin')
    throw forbidden(`This kill switch was engaged by a platform operator (${existing.engaged_by}); only a platform_admin may ${doing} it.`, 'kill_switch_held');
}

const toKillSwitch = (r: Row): KillSwitch => ({
  scope: r.tenant_id === null ? 'global' : 'tenant',
  tenant_id: r.tenant_id,
  mode: r.mode,
  reason: r.reason,
  engaged_by: r.engaged_by,
  engaged_at: new Date(r.engaged_at).toISOString(),
});

/** Every engaged kill switch; with `tenantId`, only the global one and that tenant's. */
export async function listKillSwitches(q: Queryable, tenantId?: string): Promise<KillSwitch[]> {
  const r = await q.query<Row>(
    `SELECT tenant_id, mode, reason, engaged_by, engaged_at FROM kill_switches
      WHERE $1::text IS NULL OR tenant_id IS NULL OR tenant_id = $1 ORDER BY tenant_id NULLS FIRST`,
    [tenantId ?? null],
  );
  return r.rows.map(toKillSwitch);
}

/**
 * Engages (or changes) the kill switch of a tenant (null: global): from commit on, no task of
 * the scope starts (the claim skips them) and submits are refused. Mode stop also asks the
 * scope's running tasks to cancel. Audited as `kill_switch.engage` with before/after.
 */
export async function engageKillSwitch(tx: Tx, actor: AuditActor, tenantId: string | null, mode: 'drain' | 'stop', reason: string): Promise<{ killSwitch: KillSwitch; cancelled: number }> {
  if (tenantId !== null && (await tx.query(`SELECT 1 FROM tenants WHERE id = $1 AND deleted_at IS NULL`, [tenantId])).rows.length === 0) throw notFound('tenant', tenantId);
  const before = (await tx.query<Row>(`SELECT * FROM kill_switches WHERE coalesce(tenant_id, '*') = coalesce($1::text, '*') FOR UPDATE`, [tenantId])).rows[0];
  assertMayChange(actor, before, 'change');
  const r = await tx.query<Row>(
    `INSERT INTO kill_switches (tenant_id, mode, reason, engaged_by, engaged_by_role) VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT ((coalesce(tenant_id, '*'))) DO UPDATE SET mode = EXCLUDED.mode, reason = EXCLUDED.reason, engaged_by = EXCLUDED.engaged_by,
       engaged_by_role = EXCLUDED.engaged_by_role, engaged_at = now()
     RETURNING tenant_id, mode, reason, engaged_by, engaged_by_role, engaged_at`,
    [tenantId, mode, reason, actor.sub, actor.role],
  );
  const killSwitch = toKillSwitch(r.rows[0]!);
  const cancelled =
    mode === 'stop'
      ? await requestCancelRunning(tx, tenantId, { code: 'kill_switch', message: `An operator stopped running tasks (kill switch, ${tenantId === null ? 'global' : `tenant ${tenantId}`}): ${reason}` })
      : 0;
  await recordAudit(tx, {
    tenantId,
    actor,
    action: 'kill_switch.engage',
    targetType: 'kill_switch',
    targetId: tenantId ?? 'global',
    before: before ? toKillSwitch(before) : null,
    after: { ...killSwitch, running_tasks_cancelled: cancelled },
  });
  tx.notifyAfterCommit(OPERATOR_CHANNEL);
  return { killSwitch, cancelled };
}

/** Lifts the kill switch of a tenant (null: global); queued tasks start again. 404 when none is engaged. Audited. */
export async function releaseKillSwitch(tx: Tx, actor: AuditActor, tenantId: string | null): Promise<KillSwitch> {
  const held = (await tx.query<Row>(`SELECT * FROM kill_switches WHERE coalesce(tenant_id, '*') = coalesce($1::text, '*') FOR UPDATE`, [tenantId])).rows[0];
  assertMayChange(actor, held, 'release');
  const r = await tx.query<Row>(`DELETE FROM kill_switches WHERE coalesce(tenant_id, '*') = coalesce($1::text, '*') RETURNING *`, [tenantId]);
  const row = r.rows[0];
  if (!row) throw new FabricError(404, 'kill_switch_not_engaged', `No ${tenantId === null ? 'global' : `tenant ${tenantId}`} kill switch is engaged; GET /api/admin/kill-switch lists those that are.`);
  const released = toKillSwitch(row);
  await recordAudit(tx, { tenantId, actor, action: 'kill_switch.release', targetType: 'kill_switch', targetId: tenantId ?? 'global', before: released, after: null });
  tx.notifyAfterCommit(OPERATOR_CHANNEL);
  return released;
}

/** The 503 a submit gets while a kill switch covers its tenant. */
export function killSwitchRefusal(k: KillSwitch): FabricError {
  const where = k.scope === 'global' ? 'for every tenant' : `for tenant ${k.tenant_id}`;
  return new FabricError(
    503,
    'kill_switch_engaged',
    `An operator engaged the kill switch ${where} (${k.reason}); no new task is accepted or started until it is released. Retry later or ask your operator.`,
    { scope: k.scope, mode: k.mode },
  );
}
