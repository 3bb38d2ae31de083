import type { Queryable } from '../db/index.js';
import { cancelAgentTasks } from '../queue/index.js';
import type { Tx } from '../db/index.js';
import { ERASED_RESPONSE, revokeSubjects } from './subjects.js';

/** What a step knows about the request it serves. */
export interface StepContext {
  tenantId: string;
  /** The agent's or user's id (lowercased). */
  subjectId: string;
  /** Token subjects the subject signs in as: the id, and a user's email. */
  subs: string[];
  /** Replaces the subject's id in the rows that are kept. */
  pseudonym: string;
}

/** Rows (or bytes) a step removed or anonymised, by store: the request's evidence. */
export type Evidence = Record<string, number>;

/** The sub the kept rows name instead of an erased user. */
export const pseudonymSub = (pseudonym: string) => `erased-${pseudonym}`;

async function count(q: Queryable, sql: string, params: unknown[]): Promise<number> {
  const r = await q.query(sql, params);
  return r.rowCount;
}

/**
 * Stored responses that name the subject lose their body and the hash of their request (a hash
 * of a body holding, say, an email confirms a guessed one) but keep their key until it expires:
 * a retry answers 410 idempotency_response_erased instead of running again (which would, say,
 * create the erased user anew). Whoever sent them — another admin's requests too.
 */
function tombstoneIdempotencyRecords(tx: Queryable, p: unknown[]): Promise<number> {
  return count(
    tx,
    `UPDATE idempotency_keys SET response = '${ERASED_RESPONSE}'::jsonb, status_code = 410, request_hash = 'erased'
      WHERE tenant_id = $1 AND strpos(lower(response::text || path), $2::uuid::text) > 0`,
    p,
  );
}

/** Stores the subject's old tokens are refused from; the agent stops taking work, its unfinished tasks are cancelled. */
export async function freezeAgent(tx: Tx, c: StepContext): Promise<Evidence> {
  await tx.query(`UPDATE agents SET status = 'deleted', deleted_at = coalesce(deleted_at, now()), updated_at = now() WHERE tenant_id = $1 AND id = $2::uuid`, [c.tenantId, c.subjectId]);
  const cancelled = await cancelAgentTasks(tx, c.tenantId, c.subjectId);
  await revokeSubjects(tx, c.tenantId, c.subs);
  return { tasks_cancelled: cancelled, tokens_revoked: c.subs.length };
}

/** Memory: key-value entries and semantic memories (text, metadata, vectors). */
export async function eraseAgentMemory(tx: Tx, c: StepContext): Promise<Evidence> {
  const p = [c.tenantId, c.subjectId];
  return {
    memory_kv: await count(tx, `DELETE FROM agent_memory_kv WHERE tenant_id = $1 AND agent_id = $2::uuid`, p),
    semantic_memories: await count(tx, `DELETE FROM semantic_memories WHERE tenant_id = $1 AND agent_id = $2::uuid`, p),
    semantic_memory_spaces: await count(tx, `DELETE FROM semantic_memory_spaces WHERE tenant_id = $1 AND agent_id = $2::uuid`, p),
  };
}

/**
 * Tasks and everything hanging off them: dependencies, attempts, sessions, reservations,
 * events (task logs, model calls), policy decisions, approvals, alerts, stored idempotent
 * responses. Usage and ledger rows are kept for billing, anonymised.
 */
export async function eraseAgentTasks(tx: Tx, c: StepContext): Promise<Evidence> {
  const p = [c.tenantId, c.subjectId];
  const ids = (await tx.query<{ id: string }>(`SELECT id FROM tasks WHERE tenant_id = $1 AND agent_id = $2::uuid`, p)).rows.map((r) => r.id);
  const open = await tx.query<{ id: string }>(
    `SELECT id FROM budget_reservations WHERE tenant_id = $1 AND (agent_id = $2::uuid OR task_id = ANY ($3::uuid[])) AND status = 'open'`,
    [...p, ids],
  );
  if (open.rows.length) await tx.query(`SELECT fabric_budget_release($1::uuid[], 'released')`, [open.rows.map((r) => r.id)]);
  const e: Evidence = {};
  e.task_dependencies = await count(tx, `DELETE FROM task_dependencies WHERE task_id = ANY ($1::uuid[]) OR depends_on = ANY ($1::uuid[])`, [ids]);
  e.task_attempts = await count(tx, `DELETE FROM task_attempts WHERE task_id = ANY ($1::uuid[])`, [ids]);
  e.sessions = await count(tx, `DELETE FROM agent_sessions WHERE tenant_id = $1 AND (agent_id = $2::uuid OR task_id = ANY ($3::uuid[]))`, [...p, ids]);
  e.budget_reservations = await count(tx, `DELETE FROM budget_reservations WHERE tenant_id = $1 AND (agent_id = $2::uuid OR task_id = ANY ($3::uuid[]))`, [...p, ids]);
  e.events = await count(
    tx,
    `DELETE FROM system_events WHERE tenant_id = $1 AND (agent_id = $2::uuid OR lower(subject_id) = $2::uuid::text OR (subject_type = 'task' AND subject_id = ANY ($3::text[])))`,
    [...p, ids],
  );
  e.policy_decisions = await count(tx, `DELETE FROM policy_decisions WHERE tenant_id = $1 AND (agent_id = $2::uuid OR task_id = ANY ($3::uuid[]))`, [...p, ids]);
  e.approvals = await count(tx, `DELETE FROM approvals WHERE tenant_id = $1 AND (agent_id = $2::uuid OR task_id = ANY ($3::uuid[]))`, [...p, ids]);
  e.budget_alerts = await count(tx, `DELETE FROM budget_alerts WHERE tenant_id = $1 AND (agent_id = $2::uuid OR (entity_type = 'agent' AND lower(entity_id) = $2::uuid::text))`, p);
  e.idempotency_keys = await tombstoneIdempotencyRecords(tx, p);
  e.usage_anonymised = await count(
    tx,
    `UPDATE agent_quota_usage SET agent_id = $3, task_id = NULL, session_id = NULL, attempt = NULL,
            idempotency_key = CASE WHEN idempotency_key IS NULL THEN NULL ELSE 'erased-' || id END
      WHERE tenant_id = $1 AND agent_id = $2::uuid`,
    [...p, c.pseudonym],
  );
  e.ledger_anonymised = await count(
    tx,
    `UPDATE ledger_entries SET agent_id = NULL, request_id = NULL, details = jsonb_build_object('erased_agent', $3::text) WHERE tenant_id = $1 AND agent_id = $2::uuid`,
    [...p, c.pseudonym],
  );
  e.tasks = await count(tx, `DELETE FROM tasks WHERE tenant_id = $1 AND agent_id = $2::uuid`, p);
  return e;
}

/** The agent itself: quota, claim state, its own policies, then the row (config, description, entrypoint). */
export async function eraseAgentIdentity(tx: Tx, c: StepContext): Promise<Evidence> {
  const p = [c.tenantId, c.subjectId];
  return {
    // written after their step (a stopping attempt's last log lines, an admin's late memory write): the agent row's foreign keys need them gone
    late_events: await count(tx, `DELETE FROM system_events WHERE tenant_id = $1 AND agent_id = $2::uuid`, p),
    late_memory: Object.values(await eraseAgentMemory(tx, c)).reduce((a, b) => a + b, 0),
    quota: await count(tx, `DELETE FROM agent_quotas WHERE tenant_id = $1 AND agent_id = $2::uuid`, p),
    queue_state: await count(tx, `DELETE FROM agent_queue_state WHERE agent_id = $2::uuid AND EXISTS (SELECT 1 FROM agents WHERE tenant_id = $1 AND id = $2::uuid)`, p),
    policies: await count(tx, `DELETE FROM policies WHERE tenant_id = $1 AND scope_type = 'agent' AND lower(scope_id) = $2::uuid::text`, p),
    alerts: await count(tx, `DELETE FROM alerts WHERE tenant_id = $1 AND agent_id = $2::uuid`, p),
    agent: await count(tx, `DELETE FROM agents WHERE tenant_id = $1 AND id = $2::uuid`, p),
  };
}

/** A user stops signing in: soft-deleted at once, old tokens refused. */
export async function freezeUser(tx: Tx, c: StepContext): Promise<Evidence> {
  await tx.query(`UPDATE users SET deleted_at = coalesce(deleted_at, now()) WHERE tenant_id = $1 AND id = $2::uuid`, [c.tenantId, c.subjectId]);
  await revokeSubjects(tx, c.tenantId, c.subs);
  return { tokens_revoked: c.subs.length };
}

/**
 * Everything that names the user: ownership and budgets dropped, the tasks it submitted
 * blanked (payload, metadata, result, their task.log lines), its policy decisions deleted,
 * its name in policies, approvals, exports and events replaced by the pseudonym, usage
 * anonymised, then the user row.
 */
export async function eraseUserData(tx: Tx, c: StepContext): Promise<Evidence> {
  const p = [c.tenantId, c.subjectId];
  const subs = c.subs.map((s) => s.toLowerCase());
  const sub = pseudonymSub(c.pseudonym);
  const e: Evidence = {};
  e.agents_unowned = await count(tx, `UPDATE agents SET owner_user_id = NULL, updated_at = now() WHERE tenant_id = $1 AND owner_user_id = $2::uuid`, p);
  e.budgets = await count(tx, `DELETE FROM budgets WHERE tenant_id = $1 AND scope = 'user' AND lower(scope_id) = $2::uuid::text`, p);
  const tasks = await tx.query<{ id: string }>(
    `UPDATE tasks SET created_by = $3, payload = '{"erased": true}', metadata = '{}', result = CASE WHEN result IS NULL THEN NULL ELSE '{"erased": true}'::jsonb END, updated_at = now()
      WHERE tenant_id = $1 AND lower(created_by) = ANY ($2::text[]) RETURNING id`,
    [c.tenantId, subs, sub],
  );
  e.tasks_blanked = tasks.rows.length;
  e.task_logs = await count(tx, `DELETE FROM system_events WHERE tenant_id = $1 AND event_type = 'task.log' AND subject_type = 'task' AND subject_id = ANY ($2::text[])`, [
    c.tenantId,
    tasks.rows.map((r) => r.id),
  ]);
  e.policy_decisions = await count(tx, `DELETE FROM policy_decisions WHERE tenant_id = $1 AND lower(actor_sub) = ANY ($2::text[])`, [c.tenantId, subs]);
  const rename = (table: string, col: string) => count(tx, `UPDATE ${table} SET ${col} = $3 WHERE tenant_id = $1 AND lower(${col}) = ANY ($2::text[])`, [c.tenantId, subs, sub]);
  e.policies_renamed = (await rename('policies', 'created_by')) + (await rename('policies', 'updated_by'));
  e.approvals_renamed = await rename('approvals', 'requested_by');
  e.approvals_renamed += await count(tx, `UPDATE approvals SET decided_by = $3, comment = NULL WHERE tenant_id = $1 AND lower(decided_by) = ANY ($2::text[])`, [c.tenantId, subs, sub]);
  e.audit_exports_renamed = await rename('audit_exports', 'requested_by');
  e.audit_exports_renamed += await count(
    tx,
    `UPDATE audit_exports SET filters = regexp_replace(filters::text, $2::uuid::text, $3, 'gi')::jsonb WHERE tenant_id = $1 AND strpos(lower(filters::text), $2::uuid::text) > 0`,
    [...p, c.pseudonym],
  );
  e.erasure_requests_renamed = await rename('erasure_requests', 'requested_by');
  e.alerts_renamed = await rename('alerts', 'resolved_by');
  // the tenant's own operator controls the user set (global ones are the platform's record, not the tenant's)
  e.operator_controls_renamed = (await rename('runtime_settings', 'updated_by')) + (await rename('kill_switches', 'engaged_by'));
  e.events = await count(tx, `DELETE FROM system_events WHERE tenant_id = $1 AND subject_type = 'user' AND lower(subject_id) = $2::uuid::text`, p);
  e.events_anonymised = await count(
    tx,
    `UPDATE system_events SET data = regexp_replace(data::text, $2::uuid::text, $3, 'gi')::jsonb WHERE tenant_id = $1 AND strpos(lower(data::text), $2::uuid::text) > 0`,
    [...p, c.pseudonym],
  );
  e.idempotency_keys = await tombstoneIdempotencyRecords(tx, p);
  e.usage_anonymised = await count(tx, `UPDATE agent_quota_usage SET user_id = $3 WHERE tenant_id = $1 AND user_id = $2::uuid`, [...p, c.pseudonym]);
  e.user = await count(tx, `DELETE FROM users WHERE tenant_id = $1 AND id = $2::uuid`, p);
  return e;
}
