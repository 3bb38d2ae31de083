import { z } from 'zod';
import type { Queryable } from '../db/index.js';
import { badRequest } from '../errors/index.js';

/** An audit row as the API and the exports show it. */
export const AuditEvent = z.object({
  id: z.number().int(),
  tenant_id: z.string().nullable(),
  actor_sub: z.string(),
  actor_role: z.string(),
  action: z.string(),
  target_type: z.string(),
  target_id: z.string(),
  before: z.unknown(),
  after: z.unknown(),
  request_id: z.string().nullable(),
  created_at: z.string().describe('UTC, to the microsecond'),
  chain_seq: z.number().int().nullable().describe("position in the tenant's hash chain"),
  hash: z.string().nullable(),
});
export type AuditEvent = z.infer<typeof AuditEvent>;

const iso = (what: string) => z.iso.datetime({ offset: true, message: `${what} is an ISO 8601 time, e.g. 2026-01-31T00:00:00Z` });

/** Filters of GET /api/audit and of an export. */
export const AuditFilters = z
  .object({
    actor: z.string().min(1).max(200).optional().describe('actor_sub: who did it (a user id, an agent id, or a system name such as budget)'),
    agent_id: z.string().min(1).max(100).optional().describe('rows about this agent: its target, its actor, or before/after naming it as agent_id'),
    task_id: z.string().min(1).max(100).optional().describe('rows about this task: its target, or before/after naming it as task_id'),
    action: z
      .string()
      .regex(/^[a-z0-9_.]{1,100}\*?$/, 'action is a dotted name such as agent.delete, or a prefix ending in * such as agent.*')
      .optional()
      .describe('exact action, or a prefix ending in * (agent.*)'),
    since: iso('since').optional().describe('created_at ≥ since'),
    until: iso('until').optional().describe('created_at < until'),
  })
  .strict();
export type AuditFilters = z.infer<typeof AuditFilters>;

/** Whose rows: one tenant's, or (platform_admin) every tenant's and the platform-level rows. */
export type AuditScope = { tenantId: string } | { allTenants: true };

export const AUDIT_COLUMNS = `a.id, a.tenant_id, a.actor_sub, a.actor_role, a.action, a.target_type, a.target_id,
  a.before::text AS before, a.after::text AS after, a.request_id,
  to_char(a.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS created_at, a.chain_seq, a.hash`;

export interface AuditRow extends Omit<AuditEvent, 'before' | 'after'> {
  before: string | null;
  after: string | null;
}

export const toEvent = (r: AuditRow): AuditEvent => ({
  ...r,
  id: Number(r.id),
  chain_seq: r.chain_seq === null ? null : Number(r.chain_seq),
  before: r.before === null ? null : (JSON.parse(r.before) as unknown),
  after: r.after === null ? null : (JSON.parse(r.after) as unknown),
});

/** The WHERE clause and parameters of a scope and filters (newest-first keyset on id). */
export function auditWhere(scope: AuditScope, f: AuditFilters, beforeId?: number): { where: string; params: unknown[] } {
  const params: unknown[] = [];
  const conds: string[] = [];
  const p = (v: unknown) => `$${params.push(v)}`;
  if ('tenantId' in scope) conds.push(`a.tenant_id = ${p(scope.tenantId)}`);
  if (f.actor !== undefined) conds.push(`a.actor_sub = ${p(f.actor)}`);
  if (f.agent_id !== undefined) {
    const x = p(f.agent_id.toLowerCase());
    conds.push(
      `((a.target_type = 'agent' AND lower(a.target_id) = ${x}) OR lower(a.actor_sub) = ${x} OR lower(a.after->>'agent_id') = ${x} OR lower(a.before->>'agent_id') = ${x}
        OR lower(a.after->'agent'->>'id') = ${x})`,
    );
  }
  if (f.task_id !== undefined) {
    const x = p(f.task_id.toLowerCase());
    conds.push(`((a.target_type = 'task' AND lower(a.target_id) = ${x}) OR lower(a.after->>'task_id') = ${x} OR lower(a.before->>'task_id') = ${x})`);
  }
  if (f.action !== undefined) {
    if (f.action.endsWith('*')) conds.push(`starts_with(a.action, ${p(f.action.slice(0, -1))})`);
    else conds.push(`a.action = ${p(f.action)}`);
  }
  if (f.since !== undefined) conds.push(`a.created_at >= ${p(f.since)}::timestamptz`);
  if (f.until !== undefined) conds.push(`a.created_at < ${p(f.until)}::timestamptz`);
  if (beforeId !== undefined) conds.push(`a.id < ${p(beforeId)}`);
  return { where: conds.length ? conds.join(' AND ') : 'true', params };
}

export function encodeAuditCursor(id: number): string {
  return Buffer.from(`audit:${id}`).toString('base64url');
}

export function decodeAuditCursor(cursor: string | undefined): number | undefined {
  if (cursor === undefined) return undefined;
  const m = /^audit:(\d{1,18})$/.exec(Buffer.from(cursor, 'base64url').toString('utf8'));
  if (!m) throw badRequest('invalid_cursor', 'The cursor is not one this API returned; pass next_cursor from the previous page unchanged.');
  return Number(m[1]);
}

/** One page of audit rows, newest first. */
export async function listAudit(
  q: Queryable,
  scope: AuditScope,
  f: AuditFilters,
  page: { limit: number; cursor?: string | undefined },
): Promise<{ events: AuditEvent[]; next_cursor: string | null }> {
  const { where, params } = auditWhere(scope, f, decodeAuditCursor(page.cursor));
  const r = await q.query<AuditRow>(`SELECT ${AUDIT_COLUMNS} FROM audit_log a WHERE ${where} ORDER BY a.id DESC LIMIT ${page.limit + 1}`, params);
  const rows = r.rows.slice(0, page.limit).map(toEvent);
  return { events: rows, next_cursor: r.rows.length > page.limit ? encodeAuditCursor(rows[rows.length - 1]!.id) : null };
}
