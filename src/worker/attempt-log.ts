import { withTransaction, type Db } from '../db/index.js';
import { recordEvents } from '../events/index.js';
import type { Task } from '../queue/index.js';
import { logger } from '../telemetry/index.js';

/** Lines are written as one `task.log` event at most this often… */
const FLUSH_MS = 250;
/** …or as soon as this many are waiting. */
const FLUSH_LINES = 200;
/** An attempt's log beyond this many bytes is dropped (one marker line says so). */
export const MAX_ATTEMPT_LOG_BYTES = 1024 * 1024;

/**
 * An attempt's log (a sandbox's stderr, a handler's ctx.log): kept as `task.log` events
 * `{attempt, lines}` on the task, so it is stored with the task and streamed live to whoever
 * follows the task's events. Batched: a chatty program costs one insert per 250 ms.
 */
export class AttemptLog {
  private pending: string[] = [];
  private bytes = 0;
  private truncated = false;
  private timer: NodeJS.Timeout | undefined;
  private writing: Promise<void> = Promise.resolve();

  constructor(
    private readonly db: Db,
    private readonly task: Pick<Task, 'id' | 'tenant_id' | 'agent_id'>,
    private readonly attempt: number,
  ) {}

  line(text: string): void {
    if (this.truncated) return;
    this.bytes += Buffer.byteLength(text) + 1;
    if (this.bytes > MAX_ATTEMPT_LOG_BYTES) {
      this.truncated = true;
      text = `[agent-fabric: log truncated at ${MAX_ATTEMPT_LOG_BYTES} bytes]`;
    }
    this.pending.push(text);
    if (this.pending.length >= FLUSH_LINES) this.flush();
    else this.timer ??= setTimeout(() => this.flush(), FLUSH_MS);
  }

  /** Writes what is waiting; resolves when every line so far is stored. */
  flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    const lines = this.pending;
    this.pending = [];
    if (lines.length) {
      const event = { tenantId: this.task.tenant_id, agentId: this.task.agent_id, eventType: 'task.log', subjectType: 'task', subjectId: this.task.id, data: { attempt: this.attempt, lines } };
      this.writing = this.writing
        .then(() => withTransaction(this.db, (tx) => recordEvents(tx, [event]), { name: 'task log' }))
        .catch((err: unknown) => logger().warn({ err, task_id: this.task.id }, 'storing task log lines failed'));
    }
    return this.writing;
  }
}
