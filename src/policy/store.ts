import { recordAudit, type AuditActor } from '../audit/index.js';
import { PG_CODES, pgCode, type Queryable, type Tx } from '../db/index.js';
import { badRequest, conflict, notFound } from '../errors/index.js';
import { getAgent, resolveWorkspace } from '../tenancy/index.js';
import { validTimeZone, type PolicyRecord } from './compile.js';
import type { CreatePolicyBody, Policy, PolicyRule, Scope, UpdatePolicyBody } from './schemas.js';

/** NOTIFY channel: some policy of some tenant changed (payload empty; listeners reload). */
export const POLICY_CHANNEL = 'fabric_policies_changed';

interface PolicyRow {
  id: string;
  tenant_id: string;
  name: string;
  description: string | null;
  scope_type: Policy['scope']['type'];
  scope_id: string | null;
  priority: number;
  rules: PolicyRule[];
  enabled: boolean;
  version: number;
  created_by: string;
  updated_by: string;
  created_at: Date;
  updated_at: Date;
}

export function toPolicy(r: PolicyRow): Policy {
  return {
    id: r.id,
    tenant_id: r.tenant_id,
    name: r.name,
    description: r.description,
    scope: { type: r.scope_type, id: r.scope_id },
    priority: r.priority,
    rules: r.rules,
    enabled: r.enabled,
    version: r.version,
    created_by: r.created_by,
    updated_by: r.updated_by,
    created_at: r.created_at.toISOString(),
    updated_at: r.updated_at.toISOString(),
  };
}

/** The tenant's live policies, as evaluation needs them. */
export async function loadPolicyRecords(q: Queryable, tenantId: string): Promise<(PolicyRecord & { created_at: string })[]> {
  const r = await q.query<PolicyRow>('SELECT * FROM policies WHERE tenant_id = $1 AND deleted_at IS NULL', [tenantId]);
  return r.rows.map((p) => ({ ...p, created_at: p.created_at.toISOString() }));
}

/** Checks a scope names something of the tenant and returns its stored form. */
async function resolveScope(q: Queryable, tenantId: string, scope: Scope): Promise<{ type: Scope['type']; id: string | null }> {
  const id = scope.id ?? null;
  switch (scope.type) {
    case 'tenant':
      if (id !== null) throw badRequest('invalid_scope', 'A tenant policy applies to the caller\'s tenant: leave scope.id out.');
      return { type: 'tenant', id: null };
    case 'workspace':
      if (id === null) throw badRequest('invalid_scope', 'A workspace policy needs scope.id, the workspace id (GET /api/workspaces).');
      if (!/^[0-9a-f-]{36}$/i.test(id)) throw badRequest('invalid_scope', `scope.id "${id}" is not a workspace id (a UUID from GET /api/workspaces).`);
      return { type: 'workspace', id: (await resolveWorkspace(q, tenantId, id)).id };
    case 'role':
      if (id === null || !['admin', 'operator', 'member', 'viewer', 'agent'].includes(id))
        throw badRequest('invalid_scope', 'A role policy needs scope.id, one of: admin, operator, member, viewer, agent.');
      return { type: 'role', id };
    case 'agent':
      if (id === null) return { type: 'agent', id: null };
      if (!/^[0-9a-f-]{36}$/i.test(id)) throw badRequest('invalid_scope', `scope.id "${id}" is not an agent id (a UUID); leave it out for a policy agents list in their config \`policies\`.`);
      return { type: 'agent', id: (await getAgent(q, tenantId, id)).id };
  }
}

function checkRules(rules: readonly PolicyRule[]): void {
  rules.forEach((r, i) => {
    const tz = r.conditions?.time?.tz;
    if (tz && !validTimeZone(tz)) throw badRequest('invalid_time_zone', `rules[${i}].conditions.time.tz "${tz}" is not an IANA time zone (e.g. UTC, Europe/Berlin).`);
    if ((r.approvers || r.approval_expires_seconds) && r.effect !== 'require_approval')
      throw badRequest('invalid_input', `rules[${i}] has approvers or approval_expires_seconds but its effect is ${r.effect}; they belong to require_approval rules.`);
  });
}

function nameTaken(err: unknown, name: string): never {
  if (pgCode(err) === PG_CODES.uniqueViolation) throw conflict('policy_exists', `A policy named "${name}" exists in this tenant; choose another name or change that one (PUT /api/policies/:id).`);
  throw err;
}

export async function createPolicy(tx: Tx, actor: AuditActor, tenantId: string, body: CreatePolicyBody): Promise<Policy> {
  checkRules(body.rules);
  const scope = await resolveScope(tx, tenantId, body.scope);
  const r = await tx
    .query<PolicyRow>(
      `INSERT INTO policies (tenant_id, name, description, scope_type, scope_id, priority, rules, enabled, created_by, updated_by)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) RETURNING *`,
      [tenantId, body.name, body.description ?? null, scope.type, scope.id, body.priority, JSON.stringify(body.rules), body.enabled, actor.sub],
    )
    .catch((err: unknown) => nameTaken(err, body.name));
  const policy = toPolicy(r.rows[0]!);
  await recordAudit(tx, { tenantId, actor, action: 'policy.create', targetType: 'policy', targetId: policy.id, after: policy });
  tx.notifyAfterCommit(POLICY_CHANNEL);
  return policy;
}

async function lockPolicy(tx: Tx, tenantId: string, id: string): Promise<Policy> {
  const r = await tx.query<PolicyRow>('SELECT * FROM policies WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL FOR UPDATE', [tenantId, id]);
  if (!r.rows[0]) throw notFound('policy', id);
  return toPolicy(r.rows[0]);
}

/** Changes a policy and bumps its version; every process applies it within a second (change notification). */
export async function updatePolicy(tx: Tx, actor: AuditActor, tenantId: string, id: string, body: UpdatePolicyBody): Promise<Policy> {
  const before = await lockPolicy(tx, tenantId, id);
  if (body.version !== undefined && body.version !== before.version)
    throw conflict('policy_version_conflict', `Policy ${id} is at version ${before.version}, not ${body.version}: someone changed it since you read it; read it again and reapply your change.`);
  if (body.rules) checkRules(body.rules);
  const scope = body.scope ? await resolveScope(tx, tenantId, body.scope) : before.scope;
  const r = await tx
    .query<PolicyRow>(
      `UPDATE policies SET name = $3, description = $4, scope_type = $5, scope_id = $6, priority = $7, rules = $8, enabled = $9,
              version = version + 1, updated_by = $10, updated_at = now()
        WHERE tenant_id = $1 AND id = $2 RETURNING *`,
      [
        tenantId,
        id,
        body.name ?? before.name,
        body.description === undefined ? before.description : body.description,
        scope.type,
        scope.id,
        body.priority ?? before.priority,
        JSON.stringify(body.rules ?? before.rules),
        body.enabled ?? before.enabled,
        actor.sub,
      ],
    )
    .catch((err: unknown) => nameTaken(err, body.name ?? before.name));
  const after = toPolicy(r.rows[0]!);
  await recordAudit(tx, { tenantId, actor, action: 'policy.update', targetType: 'policy', targetId: id, before, after });
  tx.notifyAfterCommit(POLICY_CHANNEL);
  return after;
}

export async function deletePolicy(tx: Tx, actor: AuditActor, tenantId: string, id: string): Promise<Policy> {
  const before = await lockPolicy(tx, tenantId, id);
  await tx.query('UPDATE policies SET deleted_at = now(), version = version + 1, updated_by = $3, updated_at = now() WHERE tenant_id = $1 AND id = $2', [tenantId, id, actor.sub]);
  await recordAudit(tx, { tenantId, actor, action: 'policy.delete', targetType: 'policy', targetId: id, before });
  tx.notifyAfterCommit(POLICY_CHANNEL);
  return before;
}

export async function getPolicy(q: Queryable, tenantId: string, id: string): Promise<Policy> {
  const r = await q.query<PolicyRow>('SELECT * FROM policies WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL', [tenantId, id]);
  if (!r.rows[0]) throw notFound('policy', id);
  return toPolicy(r.rows[0]);
}

export async function listPolicies(q: Queryable, tenantId: string, filter: { scopeType?: string | undefined; scopeId?: string | undefined }): Promise<Policy[]> {
  const r = await q.query<PolicyRow>(
    `SELECT * FROM policies WHERE tenant_id = $1 AND deleted_at IS NULL AND ($2::text IS NULL OR scope_type = $2) AND ($3::text IS NULL OR scope_id = $3)
      ORDER BY priority DESC, created_at, id`,
    [tenantId, filter.scopeType ?? null, filter.scopeId ?? null],
  );
  return r.rows.map(toPolicy);
}
