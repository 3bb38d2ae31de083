import type { Tx } from '../db/index.js';
import { recordEvents } from '../events/index.js';
import { READY_CHANNEL } from './options.js';
import type { TaskStatus } from './schemas.js';

/** One task's move to a new state, as recorded in its event. */
export interface Moved {
  id: string;
  tenant_id: string;
  agent_id: string;
  status: TaskStatus;
  revision: number;
  attempts: number;
  error?: unknown;
}

/** Records one event per moved task (`task.<status>` with its revision) and wakes workers if any became ready. */
export async function announce(tx: Tx, moved: readonly Moved[]): Promise<void> {
  await recordEvents(
    tx,
    moved.map((m) => ({
      tenantId: m.tenant_id,
      agentId: m.agent_id,
      eventType: `task.${m.status}`,
      subjectType: 'task',
      subjectId: m.id,
      data: { status: m.status, revision: m.revision, attempt: m.attempts, ...(m.error ? { error: m.error } : {}) },
    })),
  );
  if (moved.some((m) => m.status === 'queued')) tx.notifyAfterCommit(READY_CHANNEL);
}

const MOVED = 'id, tenant_id, agent_id, status, revision, attempts, error';

/**
 * After `taskId` completed: dependents with no other pending dependency become ready
 * (queued, or waiting for their run_at).
 */
export async function releaseDependents(tx: Tx, taskId: string, agingSeconds: number): Promise<Moved[]> {
  const r = await tx.query<Moved>(
    `UPDATE tasks t SET pending_dependencies = t.pending_dependencies - 1,
            status = CASE WHEN t.pending_dependencies = 1 AND t.run_at <= now() THEN 'queued' ELSE t.status END,
            ready_at = CASE WHEN t.pending_dependencies = 1 AND t.run_at <= now() THEN now() ELSE t.ready_at END,
            sort_key = CASE WHEN t.pending_dependencies = 1 AND t.run_at <= now() THEN now() + make_interval(secs => t.priority * $2::int) ELSE t.sort_key END,
            revision = CASE WHEN t.pending_dependencies = 1 AND t.run_at <= now() THEN t.revision + 1 ELSE t.revision END,
            updated_at = now()
      FROM task_dependencies d
      WHERE d.depends_on = $1 AND t.id = d.task_id AND t.status = 'waiting'
      RETURNING t.${MOVED.split(', ').join(', t.')}`,
    [taskId, agingSeconds],
  );
  return r.rows.filter((m) => m.status === 'queued');
}

/**
 * After `taskId` ended without completing: every task downstream of it fails with
 * dependency_failed. One level per statement, so each level sees dependents committed while
 * the previous level waited on their locks (a recursive CTE would miss them).
 */
export async function failDependents(tx: Tx, taskId: string, why: TaskStatus): Promise<Moved[]> {
  const failed: Moved[] = [];
  let frontier = [taskId];
  while (frontier.length > 0) {
    const r = await tx.query<Moved>(
      `UPDATE tasks t SET status = 'failed', revision = t.revision + 1, finished_at = now(), updated_at = now(),
              error = jsonb_build_object('code', 'dependency_failed', 'message', 'A task this one depends on ended ' || $2::text || '.', 'dependency', $3::text)
        WHERE t.id IN (SELECT d.task_id FROM task_dependencies d WHERE d.depends_on = ANY($1::uuid[])) AND t.status IN ('waiting', 'queued')
        RETURNING t.${MOVED.split(', ').join(', t.')}`,
      [frontier, why, taskId],
    );
    failed.push(...r.rows);
    frontier = r.rows.map((m) => m.id);
  }
  return failed;
}
