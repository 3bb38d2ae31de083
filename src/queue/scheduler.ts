import type { Principal } from '../auth/index.js';
import { withTransaction, type Db, type Tx } from '../db/index.js';
import { cancelTask, retryTask } from './control.js';
import { DEFAULT_QUEUE_OPTIONS, type QueueOptions } from './options.js';
import { getAttempts, getTask, listTasks, queueStats, type ListTasksOptions } from './queries.js';
import type { SubmitTaskBody, Task, TaskStatus } from './schemas.js';
import { submitTasks } from './submit.js';

/**
 * The AgentScheduler of agent-fabric.md §1 in TypeScript: what the HTTP routes call, and
 * usable in-process. Every method is scoped to the caller's tenant. Methods that write take
 * an optional open transaction (so a route can add its idempotency record to it).
 */
export class AgentScheduler {
  readonly options: QueueOptions;

  constructor(
    private readonly db: Db,
    options: Partial<QueueOptions> = {},
  ) {
    this.options = { ...DEFAULT_QUEUE_OPTIONS, ...options };
  }

  private inTx<T>(tx: Tx | undefined, name: string, fn: (tx: Tx) => Promise<T>): Promise<T> {
    return tx ? fn(tx) : withTransaction(this.db, fn, { name });
  }

  /**
   * A submit is one statement, so without a caller's transaction or an `onSubmit` hook that
   * applies to it, it needs none of its own (one round trip instead of three).
   */
  private async submit(actor: Principal, tasks: readonly SubmitTaskBody[], tx: Tx | undefined, name: string): Promise<Task[]> {
    if (tx || (await this.hooksApply(actor, tasks))) return this.inTx(tx, name, (t) => submitTasks({ tx: t }, actor, tasks, this.options));
    return submitTasks({ db: this.db }, actor, tasks, this.options);
  }

  private async hooksApply(actor: Principal, tasks: readonly SubmitTaskBody[]): Promise<boolean> {
    for (const hook of this.options.onSubmit ?? []) if (!hook.applies || (await hook.applies(this.db, actor, tasks))) return true;
    return false;
  }

  /** Queues one task for its agent. */
  async schedule(actor: Principal, task: SubmitTaskBody, tx?: Tx): Promise<Task> {
    const [created] = await this.submit(actor, [task], tx, 'submit task');
    return created!;
  }

  /** Queues many tasks, all or nothing. */
  scheduleBatch(actor: Principal, tasks: readonly SubmitTaskBody[], tx?: Tx): Promise<Task[]> {
    return this.submit(actor, tasks, tx, 'submit task batch');
  }

  /** Cancels a task; `revision`, when given, must be the task's current one. */
  cancel(tenantId: string, taskId: string, revision?: number, tx?: Tx): Promise<Task> {
    return this.inTx(tx, 'cancel task', (t) => cancelTask(t, tenantId, taskId, revision));
  }

  /** Re-drives a dead-lettered, failed or timed-out task. */
  retry(tenantId: string, taskId: string, revision?: number, tx?: Tx): Promise<Task> {
    return this.inTx(tx, 'retry task', (t) => retryTask(t, tenantId, taskId, this.options, revision));
  }

  async getStatus(tenantId: string, taskId: string): Promise<TaskStatus> {
    return (await getTask(this.db, tenantId, taskId)).status;
  }

  getTask(tenantId: string, taskId: string): Promise<Task> {
    return getTask(this.db, tenantId, taskId);
  }

  getAttempts(tenantId: string, taskId: string) {
    return getAttempts(this.db, tenantId, taskId);
  }

  listTasks(tenantId: string, opts: ListTasksOptions) {
    return listTasks(this.db, tenantId, opts);
  }

  /** Tasks of an agent that have not started: queued and waiting (first page of up to 500). */
  async listPending(tenantId: string, agentId: string): Promise<Task[]> {
    const [queued, waiting] = await Promise.all([
      listTasks(this.db, tenantId, { agentId, status: 'queued', limit: 500 }),
      listTasks(this.db, tenantId, { agentId, status: 'waiting', limit: 500 }),
    ]);
    return [...queued.tasks, ...waiting.tasks];
  }

  queueStats(tenantId: string, agentId: string) {
    return queueStats(this.db, tenantId, agentId);
  }
}
