import { withTransaction, type Db, type Tx } from '../db/index.js';
import { EVENTS_CHANNEL } from '../events/index.js';
import { READY_CHANNEL, retryDelaySeconds, type QueueOptions } from './options.js';
import type { ClaimedTask } from './claim.js';
import type { UsageItem } from '../budget/usage-item.js';
import { announce, failDependents, releaseDependents, type Moved } from './transitions.js';
import { FAILED_TERMINAL, type TaskStatus } from './schemas.js';

/** How an attempt ended, as the executor saw it, with what it used (recorded with the outcome, in its transaction). */
export type AttemptOutcome = (
  | { kind: 'completed'; result: unknown }
  | { kind: 'failed'; error: { code: string; message: string; [k: string]: unknown }; permanent?: boolean }
  | { kind: 'timed_out' }
  | { kind: 'cancelled' }
) & { usage?: UsageItem[] };

/** What became of the task: its new status, or `stale` when this attempt no longer owned it. */
export interface FinishResult {
  status: TaskStatus | 'stale';
  task?: Moved;
}

interface RunningRow {
  id: string;
  tenant_id: string;
  agent_id: string;
  attempts: number;
  attempts_base: number;
  max_retries: number;
  retry_on_timeout: boolean;
  cancel_requested: boolean;
  timeout_seconds: number;
  /** Set when the fabric stopped the task (INSUFFICIENT_FUNDS): the attempt ends failed with it. */
  stop_error: { code: string; message: string } | null;
}

function decide(row: RunningRow, outcome: AttemptOutcome, options: QueueOptions): { status: TaskStatus; delay?: number; error?: unknown; result?: unknown } {
  const retriesUsed = row.attempts - row.attempts_base; // runs so far; retries left while ≤ max_retries
  const canRetry = retriesUsed <= row.max_retries;
  if (row.stop_error && outcome.kind !== 'completed') return { status: 'failed', error: row.stop_error };
  switch (outcome.kind) {
    case 'completed':
      return { status: 'completed', result: outcome.result };
    case 'cancelled':
      return { status: 'cancelled', error: { code: 'cancelled', message: 'The task was cancelled while it ran.' } };
    case 'timed_out': {
      const error = { code: 'timed_out', message: `The attempt ran past timeout_seconds (${row.timeout_seconds} s).` };
      if (row.cancel_requested) return { status: 'cancelled', error };
      if (row.retry_on_timeout && canRetry) return { status: 'waiting', delay: retryDelaySeconds(options, retriesUsed), error };
      return { status: 'timed_out', error };
    }
    case 'failed':
      if (row.cancel_requested) return { status: 'cancelled', error: outcome.error };
      if (outcome.permanent) return { status: 'failed', error: outcome.error };
      if (canRetry) return { status: 'waiting', delay: retryDelaySeconds(options, retriesUsed), error: outcome.error };
      return { status: 'dead_lettered', error: { ...outcome.error, attempts: row.attempts } };
  }
}

/**
 * Moves a task out of `running` and propagates to its dependents; callers hold the row lock.
 * What the attempt used is recorded and charged in the same transaction
 * (`fabric_budget_settle`, migration 0010); a task that ended releases its reservations.
 */
async function leaveRunning(tx: Tx, row: RunningRow, attemptOutcome: string, next: ReturnType<typeof decide>, options: QueueOptions, usage: UsageItem[] = []): Promise<Moved> {
  const terminal = next.status !== 'waiting' && next.status !== 'queued';
  const r = await tx.query<Moved>(
    `UPDATE tasks SET status = $2, revision = revision + 1, lease_owner = NULL, lease_expires_at = NULL, updated_at = now(),
            result = CASE WHEN $2 = 'completed' THEN $3::jsonb ELSE result END,
            error = $4::jsonb,
            run_at = CASE WHEN $5::float8 IS NOT NULL THEN now() + make_interval(secs => $5::float8) ELSE run_at END,
            ready_at = CASE WHEN $2 = 'queued' THEN now() ELSE NULL END,
            sort_key = CASE WHEN $2 = 'queued' THEN now() + make_interval(secs => priority * $7::int) ELSE NULL END,
            finished_at = CASE WHEN $6 THEN now() ELSE NULL END
      WHERE id = $1
      RETURNING id, tenant_id, agent_id, status, revision, attempts, error`,
    [row.id, next.status, JSON.stringify(next.result ?? null), next.error ? JSON.stringify(next.error) : null, next.delay ?? null, terminal, options.agingSeconds],
  );
  await tx.query('UPDATE task_attempts SET finished_at = now(), outcome = $3, error = $4 WHERE task_id = $1 AND attempt = $2', [
    row.id,
    row.attempts,
    attemptOutcome,
    next.error ? JSON.stringify(next.error) : null,
  ]);
  const moved = r.rows[0]!;
  if (usage.length > 0 || terminal)
    await tx.query('SELECT fabric_budget_settle($1::jsonb, $2)', [JSON.stringify([{ id: row.id, attempt: row.attempts, usage }]), terminal]);
  const downstream =
    next.status === 'completed'
      ? await releaseDependents(tx, row.id, options.agingSeconds)
      : FAILED_TERMINAL.includes(next.status)
        ? await failDependents(tx, row.id, next.status)
        : [];
  await announce(tx, [moved, ...downstream]);
  return moved;
}

const RUNNING_COLUMNS = 'id, tenant_id, agent_id, attempts, attempts_base, max_retries, retry_on_timeout, cancel_requested, timeout_seconds, stop_error';

/** The task row, locked, if `claim` still holds the current attempt's lease (the fencing check). */
async function lockOwnAttempt(tx: Tx, claim: ClaimedTask): Promise<RunningRow | undefined> {
  const r = await tx.query<RunningRow>(
    `SELECT ${RUNNING_COLUMNS} FROM tasks WHERE id = $1 AND status = 'running' AND attempts = $2 AND lease_owner = $3 FOR UPDATE`,
    [claim.task.id, claim.attempt, claim.workerId],
  );
  return r.rows[0];
}

/**
 * Records how an attempt ended. Idempotent and fenced: only the worker that holds the
 * current attempt's lease can move the task, so a stale worker (lease lost, task claimed
 * again) cannot overwrite a newer attempt's outcome.
 */
export async function finishAttempt(db: Db, claim: ClaimedTask, outcome: AttemptOutcome, options: QueueOptions): Promise<FinishResult> {
  return withTransaction(
    db,
    async (tx) => {
      const row = await lockOwnAttempt(tx, claim);
      if (!row) return { status: 'stale' as const };
      const next = decide(row, outcome, options);
      const attemptOutcome = outcome.kind === 'failed' ? 'failed' : outcome.kind;
      const moved = await leaveRunning(tx, row, attemptOutcome, next, options, outcome.usage);
      return { status: moved.status, task: moved };
    },
    { name: 'finish attempt' },
  );
}

/**
 * Tasks whose worker stopped renewing the lease (crash, kill -9, partition) are claimed
 * again right away — a lost lease is not the task's fault — until their attempts run out.
 */
export async function recoverExpiredLeases(db: Db, options: QueueOptions): Promise<Moved[]> {
  return withTransaction(
    db,
    async (tx) => {
      const r = await tx.query<RunningRow>(
        `SELECT ${RUNNING_COLUMNS} FROM tasks WHERE status = 'running' AND lease_expires_at < now()
          ORDER BY lease_expires_at LIMIT 500 FOR UPDATE SKIP LOCKED`,
      );
      const moved: Moved[] = [];
      for (const row of r.rows) {
        const error = { code: 'lease_lost', message: 'The worker running this attempt stopped renewing its lease.' };
        const canRetry = row.attempts - row.attempts_base <= row.max_retries;
        const next = row.stop_error
          ? { status: 'failed' as const, error: row.stop_error }
          : row.cancel_requested
          ? { status: 'cancelled' as const, error }
          : canRetry
            ? { status: 'queued' as const, error }
            : { status: 'dead_lettered' as const, error };
        moved.push(await leaveRunning(tx, row, 'lease_lost', next, options));
      }
      return moved;
    },
    { name: 'recover expired leases' },
  );
}

/**
 * Gives a running task back to the queue without charging it an attempt (graceful drain):
 * fenced like finishAttempt, so it does nothing if this worker no longer holds it.
 */
export async function releaseAttempt(db: Db, claim: ClaimedTask, options: QueueOptions, usage?: UsageItem[]): Promise<FinishResult> {
  return withTransaction(
    db,
    async (tx) => {
      const row = await lockOwnAttempt(tx, claim);
      if (!row) return { status: 'stale' as const };
      if (row.cancel_requested) {
        const next = decide(row, { kind: 'cancelled' }, options);
        const cancelled = await leaveRunning(tx, row, 'cancelled', next, options, usage);
        return { status: cancelled.status, task: cancelled };
      }
      await tx.query('UPDATE tasks SET attempts_base = attempts_base + 1 WHERE id = $1', [row.id]);
      const error = { code: 'worker_draining', message: 'The worker shut down before the attempt finished; the task was released for another worker.' };
      const moved = await leaveRunning(tx, row, 'lease_lost', { status: 'queued', error }, options, usage);
      return { status: moved.status, task: moved };
    },
    { name: 'release attempt' },
  );
}

/**
 * Records many completed attempts in one statement (`fabric_complete_tasks`, migrations 0004
 * and 0010): the same fencing as finishAttempt, per task, what each used recorded and
 * charged, reservations settled, and dependents released. Returns one result per
 * item, in order.
 */
export async function finishCompletedBatch(
  db: Db,
  items: readonly { claim: ClaimedTask; result: unknown; usage?: UsageItem[] }[],
  options: QueueOptions,
): Promise<FinishResult[]> {
  if (items.length === 0) return [];
  const rows = items.map((i) => ({ id: i.claim.task.id, attempt: i.claim.attempt, worker: i.claim.workerId, result: i.result ?? null, usage: i.usage ?? [] }));
  const r = await db.query<{ o_id: string; o_tenant_id: string; o_agent_id: string; o_status: TaskStatus; o_revision: number; o_attempts: number; o_released: number }>(
    'SELECT * FROM fabric_complete_tasks($1::jsonb, $2)',
    [JSON.stringify(rows), options.agingSeconds],
  );
  if (r.rows.length > 0) db.notifySoon(EVENTS_CHANNEL);
  if (r.rows.some((row) => row.o_released > 0)) db.notifySoon(READY_CHANNEL);
  const byId = new Map<string, Moved>(
    r.rows.map((m) => [m.o_id, { id: m.o_id, tenant_id: m.o_tenant_id, agent_id: m.o_agent_id, status: m.o_status, revision: m.o_revision, attempts: m.o_attempts }]),
  );
  return items.map((i) => {
    const m = byId.get(i.claim.task.id);
    return m ? { status: m.status, task: m } : { status: 'stale' as const };
  });
}
