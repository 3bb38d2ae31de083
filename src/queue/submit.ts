import { randomUUID } from 'node:crypto';
import type { Principal } from '../auth/index.js';
import type { Db, Tx } from '../db/index.js';
import { FabricError, notFound } from '../errors/index.js';
import { EVENTS_CHANNEL } from '../events/index.js';
import { activeTraceparent, currentContext } from '../telemetry/index.js';
import { READY_CHANNEL, type QueueOptions } from './options.js';
import { toTask, type TaskRow } from './rows.js';
import { resolveTimeouts } from './timeouts.js';
import { PRIORITIES, type SubmitTaskBody, type Task } from './schemas.js';

/** The caller's open transaction, or the database itself: a submit is then its own transaction. */
export type SubmitTarget = { tx: Tx } | { db: Db };

/** The 4xx a producer gets for an error `fabric_submit_tasks` raised (SQLSTATE class FA). */
function submitError(err: unknown, retryAfter: number): unknown {
  const e = err as { code?: string; message?: string; detail?: string };
  if (typeof e.code !== 'string' || !e.code.startsWith('FA') || !e.detail) return err;
  const d = JSON.parse(e.detail) as { agent_id: string; task_id: string; depth: number; max_queue_depth: number };
  switch (e.message) {
    case 'agent_not_found':
      return notFound('agent', d.agent_id);
    case 'dependency_not_found':
      return new FabricError(404, 'dependency_not_found', `depends_on names task ${d.task_id}, which does not exist in this tenant.`);
    case 'queue_full':
      return new FabricError(
        429,
        'queue_full',
        `Agent ${d.agent_id} has ${d.depth} unfinished tasks waiting to run and its queue holds at most ${d.max_queue_depth}; retry later or raise its max_queue_depth.`,
        { retry_after_seconds: retryAfter, agent_id: d.agent_id, depth: d.depth, max_queue_depth: d.max_queue_depth },
      );
    default:
      return err;
  }
}

/**
 * Submits tasks, all or nothing, in one statement (`fabric_submit_tasks`, migration 0004):
 * agent locks, depth bounds, dependency checks, then task rows, claim rows, dependency rows
 * and one event per task. In the caller's transaction when given one (an idempotency record
 * or the onSubmit hooks' work commits with it); otherwise the statement is its own
 * transaction — one round trip. Workers are woken after commit.
 */
export async function submitTasks(target: SubmitTarget, actor: Principal, inputs: readonly SubmitTaskBody[], options: QueueOptions): Promise<Task[]> {
  const q = 'tx' in target ? target.tx : target.db;
  // without a transaction the caller found that no hook applies (AgentScheduler.submit)
  if (options.onSubmit?.some((h) => !h.applies) && !('tx' in target)) throw new Error('submitTasks: onSubmit hooks need the caller\'s transaction');
  const timeouts = await resolveTimeouts(q, actor.tenantId, inputs, options.timeouts);
  const rows = inputs.map((t, i) => ({
    id: randomUUID() as string,
    agent_id: t.agent_id,
    type: t.type,
    payload: t.payload,
    metadata: t.metadata,
    priority: PRIORITIES.indexOf(t.priority),
    run_at: t.run_at ?? null,
    timeout_seconds: timeouts[i],
    retry_on_timeout: t.retry_on_timeout,
    max_retries: t.max_retries,
    estimated_tokens: t.estimated_tokens ?? null,
    depends_on: t.depends_on,
  }));
  let inserted;
  try {
    // Traced: the tasks keep the submit's trace context, so their attempts join its trace.
    const traceparent = activeTraceparent();
    const params = [actor.tenantId, JSON.stringify(rows), options.agingSeconds, actor.sub, currentContext().request_id ?? null];
    inserted = traceparent
      ? await q.query<TaskRow>('SELECT *, NULL::text[] AS depends_on FROM fabric_submit_traced_tasks($1, $2::jsonb, $3, $4, $5, $6)', [...params, traceparent])
      : await q.query<TaskRow>('SELECT *, NULL::text[] AS depends_on FROM fabric_submit_tasks($1, $2::jsonb, $3, $4, $5)', params);
  } catch (err) {
    throw submitError(err, options.queueFullRetryAfterSeconds);
  }
  const order = new Map(rows.map((r, i) => [r.id, i]));
  const tasks = inserted.rows.map((row) => toTask({ ...row, depends_on: rows[order.get(row.id)!]!.depends_on }));
  tasks.sort((a, b) => order.get(a.id)! - order.get(b.id)!);
  if ('tx' in target) for (const hook of options.onSubmit ?? []) await hook(target.tx, actor, tasks);
  const afterCommit = (channel: string) => ('tx' in target ? target.tx.notifyAfterCommit(channel) : target.db.notifySoon(channel));
  afterCommit(EVENTS_CHANNEL);
  if (tasks.some((t) => t.status === 'queued')) afterCommit(READY_CHANNEL);
  return tasks;
}
