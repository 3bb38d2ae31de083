import type { Queryable } from '../db/index.js';
import { currentContext } from '../telemetry/index.js';

/** Who did an administrative action. */
export interface AuditActor {
  sub: string;
  role: string;
}

export interface AuditEntry {
  tenantId: string | null;
  actor: AuditActor;
  /** Dotted name, e.g. `agent.delete`. */
  action: string;
  targetType: string;
  targetId: string;
  before?: unknown;
  after?: unknown;
}

/**
 * Appends an administrative or security event to `audit_log`, inside the caller's transaction
 * when it has one. The table's trigger chains the row into the tenant's hash chain in the same
 * statement (migrations/0014_audit_chain.sql): it locks the tenant's chain head until commit, so
 * call this last in a transaction, after the rows it describes are written.
 */
export async function recordAudit(tx: Queryable, entry: AuditEntry): Promise<void> {
  await tx.query(
    `INSERT INTO audit_log (tenant_id, actor_sub, actor_role, action, target_type, target_id, before, after, request_id)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
    [
      entry.tenantId,
      entry.actor.sub,
      entry.actor.role,
      entry.action,
      entry.targetType,
      entry.targetId,
      entry.before === undefined ? null : JSON.stringify(entry.before),
      entry.after === undefined ? null : JSON.stringify(entry.after),
      currentContext().request_id ?? null,
    ],
  );
}
