/**
 * Every column of the schema that can name a user or an agent, and what erasure does with it
 * (erasure-steps.ts does it). test/erasure.test.ts reads information_schema for columns that
 * look like such a reference (SUBJECT_COLUMN_PATTERN) and fails when one is missing here: a new
 * table that refers to agents or users must be handled by erasure before it ships.
 */
export const ERASURE_COVERAGE: Record<string, string> = {
  // identities
  'agents.id': 'agent: row deleted (its config, description, entrypoint with it)',
  'agents.owner_user_id': 'user: set NULL (the agent belongs to the tenant)',
  'users.id': 'user: row deleted (email, name)',
  'agent_quotas.agent_id': 'agent: row deleted',
  'agent_queue_state.agent_id': 'agent: row deleted',
  'revoked_subjects.subject_hash': 'written: the hash of each erased token subject, so its old tokens are refused',
  // tasks and their history
  'tasks.agent_id': 'agent: rows deleted (payload, metadata, result, error)',
  'tasks.created_by': "user: replaced by the pseudonym sub; the task's payload, metadata and result are blanked and its task.log events deleted",
  'task_dependencies.task_id': "agent: rows of the agent's tasks deleted (either side)",
  'task_attempts.task_id': "agent: rows of the agent's tasks deleted",
  'agent_sessions.agent_id': 'agent: rows deleted (artifacts list, wipe evidence)',
  'system_events.agent_id': "agent: rows deleted (task events, task.log attempt logs, model.call gateway calls); user: rows naming the user have the id replaced by the pseudonym",
  'system_events.subject_id': 'agent: rows about the agent or its tasks deleted; user: rows about the user deleted',
  'idempotency_keys.key': 'agent and user: stored responses that name the subject emptied, with their request hash (a retry answers 410 idempotency_response_erased, never runs again); the caller-chosen key stays until it expires (FABRIC_IDEMPOTENCY_TTL_SECONDS)',
  // files and memory
  'agent_files.agent_id': 'agent: bytes deleted from the blob store, then the rows',
  'agent_memory_kv.agent_id': 'agent: rows deleted',
  'semantic_memories.agent_id': 'agent: rows deleted (text, metadata, embedding)',
  'semantic_memory_spaces.agent_id': 'agent: rows deleted',
  // money: kept for billing reconciliation, anonymised
  'agent_quota_usage.agent_id': 'agent: replaced by the request pseudonym; task_id, session_id, attempt cleared; idempotency_key replaced (amounts, dimension, model and period kept)',
  'agent_quota_usage.user_id': 'user: replaced by the request pseudonym',
  'ledger_entries.agent_id': 'agent: set NULL, details replaced by {"erased_agent": pseudonym} (amounts and type kept)',
  'budget_reservations.agent_id': 'agent: open ones released to their budgets, then rows deleted',
  'budget_alerts.agent_id': 'agent: rows deleted',
  'budget_alerts.entity_id': "agent: rows of the agent's quota deleted (budget rows are the tenant's)",
  'budgets.scope_id': "user: the user's budget (scope user) deleted",
  // policy
  'policies.scope_id': "agent: the agent's own policies (scope agent) deleted",
  'policies.created_by': 'user: replaced by the pseudonym sub',
  'policies.updated_by': 'user: replaced by the pseudonym sub',
  'policy_decisions.agent_id': 'agent: rows deleted (context)',
  'policy_decisions.actor_sub': 'user: rows deleted',
  'approvals.agent_id': 'agent: rows deleted (context)',
  'approvals.requested_by': 'user: replaced by the pseudonym sub',
  'approvals.decided_by': 'user: replaced by the pseudonym sub, comment cleared',
  // operations
  'alerts.agent_id': "agent: the agent's alerts deleted (their summaries name it)",
  'alerts.resolved_by': 'user: replaced by the pseudonym sub',
  'runtime_settings.updated_by': "user: replaced by the pseudonym sub in the tenant's settings (global ones are the platform's record)",
  'kill_switches.engaged_by': "user: replaced by the pseudonym sub in the tenant's switch (the global one is the platform's record)",
  // audit and compliance
  'audit_log.actor_sub': 'kept: append-only, hash-chained legal and security record (README "Data erasure")',
  'audit_log.target_id': 'kept: append-only, hash-chained legal and security record',
  'audit_exports.requested_by': 'user: replaced by the pseudonym sub',
  'erasure_requests.subject_id': 'cleared when the request completes (subject_hash stays, for idempotency)',
  'erasure_requests.subject_hash': 'kept: sha256 of tenant, type and id, so a second request for the subject finds the first',
  'erasure_requests.requested_by': 'user: replaced by the pseudonym sub',
};

/** Column names that look like a reference to a user or an agent. */
export const SUBJECT_COLUMN_PATTERN = /^(agent_id|user_id|owner_user_id|[a-z_]*_by|actor_sub|scope_id|entity_id|subject_id|subject_hash|target_id)$/;
