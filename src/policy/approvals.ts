import { createHash } from 'node:crypto';
import type { Principal } from '../auth/index.js';
import { recordAudit } from '../audit/index.js';
import type { Db, Queryable, Tx } from '../db/index.js';
import { conflict, forbidden, notFound } from '../errors/index.js';
import type { Approvers } from './schemas.js';

/** NOTIFY channel: an approval was decided (payload empty; waiters look again). */
export const APPROVAL_CHANNEL = 'fabric_approvals_changed';

export type ApprovalStatus = 'pending' | 'approved' | 'rejected' | 'expired';

export interface Approval {
  id: string;
  status: ApprovalStatus;
  action: string;
  resource: string;
  context: Record<string, unknown>;
  agent_id: string | null;
  task_id: string | null;
  requested_by: string;
  policy_id: string | null;
  policy_version: number | null;
  rule: number | null;
  reason: string;
  approvers: Approvers;
  expires_at: string;
  created_at: string;
  decided_at: string | null;
  decided_by: string | null;
  comment: string | null;
  used_at: string | null;
}

interface ApprovalRow extends Omit<Approval, 'expires_at' | 'created_at' | 'decided_at' | 'used_at' | 'rule'> {
  rule_index: number | null;
  expires_at: Date;
  created_at: Date;
  decided_at: Date | null;
  used_at: Date | null;
}

function toApproval(r: ApprovalRow): Approval {
  return {
    id: r.id,
    status: r.status,
    action: r.action,
    resource: r.resource,
    context: r.context,
    agent_id: r.agent_id,
    task_id: r.task_id,
    requested_by: r.requested_by,
    policy_id: r.policy_id,
    policy_version: r.policy_version,
    rule: r.rule_index,
    reason: r.reason,
    approvers: r.approvers,
    expires_at: r.expires_at.toISOString(),
    created_at: r.created_at.toISOString(),
    decided_at: r.decided_at?.toISOString() ?? null,
    decided_by: r.decided_by,
    comment: r.comment,
    used_at: r.used_at?.toISOString() ?? null,
  };
}

/** Canonical JSON (sorted keys), so the same context always gives the same key. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v && typeof v === 'object')
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  return JSON.stringify(v) ?? 'null';
}

/** The same request again — agent, action, resource and context — has the same key (the task may differ: a resumed run). */
export function requestKey(agentId: string | null, action: string, resource: string, context: Record<string, unknown>): string {
  return createHash('sha256').update(canonical([agentId, action, resource, context])).digest('hex');
}

/** Marks the tenant's pending requests past their expiry as expired (= denied). */
export async function expireDue(q: Queryable, tenantId: string): Promise<void> {
  await q.query(`UPDATE approvals SET status = 'expired', decided_at = expires_at WHERE tenant_id = $1 AND status = 'pending' AND expires_at <= now()`, [tenantId]);
}

/**
 * Uses an approved, unused request for this key, once: the resumed agent's check passes. Valid
 * for as long after its approval as the request was given to wait.
 */
export async function useApproved(q: Queryable, tenantId: string, key: string): Promise<Approval | undefined> {
  const r = await q.query<ApprovalRow>(
    `UPDATE approvals SET used_at = now()
      WHERE id = (SELECT id FROM approvals WHERE tenant_id = $1 AND request_key = $2 AND status = 'approved' AND used_at IS NULL
                     AND decided_at + (expires_at - created_at) > now() ORDER BY decided_at LIMIT 1 FOR UPDATE SKIP LOCKED)
      RETURNING *`,
    [tenantId, key],
  );
  return r.rows[0] && toApproval(r.rows[0]);
}

export interface OpenApproval {
  tenantId: string;
  key: string;
  action: string;
  resource: string;
  context: Record<string, unknown>;
  agentId: string | null;
  taskId: string | null;
  requestedBy: string;
  policyId: string | null;
  policyVersion: number | null;
  ruleIndex: number | null;
  reason: string;
  approvers: Approvers;
  expiresInSeconds: number;
  /** Preset id (a request opened after a rolled-back submit). */
  id?: string;
}

/** The pending request for this key, or a new one (`created`). One pending request per key. */
export async function openApproval(q: Queryable, o: OpenApproval): Promise<{ approval: Approval; created: boolean }> {
  await q.query(`UPDATE approvals SET status = 'expired', decided_at = expires_at WHERE tenant_id = $1 AND request_key = $2 AND status = 'pending' AND expires_at <= now()`, [o.tenantId, o.key]);
  const ins = await q.query<ApprovalRow>(
    `INSERT INTO approvals (id, tenant_id, action, resource, context, request_key, agent_id, task_id, requested_by, policy_id, policy_version, rule_index, reason, approvers, expires_at)
     VALUES (coalesce($1::uuid, gen_random_uuid()), $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, now() + make_interval(secs => $15))
     ON CONFLICT (tenant_id, request_key) WHERE status = 'pending' DO NOTHING RETURNING *`,
    [o.id ?? null, o.tenantId, o.action, o.resource, JSON.stringify(o.context), o.key, o.agentId, o.taskId, o.requestedBy, o.policyId, o.policyVersion, o.ruleIndex, o.reason, JSON.stringify(o.approvers), o.expiresInSeconds],
  );
  if (ins.rows[0]) return { approval: toApproval(ins.rows[0]), created: true };
  const r = await q.query<ApprovalRow>(`SELECT * FROM approvals WHERE tenant_id = $1 AND request_key = $2 AND status = 'pending'`, [o.tenantId, o.key]);
  return { approval: toApproval(r.rows[0]!), created: false };
}

/** An approval of the tenant; an agent sees only its own (others are a 404). */
export async function getApproval(q: Queryable, viewer: Principal, id: string): Promise<Approval> {
  await expireDue(q, viewer.tenantId);
  const r = await q.query<ApprovalRow>('SELECT * FROM approvals WHERE tenant_id = $1 AND id = $2', [viewer.tenantId, id]);
  const row = r.rows[0];
  if (!row || (viewer.role === 'agent' && row.agent_id?.toLowerCase() !== viewer.sub.toLowerCase())) throw notFound('approval', id);
  return toApproval(row);
}

export async function listApprovals(
  q: Queryable,
  viewer: Principal,
  f: { status?: ApprovalStatus | undefined; agentId?: string | undefined; limit: number },
): Promise<Approval[]> {
  await expireDue(q, viewer.tenantId);
  const agentId = viewer.role === 'agent' ? viewer.sub : f.agentId;
  const r = await q.query<ApprovalRow>(
    `SELECT * FROM approvals WHERE tenant_id = $1 AND ($2::text IS NULL OR status = $2) AND ($3::uuid IS NULL OR agent_id = $3)
      ORDER BY created_at DESC, id LIMIT $4`,
    [viewer.tenantId, f.status ?? null, agentId ?? null, f.limit],
  );
  return r.rows.map(toApproval);
}

/** Whether `who` is one of the request's approvers (agents never are). */
export function isApprover(approvers: Approvers, who: Principal): boolean {
  if (who.role === 'agent') return false;
  return approvers.users.includes(who.sub) || (approvers.roles as string[]).includes(who.role);
}

/** Approves or rejects a pending request; only a listed approver may (403), and only once (409). Audited. */
export async function decideApproval(tx: Tx, actor: Principal, id: string, approve: boolean, comment: string | undefined): Promise<Approval> {
  await expireDue(tx, actor.tenantId);
  const r = await tx.query<ApprovalRow>('SELECT * FROM approvals WHERE tenant_id = $1 AND id = $2 FOR UPDATE', [actor.tenantId, id]);
  const row = r.rows[0];
  if (!row || actor.role === 'agent') {
    if (row && actor.role === 'agent') throw forbidden(`Agents may not decide approval requests; one of its approvers must (${describeApprovers(row.approvers)}).`, 'not_an_approver');
    throw notFound('approval', id);
  }
  if (!isApprover(row.approvers, actor))
    throw forbidden(`You (${actor.sub}, role ${actor.role}) are not an approver of request ${id}; its approvers are ${describeApprovers(row.approvers)}.`, 'not_an_approver');
  if (row.status === 'expired') throw conflict('approval_expired', `Approval request ${id} expired at ${row.expires_at.toISOString()} and counts as denied; the agent must ask again.`);
  if (row.status !== 'pending') throw conflict('approval_already_decided', `Approval request ${id} was already ${row.status} by ${row.decided_by}; a decision cannot be changed.`);
  const u = await tx.query<ApprovalRow>(
    `UPDATE approvals SET status = $3, decided_at = now(), decided_by = $4, decided_role = $5, comment = $6 WHERE tenant_id = $1 AND id = $2 RETURNING *`,
    [actor.tenantId, id, approve ? 'approved' : 'rejected', actor.sub, actor.role, comment ?? null],
  );
  const after = toApproval(u.rows[0]!);
  await recordAudit(tx, { tenantId: actor.tenantId, actor, action: approve ? 'approval.approve' : 'approval.reject', targetType: 'approval', targetId: id, before: toApproval(row), after });
  tx.notifyAfterCommit(APPROVAL_CHANNEL);
  return after;
}

export function describeApprovers(a: Approvers): string {
  const parts = [...a.users.map((u) => `user ${u}`), ...a.roles.map((r) => `role ${r}`)];
  return parts.join(', ') || 'none';
}

/**
 * Waits for approval decisions: one LISTEN per process, started with the first waiter. A
 * waiter wakes on any decision (and looks at its own request again) or at its deadline.
 */
export class ApprovalWatch {
  private readonly wakers = new Set<() => void>();
  private listening: Promise<() => Promise<void>> | undefined;

  constructor(private readonly db: Db) {}

  /** Resolves at the next decision anywhere, or after `ms`. */
  async next(ms: number): Promise<void> {
    const wake = () => {
      const all = [...this.wakers];
      this.wakers.clear();
      for (const w of all) w();
    };
    // back from a dropped LISTEN connection: a decision may have been missed, so all look again
    this.listening ??= this.db.listen(APPROVAL_CHANNEL, wake, (live) => live && wake());
    await this.listening;
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.wakers.delete(done);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, ms));
      this.wakers.add(done);
    });
  }

  async close(): Promise<void> {
    for (const w of [...this.wakers]) w();
    const l = this.listening;
    this.listening = undefined;
    if (l) await (await l)().catch(() => {});
  }
}
