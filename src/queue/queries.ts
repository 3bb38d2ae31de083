import { decodeCursor, encodeCursor, type Queryable } from '../db/index.js';
import { notFound } from '../errors/index.js';
import { TASK_COLUMNS, toTask, type TaskRow } from './rows.js';
import type { Task, TaskStatus } from './schemas.js';

export interface TaskAttemptView {
  attempt: number;
  worker_id: string;
  started_at: string;
  finished_at: string | null;
  outcome: string | null;
  error: Task['error'];
}

/** A task of the tenant, or a 404 (also for another tenant's task). */
export async function getTask(q: Queryable, tenantId: string, id: string): Promise<Task> {
  const r = await q.query<TaskRow>(`SELECT ${TASK_COLUMNS} FROM tasks t WHERE t.tenant_id = $1 AND t.id = $2`, [tenantId, id]);
  if (!r.rows[0]) throw notFound('task', id);
  return toTask(r.rows[0]);
}

/** The attempts of a task (tenant-scoped), oldest first. */
export async function getAttempts(q: Queryable, tenantId: string, id: string): Promise<TaskAttemptView[]> {
  const r = await q.query<{ attempt: number; worker_id: string; started_at: Date; finished_at: Date | null; outcome: string | null; error: Task['error'] }>(
    `SELECT a.attempt, a.worker_id, a.started_at, a.finished_at, a.outcome, a.error
       FROM task_attempts a JOIN tasks t ON t.id = a.task_id
      WHERE t.tenant_id = $1 AND a.task_id = $2 ORDER BY a.attempt`,
    [tenantId, id],
  );
  return r.rows.map((a) => ({ ...a, started_at: a.started_at.toISOString(), finished_at: a.finished_at?.toISOString() ?? null, error: a.error ?? null }));
}

export interface ListTasksOptions {
  agentId?: string | undefined;
  status?: TaskStatus | undefined;
  limit: number;
  cursor?: string | undefined;
}

/** One page of the tenant's tasks, oldest first (keyset on created_at, id). */
export async function listTasks(q: Queryable, tenantId: string, opts: ListTasksOptions): Promise<{ tasks: Task[]; next_cursor: string | null }> {
  const after = decodeCursor(opts.cursor);
  const r = await q.query<TaskRow & { cursor_at: string }>(
    `SELECT ${TASK_COLUMNS}, t.created_at::text AS cursor_at FROM tasks t
      WHERE t.tenant_id = $1
        AND ($2::uuid IS NULL OR t.agent_id = $2)
        AND ($3::text IS NULL OR t.status = $3)
        AND ($4::timestamptz IS NULL OR (t.created_at, t.id) > ($4, $5::uuid))
      ORDER BY t.created_at, t.id LIMIT $6`,
    [tenantId, opts.agentId ?? null, opts.status ?? null, after?.createdAt ?? null, after?.id ?? null, opts.limit + 1],
  );
  const rows = r.rows.slice(0, opts.limit);
  const last = rows.at(-1);
  return { tasks: rows.map(toTask), next_cursor: r.rows.length > opts.limit && last ? encodeCursor(last.cursor_at, last.id) : null };
}

/** Depth, running count and the age of the oldest ready task of an agent (tenant-scoped; 404 if no such agent). */
export async function queueStats(q: Queryable, tenantId: string, agentId: string) {
  const r = await q.query<{ max_queue_depth: number; max_concurrency: number; queued: number; waiting: number; running: number; oldest: number | null }>(
    `SELECT a.max_queue_depth, a.max_concurrency,
            count(*) FILTER (WHERE t.status = 'queued')::int AS queued,
            count(*) FILTER (WHERE t.status = 'waiting')::int AS waiting,
            count(*) FILTER (WHERE t.status = 'running')::int AS running,
            extract(epoch FROM now() - min(t.ready_at) FILTER (WHERE t.status = 'queued'))::float8 AS oldest
       FROM agents a LEFT JOIN tasks t ON t.agent_id = a.id AND t.status IN ('queued', 'waiting', 'running')
      WHERE a.tenant_id = $1 AND a.id = $2 AND a.deleted_at IS NULL
      GROUP BY a.id`,
    [tenantId, agentId],
  );
  const s = r.rows[0];
  if (!s) throw notFound('agent', agentId);
  return {
    agent_id: agentId,
    depth: s.queued + s.waiting,
    queued: s.queued,
    waiting: s.waiting,
    running: s.running,
    max_queue_depth: s.max_queue_depth,
    max_concurrency: s.max_concurrency,
    oldest_queued_age_seconds: s.oldest,
  };
}
