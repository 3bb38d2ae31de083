import { randomUUID } from 'node:crypto';
import type { Principal } from '../auth/index.js';
import type { Tx } from '../db/index.js';
import { FabricError, notFound } from '../errors/index.js';
import { EVENTS_CHANNEL } from '../events/index.js';
import { currentContext } from '../telemetry/index.js';
import { READY_CHANNEL, type QueueOptions } from './options.js';
import { toTask, type TaskRow } from './rows.js';
import { FAILED_TERMINAL, PRIORITIES, type SubmitTaskBody, type Task, type TaskStatus } from './schemas.js';

interface AgentLimits {
  id: string;
  max_queue_depth: number;
}

/** Locks the agents (in id order, so concurrent submits never deadlock) and returns their limits; 404 for any not in the tenant. */
async function lockAgents(tx: Tx, tenantId: string, agentIds: string[]): Promise<Map<string, AgentLimits>> {
  const r = await tx.query<AgentLimits>(
    `SELECT id, max_queue_depth FROM agents WHERE tenant_id = $1 AND id = ANY($2::uuid[]) AND deleted_at IS NULL
      ORDER BY id FOR NO KEY UPDATE`,
    [tenantId, agentIds],
  );
  const found = new Map(r.rows.map((a) => [a.id, a]));
  const missing = agentIds.find((id) => !found.has(id));
  if (missing) throw notFound('agent', missing);
  return found;
}

/** Refuses the whole submit when any agent's queue would pass its bound (FR-11). */
async function checkDepth(tx: Tx, agents: Map<string, AgentLimits>, adding: Map<string, number>, retryAfter: number): Promise<void> {
  const r = await tx.query<{ agent_id: string; n: number }>(
    `SELECT agent_id, count(*)::int AS n FROM tasks WHERE agent_id = ANY($1::uuid[]) AND status IN ('queued', 'waiting') GROUP BY agent_id`,
    [[...agents.keys()]],
  );
  const depth = new Map(r.rows.map((row) => [row.agent_id, row.n]));
  for (const [agentId, n] of adding) {
    const limit = agents.get(agentId)!.max_queue_depth;
    const current = depth.get(agentId) ?? 0;
    if (current + n > limit)
      throw new FabricError(
        429,
        'queue_full',
        `Agent ${agentId} has ${current} unfinished tasks waiting to run and its queue holds at most ${limit}; retry later or raise its max_queue_depth.`,
        { retry_after_seconds: retryAfter, agent_id: agentId, depth: current, max_queue_depth: limit },
      );
  }
}

/**
 * Status of each dependency; 404 when one is not a task of this tenant. The rows are locked
 * FOR SHARE: a dependency that is finishing right now either finishes first (and we see its
 * end state) or waits for this submit to commit (and then sees the new dependent).
 */
async function dependencyStates(tx: Tx, tenantId: string, ids: string[]): Promise<Map<string, TaskStatus>> {
  if (ids.length === 0) return new Map();
  const r = await tx.query<{ id: string; status: TaskStatus }>(
    'SELECT id, status FROM tasks WHERE tenant_id = $1 AND id = ANY($2::uuid[]) ORDER BY id FOR SHARE',
    [tenantId, ids],
  );
  const states = new Map(r.rows.map((row) => [row.id, row.status]));
  const missing = ids.find((id) => !states.has(id));
  if (missing) throw new FabricError(404, 'dependency_not_found', `depends_on names task ${missing}, which does not exist in this tenant.`);
  return states;
}

/**
 * Submits tasks in the caller's transaction, all or nothing: agent locks, depth bounds,
 * dependency checks, the budget seam, then task rows, claim rows and one event per task in
 * one statement, and dependency rows;
 * workers are woken at commit.
 */
export async function submitTasks(tx: Tx, actor: Principal, inputs: readonly SubmitTaskBody[], options: QueueOptions): Promise<Task[]> {
  const tenantId = actor.tenantId;
  const agentIds = [...new Set(inputs.map((t) => t.agent_id))].sort();
  const agents = await lockAgents(tx, tenantId, agentIds);
  const adding = new Map<string, number>();
  for (const t of inputs) adding.set(t.agent_id, (adding.get(t.agent_id) ?? 0) + 1);
  await checkDepth(tx, agents, adding, options.queueFullRetryAfterSeconds);
  const deps = await dependencyStates(tx, tenantId, [...new Set(inputs.flatMap((t) => t.depends_on))]);
  await options.beforeSubmit?.(tx, tenantId, inputs);

  const now = Date.now();
  const rows = inputs.map((t) => {
    const failedDep = t.depends_on.find((d) => FAILED_TERMINAL.includes(deps.get(d)!));
    const pending = t.depends_on.filter((d) => deps.get(d) !== 'completed').length;
    const delayed = t.run_at !== undefined && Date.parse(t.run_at) > now;
    const status: TaskStatus = failedDep ? 'failed' : pending > 0 || delayed ? 'waiting' : 'queued';
    return {
      id: randomUUID() as string,
      agent_id: t.agent_id,
      type: t.type,
      payload: t.payload,
      metadata: t.metadata,
      priority: PRIORITIES.indexOf(t.priority),
      status,
      run_at: t.run_at ?? null,
      timeout_seconds: t.timeout_seconds,
      retry_on_timeout: t.retry_on_timeout,
      max_retries: t.max_retries,
      estimated_tokens: t.estimated_tokens ?? null,
      pending_dependencies: pending,
      error: failedDep ? { code: 'dependency_failed', message: `Dependency ${failedDep} ended ${deps.get(failedDep)}.`, dependency: failedDep } : null,
      depends_on: t.depends_on,
    };
  });
  // One round trip writes the tasks, the agents' claim rows and one event per task.
  const inserted = await tx.query<TaskRow>(
    `WITH ins AS (
       INSERT INTO tasks (id, tenant_id, agent_id, type, payload, metadata, priority, status, run_at, ready_at, sort_key,
                          timeout_seconds, retry_on_timeout, max_retries, estimated_tokens, pending_dependencies, error,
                          created_by, finished_at)
       SELECT r.id, $2, r.agent_id, r.type, r.payload, r.metadata, r.priority, r.status, coalesce(r.run_at, now()),
              CASE WHEN r.status = 'queued' THEN now() END,
              CASE WHEN r.status = 'queued' THEN now() + make_interval(secs => r.priority * $3::int) END,
              r.timeout_seconds, r.retry_on_timeout, r.max_retries, r.estimated_tokens, r.pending_dependencies, r.error,
              $4, CASE WHEN r.status = 'failed' THEN now() END
         FROM jsonb_to_recordset($1::jsonb) AS r(id uuid, agent_id uuid, type text, payload jsonb, metadata jsonb, priority smallint,
              status text, run_at timestamptz, timeout_seconds int, retry_on_timeout boolean, max_retries int,
              estimated_tokens bigint, pending_dependencies int, error jsonb)
       RETURNING *
     ), claim_rows AS (
       INSERT INTO agent_queue_state (agent_id) SELECT DISTINCT agent_id FROM ins ON CONFLICT DO NOTHING
     ), events AS (
       INSERT INTO system_events (tenant_id, agent_id, event_type, subject_type, subject_id, data, request_id)
       SELECT tenant_id, agent_id, 'task.' || status, 'task', id::text,
              jsonb_strip_nulls(jsonb_build_object('status', status, 'revision', revision, 'type', type,
                'priority', (ARRAY['critical', 'high', 'normal', 'low'])[priority + 1], 'error', error)), $5
         FROM ins ORDER BY id
     )
     SELECT ins.*, NULL::text[] AS depends_on FROM ins`,
    [JSON.stringify(rows), tenantId, options.agingSeconds, actor.sub, currentContext().request_id ?? null],
  );
  tx.notifyAfterCommit(EVENTS_CHANNEL);
  const withDeps = rows.filter((r) => r.depends_on.length > 0);
  if (withDeps.length > 0) {
    const pairs = withDeps.flatMap((r) => r.depends_on.map((d) => ({ task_id: r.id, depends_on: d })));
    await tx.query(
      `INSERT INTO task_dependencies (task_id, depends_on)
       SELECT task_id, depends_on FROM jsonb_to_recordset($1::jsonb) AS r(task_id uuid, depends_on uuid)`,
      [JSON.stringify(pairs)],
    );
  }
  const order = new Map(rows.map((r, i) => [r.id, i]));
  const tasks = inserted.rows.map((row) => toTask({ ...row, depends_on: rows[order.get(row.id)!]!.depends_on }));
  tasks.sort((a, b) => order.get(a.id)! - order.get(b.id)!);
  if (tasks.some((t) => t.status === 'queued')) tx.notifyAfterCommit(READY_CHANNEL);
  return tasks;
}
