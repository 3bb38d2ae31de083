import type { Tx } from '../db/index.js';
import { conflict, FabricError, notFound } from '../errors/index.js';
import type { QueueOptions } from './options.js';
import { TASK_COLUMNS, toTask, type TaskRow } from './rows.js';
import { TERMINAL, type Task } from './schemas.js';
import { announce, failDependents } from './transitions.js';

async function lockTask(tx: Tx, tenantId: string, id: string, revision: number | undefined): Promise<TaskRow> {
  const r = await tx.query<TaskRow>(`SELECT ${TASK_COLUMNS} FROM tasks t WHERE t.tenant_id = $1 AND t.id = $2 FOR UPDATE`, [tenantId, id]);
  const row = r.rows[0];
  if (!row) throw notFound('task', id);
  if (revision !== undefined && revision !== row.revision)
    throw new FabricError(409, 'revision_conflict', `The task is at revision ${row.revision}, not ${revision}; re-read it and decide again.`, { revision: row.revision });
  return row;
}

/**
 * Cancels a task: a queued or waiting one ends `cancelled` at once (and its dependents fail);
 * a running one is flagged and its worker fires the attempt's AbortSignal, then records
 * `cancelled`. A finished task is a 409.
 */
export async function cancelTask(tx: Tx, tenantId: string, id: string, revision?: number): Promise<Task> {
  const row = await lockTask(tx, tenantId, id, revision);
  if (TERMINAL.includes(row.status)) throw conflict('task_finished', `The task already ended ${row.status}; there is nothing to cancel.`);
  if (row.status === 'running') {
    if (!row.cancel_requested) {
      const r = await tx.query<TaskRow>(`UPDATE tasks SET cancel_requested = true, revision = revision + 1, updated_at = now() WHERE id = $1 RETURNING *`, [id]);
      await announce(tx, [{ ...r.rows[0]!, status: 'running', error: { code: 'cancel_requested', message: 'Cancellation was requested; the worker is stopping the attempt.' } }]);
    }
  } else {
    const r = await tx.query<TaskRow>(
      `UPDATE tasks SET status = 'cancelled', revision = revision + 1, finished_at = now(), updated_at = now(),
              error = '{"code": "cancelled", "message": "The task was cancelled before it ran."}'
        WHERE id = $1 RETURNING *`,
      [id],
    );
    await announce(tx, [r.rows[0]!, ...(await failDependents(tx, id, 'cancelled'))]);
  }
  return toTask((await tx.query<TaskRow>(`SELECT ${TASK_COLUMNS} FROM tasks t WHERE t.id = $1`, [id])).rows[0]!);
}

/**
 * Re-drives a dead-lettered (or failed, timed-out) task: it is queued again with a fresh
 * retry budget; its attempt history is kept. Tasks that already failed because of it stay failed.
 */
export async function retryTask(tx: Tx, tenantId: string, id: string, options: QueueOptions, revision?: number): Promise<Task> {
  const row = await lockTask(tx, tenantId, id, revision);
  if (!['dead_lettered', 'failed', 'timed_out'].includes(row.status))
    throw conflict('task_not_retryable', `Only dead-lettered, failed or timed-out tasks can be re-driven; this one is ${row.status}.`);
  if (row.error?.code === 'dependency_failed')
    throw conflict('task_not_retryable', 'This task failed because a dependency failed; re-drive the dependency and submit this task again.');
  const r = await tx.query<TaskRow>(
    `UPDATE tasks SET status = 'queued', revision = revision + 1, attempts_base = attempts, error = NULL, result = NULL,
            finished_at = NULL, cancel_requested = false, run_at = now(), ready_at = now(),
            sort_key = now() + make_interval(secs => priority * $2::int), updated_at = now()
      WHERE id = $1 RETURNING *`,
    [id, options.agingSeconds],
  );
  await announce(tx, [r.rows[0]!]);
  return toTask({ ...r.rows[0]!, depends_on: row.depends_on });
}

/**
 * Ends an agent's unfinished work (the agent is being deleted): queued and waiting tasks are
 * cancelled (their dependents fail), running ones are asked to cancel. Returns how many.
 */
export async function cancelAgentTasks(tx: Tx, tenantId: string, agentId: string): Promise<number> {
  const r = await tx.query<TaskRow>(
    `UPDATE tasks SET status = 'cancelled', revision = revision + 1, finished_at = now(), updated_at = now(),
            error = '{"code": "agent_deleted", "message": "The agent was deleted before this task ran."}'
      WHERE tenant_id = $1 AND agent_id = $2 AND status IN ('queued', 'waiting') RETURNING *`,
    [tenantId, agentId],
  );
  const downstream = [];
  for (const row of r.rows) downstream.push(...(await failDependents(tx, row.id, 'cancelled')));
  const running = await tx.query<TaskRow>(
    `UPDATE tasks SET cancel_requested = true, revision = revision + 1, updated_at = now()
      WHERE tenant_id = $1 AND agent_id = $2 AND status = 'running' AND NOT cancel_requested RETURNING *`,
    [tenantId, agentId],
  );
  await announce(tx, [...r.rows, ...downstream, ...running.rows]);
  return r.rows.length + running.rows.length;
}

/**
 * Asks every running task of a tenant (null: of every tenant) to cancel, as a cancel request
 * does: their workers fire the attempts' AbortSignals (sandboxes stop, the gateway aborts
 * in-flight model calls) and record `cancelled`. Queued tasks are left alone. Returns how many.
 */
export async function requestCancelRunning(tx: Tx, tenantId: string | null, why: { code: string; message: string }): Promise<number> {
  const running = await tx.query<TaskRow>(
    `UPDATE tasks SET cancel_requested = true, revision = revision + 1, updated_at = now()
      WHERE ($1::text IS NULL OR tenant_id = $1) AND status = 'running' AND NOT cancel_requested RETURNING *`,
    [tenantId],
  );
  await announce(tx, running.rows.map((row) => ({ ...row, error: why })));
  return running.rows.length;
}
