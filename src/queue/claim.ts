import type { Db } from '../db/index.js';
import { EVENTS_CHANNEL } from '../events/index.js';
import { READY_CHANNEL, type QueueOptions } from './options.js';
import { toTask, type TaskRow } from './rows.js';
import type { Task } from './schemas.js';

/** A task a worker holds: the attempt number is its fencing token. */
export interface ClaimedTask {
  task: Task;
  attempt: number;
  workerId: string;
  /** How long it waited ready in the queue before this claim. */
  waitedSeconds: number;
  /** The submit's W3C trace context, which the attempt's span continues; null when the submit was not traced. */
  traceparent: string | null;
}

/**
 * Claims up to `limit` ready tasks for `workerId` in one statement (`fabric_claim_tasks`,
 * migration 0004, which documents the steps): due waiting tasks are promoted, agents that
 * can take work are locked FOR UPDATE SKIP LOCKED (safe across many workers), tasks are
 * picked fairly across agents and by effective priority, and started with a lease.
 */
export async function claimTasks(db: Db, workerId: string, limit: number, options: QueueOptions): Promise<ClaimedTask[]> {
  if (limit <= 0) return [];
  const r = await db.query<TaskRow & { o_promoted: number | null; waited: number | null }>(
    `SELECT c.o_promoted, (c.o_task).*, c.o_waited AS waited, c.o_depends_on AS depends_on
       FROM fabric_claim_tasks($1, $2, $3, $4) c`,
    [workerId, limit, options.leaseSeconds, options.agingSeconds],
  );
  const [summary, ...started] = r.rows;
  const promoted = summary?.o_promoted ?? 0;
  if (promoted > 0) db.notifySoon(READY_CHANNEL);
  if (promoted > 0 || started.length > 0) db.notifySoon(EVENTS_CHANNEL);
  return started.map((row) => ({ task: toTask(row), attempt: row.attempts, workerId, waitedSeconds: row.waited ?? 0, traceparent: row.traceparent ?? null }));
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
