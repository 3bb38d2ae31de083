import type { Queryable, Tx } from '../db/index.js';
import type { Principal } from '../auth/index.js';
import type { SubmitTaskBody, Task } from './schemas.js';
import { DEFAULT_TIMEOUT_POLICY, type TimeoutPolicy } from './timeouts.js';

/** Tuning of the queue; one object, defaults below. */
export interface QueueOptions {
  /** Seconds of waiting that raise a task one priority level (aging). Default 60. */
  agingSeconds: number;
  /** How long a claim lasts without renewal. Default 30 s. */
  leaseSeconds: number;
  /** Retry n waits retryBaseSeconds × retryFactor^(n-1): 1 s, 4 s, 16 s by default. */
  retryBaseSeconds: number;
  retryFactor: number;
  /** Longest wait before a retry, whatever the attempt number. Default 1 h. */
  maxRetryDelaySeconds: number;
  /** Suggested wait in a 429 queue_full. Default 5 s. */
  queueFullRetryAfterSeconds: number;
  /** Default timeouts per runtime and the hard ceiling. Default: 600 s for all, ceiling 7 days. */
  timeouts: TimeoutPolicy;
  /**
   * Run in order inside the submit transaction, after the task rows are written (so the tasks
   * have their ids) and before the commit: the seam where budgets reserve and subscriptions and
   * entitlements are checked. Throwing rolls the whole submit back. With none, a submit without
   * an idempotency key is one statement and needs no transaction of its own.
   */
  onSubmit?: readonly SubmitHook[];
}

/**
 * See QueueOptions.onSubmit. `applies`, when given, says before any transaction whether the
 * hook has work for this submit: when no hook applies, the submit keeps its one-statement,
 * transaction-free path (a hook without `applies` always applies).
 */
export type SubmitHook = ((tx: Tx, actor: Principal, tasks: readonly Task[]) => Promise<void>) & {
  applies?: (q: Queryable, actor: Principal, inputs: readonly SubmitTaskBody[]) => boolean | Promise<boolean>;
};

export const DEFAULT_QUEUE_OPTIONS: QueueOptions = {
  agingSeconds: 60,
  leaseSeconds: 30,
  retryBaseSeconds: 1,
  retryFactor: 4,
  maxRetryDelaySeconds: 3600,
  queueFullRetryAfterSeconds: 5,
  timeouts: DEFAULT_TIMEOUT_POLICY,
};

/** NOTIFY channel workers listen on: new ready work. */
export const READY_CHANNEL = 'fabric_tasks_ready';

/** Delay before retry number `n` (1-based). */
export function retryDelaySeconds(options: QueueOptions, n: number): number {
  return Math.min(options.maxRetryDelaySeconds, options.retryBaseSeconds * options.retryFactor ** (n - 1));
}
