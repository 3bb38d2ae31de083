import { recordAudit, type AuditActor } from '../audit/index.js';
import { systemClock, type Clock } from '../clock/index.js';
import { withTransaction, type Db, type Queryable, type Tx } from '../db/index.js';
import { notFound } from '../errors/index.js';
import type { BlobStore } from '../files/index.js';
import { logger } from '../telemetry/index.js';
import { retentionDeletedTotal, retentionSweepsTotal } from './metrics.js';

/**
 * What the retention sweeper hard-deletes once older than the tenant's retention (README
 * "Retention"): code-bearing artifacts and logs. Billing rows (agent_quota_usage, ledger), the
 * audit log, tasks themselves and the sandbox wipe evidence are not in it.
 */
export const RETENTION_KINDS = ['artifacts', 'task_logs', 'model_calls', 'policy_decisions', 'audit_exports'] as const;
export type RetentionKind = (typeof RETENTION_KINDS)[number];

export interface RetentionOptions {
  db: Db;
  blobs: BlobStore;
  /** Days kept when the tenant sets none (FABRIC_RETENTION_DAYS, default 14). */
  defaultDays: number;
  clock?: Clock;
  /** Most rows of one kind deleted per tenant and sweep (the next sweep continues). Default 5000. */
  batch?: number;
}

export interface TenantSweep {
  tenant_id: string;
  retention_days: number;
  cutoff: string;
  /** false: another process was sweeping this tenant. */
  swept: boolean;
  deleted: Record<RetentionKind, number>;
}

/** One sweep over every tenant: each in its own transaction under a per-tenant advisory lock, so two processes never sweep one tenant at once. */
export async function sweepRetention(o: RetentionOptions): Promise<TenantSweep[]> {
  const tenants = await o.db.query<{ id: string; days: number }>(`SELECT id, coalesce(retention_days, $1)::int AS days FROM tenants WHERE deleted_at IS NULL ORDER BY id`, [o.defaultDays]);
  const out: TenantSweep[] = [];
  for (const t of tenants.rows) {
    try {
      out.push(await withTransaction(o.db, (tx) => sweepTenant(tx, o, t.id, t.days), { name: 'retention sweep' }));
    } catch (err) {
      retentionSweepsTotal.inc({ outcome: 'failed' });
      logger().error({ err, tenant_id: t.id }, 'retention sweep of a tenant failed; the next sweep retries');
    }
  }
  return out;
}

async function sweepTenant(tx: Tx, o: RetentionOptions, tenantId: string, days: number): Promise<TenantSweep> {
  const cutoff = new Date((o.clock ?? systemClock).now().getTime() - days * 86_400_000);
  const deleted = Object.fromEntries(RETENTION_KINDS.map((k) => [k, 0])) as Record<RetentionKind, number>;
  const sweep: TenantSweep = { tenant_id: tenantId, retention_days: days, cutoff: cutoff.toISOString(), swept: false, deleted };
  const lock = await tx.query<{ ok: boolean }>(`SELECT pg_try_advisory_xact_lock(hashtext('agent-fabric:retention:' || $1)) AS ok`, [tenantId]);
  if (!lock.rows[0]!.ok) {
    retentionSweepsTotal.inc({ outcome: 'skipped' });
    return sweep;
  }
  const batch = o.batch ?? 5000;
  const args = [tenantId, cutoff, batch];

  // Artifacts (files a task produced): bytes first, then rows and the agents' storage charge.
  const files = await tx.query<{ id: string; storage_key: string }>(
    `SELECT id, storage_key FROM agent_files WHERE tenant_id = $1 AND task_id IS NOT NULL AND created_at < $2 ORDER BY created_at LIMIT $3 FOR UPDATE`,
    args,
  );
  for (const f of files.rows) await o.blobs.delete(f.storage_key);
  if (files.rows.length) {
    await tx.query(
      `WITH gone AS (DELETE FROM agent_files WHERE tenant_id = $1 AND id = ANY ($2::uuid[]) RETURNING agent_id, size),
            per AS (SELECT agent_id, sum(size)::bigint AS size FROM gone GROUP BY agent_id)
       UPDATE agent_quotas q SET storage_used_bytes = greatest(q.storage_used_bytes - per.size, 0), updated_at = now() FROM per WHERE q.agent_id = per.agent_id`,
      [tenantId, files.rows.map((f) => f.id)],
    );
    deleted.artifacts = files.rows.length;
  }

  const exports = await tx.query<{ id: string; storage_key: string | null }>(
    `SELECT id, storage_key FROM audit_exports WHERE tenant_id = $1 AND created_at < $2 ORDER BY created_at LIMIT $3 FOR UPDATE`,
    args,
  );
  for (const e of exports.rows) if (e.storage_key) await o.blobs.delete(e.storage_key);
  if (exports.rows.length) deleted.audit_exports = (await tx.query(`DELETE FROM audit_exports WHERE id = ANY ($1::uuid[])`, [exports.rows.map((e) => e.id)])).rowCount;

  const events = (type: string) =>
    tx.query(
      `DELETE FROM system_events WHERE id IN (SELECT id FROM system_events WHERE tenant_id = $1 AND event_type = $4 AND created_at < $2 ORDER BY id LIMIT $3)`,
      [...args, type],
    );
  deleted.task_logs = (await events('task.log')).rowCount;
  deleted.model_calls = (await events('model.call')).rowCount;
  deleted.policy_decisions = (
    await tx.query(`DELETE FROM policy_decisions WHERE id IN (SELECT id FROM policy_decisions WHERE tenant_id = $1 AND decided_at < $2 ORDER BY id LIMIT $3)`, args)
  ).rowCount;

  sweep.swept = true;
  retentionSweepsTotal.inc({ outcome: 'ok' });
  for (const k of RETENTION_KINDS) if (deleted[k]) retentionDeletedTotal.inc({ kind: k }, deleted[k]);
  // Evidence: one audit row per tenant and sweep that deleted anything (a sweep that found
  // nothing writes none, or an hourly sweep would fill the audit log with zeros).
  if (RETENTION_KINDS.some((k) => deleted[k] > 0))
    await recordAudit(tx, {
      tenantId,
      actor: { sub: 'retention', role: 'system' },
      action: 'retention.sweep',
      targetType: 'tenant',
      targetId: tenantId,
      after: { retention_days: days, cutoff: sweep.cutoff, deleted },
    });
  return sweep;
}

/** The tenant's retention: its own days, or the default. */
export async function getRetention(q: Queryable, tenantId: string, defaultDays: number): Promise<{ retention_days: number; tenant_override: number | null; default_days: number }> {
  const r = await q.query<{ retention_days: number | null }>(`SELECT retention_days FROM tenants WHERE id = $1`, [tenantId]);
  if (!r.rows[0]) throw notFound('tenant', tenantId);
  const own = r.rows[0].retention_days;
  return { retention_days: own ?? defaultDays, tenant_override: own, default_days: defaultDays };
}

/** Sets (or with null clears) the tenant's retention, audited as retention.update. */
export async function setRetention(db: Db, tenantId: string, actor: AuditActor, days: number | null, defaultDays: number) {
  return withTransaction(
    db,
    async (tx) => {
      const before = await getRetention(tx, tenantId, defaultDays);
      await tx.query(`UPDATE tenants SET retention_days = $2 WHERE id = $1`, [tenantId, days]);
      await recordAudit(tx, { tenantId, actor, action: 'retention.update', targetType: 'tenant', targetId: tenantId, before: { retention_days: before.tenant_override }, after: { retention_days: days } });
      return getRetention(tx, tenantId, defaultDays);
    },
    { name: 'set retention' },
  );
}
