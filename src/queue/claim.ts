import { withTransaction, type Db } from '../db/index.js';
import type { QueueOptions } from './options.js';
import { toTask, type TaskRow } from './rows.js';
import { announce, promoteDueTasks } from './transitions.js';
import type { Task } from './schemas.js';

/** A task a worker holds: the attempt number is its fencing token. */
export interface ClaimedTask {
  task: Task;
  attempt: number;
  workerId: string;
  /** How long it waited ready in the queue before this claim. */
  waitedSeconds: number;
}

/**
 * Agents with ready work, found with a loose index scan (one index probe per agent rather
 * than a pass over every queued task), whose claim lock this worker can take right now.
 */
const LOCK_READY_AGENTS = `
  WITH RECURSIVE ready(agent_id) AS (
    (SELECT agent_id FROM tasks WHERE status = 'queued' ORDER BY agent_id LIMIT 1)
    UNION ALL
    SELECT (SELECT t.agent_id FROM tasks t WHERE t.status = 'queued' AND t.agent_id > r.agent_id ORDER BY t.agent_id LIMIT 1)
      FROM ready r WHERE r.agent_id IS NOT NULL
  )
  SELECT s.agent_id, s.last_claimed_at FROM agent_queue_state s
    JOIN agents a ON a.id = s.agent_id
   WHERE s.agent_id IN (SELECT agent_id FROM ready WHERE agent_id IS NOT NULL)
     -- only agents that can take a task now: paused, deleted or busy agents must not fill
     -- the LIMIT and starve the rest
     AND a.status = 'active' AND a.deleted_at IS NULL
     AND (SELECT count(*) FROM tasks x WHERE x.agent_id = a.id AND x.status = 'running') < a.max_concurrency
   ORDER BY s.last_claimed_at
   LIMIT $1
   FOR UPDATE OF s SKIP LOCKED`;

/**
 * For the locked agents: free concurrency slots, then that many tasks per agent in claim
 * order; across agents one round at a time (every agent's first task before any agent's
 * second), higher effective priority first, least recently served agent first — so a
 * flooded agent cannot delay one with a single task. Aging lowers the effective priority
 * number by one per agingSeconds waited.
 */
const PICK_TASKS = `
  WITH free AS (
    SELECT a.id AS agent_id, s.last_claimed_at,
           a.max_concurrency - (SELECT count(*) FROM tasks x WHERE x.agent_id = a.id AND x.status = 'running') AS slots
      FROM agents a JOIN agent_queue_state s ON s.agent_id = a.id
     WHERE a.id = ANY($1::uuid[]) AND a.status = 'active' AND a.deleted_at IS NULL
  ), picks AS (
    SELECT t.id, t.priority, t.ready_at, f.last_claimed_at,
           row_number() OVER (PARTITION BY f.agent_id ORDER BY t.sort_key, t.id) AS round
      FROM free f
      CROSS JOIN LATERAL (
        SELECT id, priority, ready_at, sort_key FROM tasks
         WHERE agent_id = f.agent_id AND status = 'queued'
         ORDER BY sort_key, id LIMIT greatest(f.slots, 0)
      ) t
  )
  SELECT id FROM picks
   ORDER BY round,
            greatest(0, priority - floor(extract(epoch FROM now() - ready_at) / $2::int)::int),
            last_claimed_at, ready_at, id
   LIMIT $3`;

const START = `
  WITH before AS (
    SELECT id, extract(epoch FROM clock_timestamp() - ready_at)::float8 AS waited FROM tasks WHERE id = ANY($1::uuid[])
  ), started AS (
    UPDATE tasks SET status = 'running', attempts = attempts + 1, revision = revision + 1,
           lease_owner = $2, lease_expires_at = now() + make_interval(secs => $3::int),
           started_at = coalesce(started_at, now()), updated_at = now()
     WHERE id = ANY($1::uuid[]) AND status = 'queued'
     RETURNING *
  ), attempts AS (
    INSERT INTO task_attempts (task_id, attempt, worker_id) SELECT id, attempts, $2 FROM started
  ), served AS (
    UPDATE agent_queue_state SET last_claimed_at = clock_timestamp() WHERE agent_id IN (SELECT agent_id FROM started)
  )
  SELECT started.*, before.waited,
         (SELECT coalesce(array_agg(d.depends_on::text), '{}') FROM task_dependencies d WHERE d.task_id = started.id) AS depends_on
    FROM started JOIN before ON before.id = started.id`;

/** Claims up to `limit` ready tasks for `workerId` (FOR UPDATE SKIP LOCKED: safe across many workers). */
export async function claimTasks(db: Db, workerId: string, limit: number, options: QueueOptions): Promise<ClaimedTask[]> {
  if (limit <= 0) return [];
  return withTransaction(
    db,
    async (tx) => {
      // waiting tasks whose run_at (or retry backoff) has passed become ready first
      const promoted = await promoteDueTasks(tx, options.agingSeconds);
      if (promoted.length > 0) await announce(tx, promoted);
      const agents = await tx.query<{ agent_id: string }>(LOCK_READY_AGENTS, [Math.max(limit, 16)]);
      if (agents.rows.length === 0) return [];
      const picks = await tx.query<{ id: string }>(PICK_TASKS, [agents.rows.map((a) => a.agent_id), options.agingSeconds, limit]);
      if (picks.rows.length === 0) return [];
      const started = await tx.query<TaskRow & { waited: number | null }>(START, [picks.rows.map((p) => p.id), workerId, options.leaseSeconds]);
      const claimed = started.rows.map((row) => ({ task: toTask(row), attempt: row.attempts, workerId, waitedSeconds: row.waited ?? 0 }));
      await announce(
        tx,
        claimed.map((c) => ({ id: c.task.id, tenant_id: c.task.tenant_id, agent_id: c.task.agent_id, status: 'running' as const, revision: c.task.revision, attempts: c.attempt })),
      );
      return claimed;
    },
    { name: 'claim tasks' },
  );
}

/**
 * Renews the leases of the tasks a worker runs. Returns which of them were asked to cancel
 * and which the worker no longer owns (lease lost: another worker may run them now).
 */
export async function renewLeases(db: Db, workerId: string, held: readonly { id: string; attempt: number }[], leaseSeconds: number) {
  if (held.length === 0) return { cancel: new Set<string>(), lost: new Set<string>() };
  const r = await db.query<{ id: string; cancel_requested: boolean }>(
    `UPDATE tasks t SET lease_expires_at = now() + make_interval(secs => $3::int)
       FROM jsonb_to_recordset($2::jsonb) AS h(id uuid, attempt int)
      WHERE t.id = h.id AND t.attempts = h.attempt AND t.status = 'running' AND t.lease_owner = $1
      RETURNING t.id, t.cancel_requested`,
    [workerId, JSON.stringify(held), leaseSeconds],
  );
  const kept = new Set(r.rows.map((row) => row.id));
  return {
    cancel: new Set(r.rows.filter((row) => row.cancel_requested).map((row) => row.id)),
    lost: new Set(held.filter((h) => !kept.has(h.id)).map((h) => h.id)),
  };
}
