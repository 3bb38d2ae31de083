import { recordAudit, type AuditActor } from '../audit/index.js';
import { decodeCursor, encodeCursor, type Queryable, type Tx } from '../db/index.js';
import { conflict, notFound } from '../errors/index.js';
import { recordEvent } from '../events/index.js';
import type { Agent, UpdateAgentBody } from './schemas.js';

export interface AgentRow {
  id: string;
  tenant_id: string;
  workspace_id: string;
  owner_user_id: string | null;
  name: string;
  description: string | null;
  config: Pick<Agent, 'model' | 'models' | 'tools' | 'isolation' | 'budget' | 'policies'>;
  entrypoint: Record<string, unknown> | null;
  max_queue_depth: number;
  max_concurrency: number;
  status: Agent['status'];
  created_at: Date;
  updated_at: Date;
  deleted_at: Date | null;
}

/** The API shape of an agent row: AgentConfig fields at the top level. */
export function toAgent(row: AgentRow): Agent {
  return {
    id: row.id,
    tenant_id: row.tenant_id,
    workspace_id: row.workspace_id,
    owner_user_id: row.owner_user_id,
    name: row.name,
    description: row.description,
    model: row.config.model,
    ...(row.config.models ? { models: row.config.models } : {}),
    tools: row.config.tools,
    isolation: row.config.isolation,
    budget: row.config.budget,
    policies: row.config.policies,
    entrypoint: row.entrypoint,
    max_queue_depth: row.max_queue_depth,
    max_concurrency: row.max_concurrency,
    status: row.status,
    created_at: row.created_at.toISOString(),
    updated_at: row.updated_at.toISOString(),
    deleted_at: row.deleted_at?.toISOString() ?? null,
  };
}

/** A live agent of the tenant, or a 404 (also for agents of other tenants). */
export async function getAgent(q: Queryable, tenantId: string, id: string, opts: { forUpdate?: boolean } = {}): Promise<Agent> {
  const r = await q.query<AgentRow>(
    `SELECT * FROM agents WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL${opts.forUpdate ? ' FOR UPDATE' : ''}`,
    [tenantId, id],
  );
  if (!r.rows[0]) throw notFound('agent', id);
  return toAgent(r.rows[0]);
}

export interface ListAgentsOptions {
  workspaceId?: string | undefined;
  status?: 'active' | 'paused' | undefined;
  limit: number;
  cursor?: string | undefined;
}

/** One page of the tenant's live agents, oldest first. */
export async function listAgents(q: Queryable, tenantId: string, opts: ListAgentsOptions): Promise<{ agents: Agent[]; next_cursor: string | null }> {
  const after = decodeCursor(opts.cursor);
  const r = await q.query<AgentRow & { cursor_at: string }>(
    `SELECT *, created_at::text AS cursor_at FROM agents
      WHERE tenant_id = $1 AND deleted_at IS NULL
        AND ($2::uuid IS NULL OR workspace_id = $2)
        AND ($3::text IS NULL OR status = $3)
        AND ($4::timestamptz IS NULL OR (created_at, id) > ($4, $5::uuid))
      ORDER BY created_at, id
      LIMIT $6`,
    [tenantId, opts.workspaceId ?? null, opts.status ?? null, after?.createdAt ?? null, after?.id ?? null, opts.limit + 1],
  );
  const rows = r.rows.slice(0, opts.limit);
  const last = rows.at(-1);
  const more = r.rows.length > opts.limit && last;
  return { agents: rows.map(toAgent), next_cursor: more ? encodeCursor(last.cursor_at, last.id) : null };
}

/** Applies a partial update; returns the agent after it. Audited. */
export async function updateAgent(tx: Tx, actor: AuditActor, tenantId: string, id: string, patch: UpdateAgentBody): Promise<Agent> {
  const before = await getAgent(tx, tenantId, id, { forUpdate: true });
  const config = {
    model: patch.model ?? before.model,
    ...((patch.models ?? before.models) ? { models: patch.models ?? before.models } : {}),
    tools: patch.tools ?? before.tools,
    isolation: { ...before.isolation, ...patch.isolation },
    budget: { ...before.budget, ...patch.budget },
    policies: patch.policies ?? before.policies,
  };
  let row: AgentRow | undefined;
  try {
    const r = await tx.query<AgentRow>(
      `UPDATE agents SET name = $3, description = $4, config = $5, entrypoint = $6,
              max_queue_depth = $7, max_concurrency = $8, status = $9, updated_at = now()
        WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL RETURNING *`,
      [
        tenantId,
        id,
        patch.name ?? before.name,
        patch.description !== undefined ? patch.description : before.description,
        JSON.stringify(config),
        jsonOrNull(patch.entrypoint !== undefined ? patch.entrypoint : before.entrypoint),
        patch.max_queue_depth ?? before.max_queue_depth,
        patch.max_concurrency ?? before.max_concurrency,
        patch.status ?? before.status,
      ],
    );
    row = r.rows[0];
  } catch (err) {
    throw nameTaken(err, patch.name) ?? err;
  }
  if (!row) throw notFound('agent', id);
  const after = toAgent(row);
  await recordEvent(tx, { tenantId, agentId: id, eventType: 'agent.updated', subjectType: 'agent', subjectId: id, data: { fields: Object.keys(patch) } });
  await recordAudit(tx, { tenantId, actor, action: 'agent.update', targetType: 'agent', targetId: id, before, after });
  return after;
}

/** jsonb parameter that stays SQL NULL (not JSON null) when there is no value. */
function jsonOrNull(value: unknown): string | null {
  return value === null || value === undefined ? null : JSON.stringify(value);
}

/** Soft-deletes an agent: it disappears from reads, its name is free again, its history stays. Audited. */
export async function deleteAgent(tx: Tx, actor: AuditActor, tenantId: string, id: string): Promise<Agent> {
  const before = await getAgent(tx, tenantId, id, { forUpdate: true });
  const r = await tx.query<AgentRow>(
    `UPDATE agents SET status = 'deleted', deleted_at = now(), updated_at = now()
      WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL RETURNING *`,
    [tenantId, id],
  );
  const after = toAgent(r.rows[0]!);
  await recordEvent(tx, { tenantId, agentId: id, eventType: 'agent.deleted', subjectType: 'agent', subjectId: id });
  await recordAudit(tx, { tenantId, actor, action: 'agent.delete', targetType: 'agent', targetId: id, before, after });
  return after;
}

/** Maps a unique violation on the live-name index to a 409 the caller can act on. */
export function nameTaken(err: unknown, name: string | undefined): Error | undefined {
  const e = err as { code?: string; constraint?: string } | null;
  if (e?.code === '23505' && (e.constraint === 'agents_live_name' || /agents_live_name/.test(String((err as Error).message))))
    return conflict('agent_name_taken', `An agent named "${name}" already exists in this tenant; choose another name or delete that agent.`);
  return undefined;
}
