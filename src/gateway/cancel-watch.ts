import type { Db } from '../db/index.js';
import { forbidden } from '../errors/index.js';
import { logger } from '../telemetry/index.js';

interface InFlight {
  taskId: string;
  sessionId: string | null;
  controller: AbortController;
}

/**
 * Aborts in-flight upstream calls whose task was cancelled or stopped (cancel_requested, which
 * INSUFFICIENT_FUNDS also sets, or no longer running) or whose session ended: one query every
 * pollMs while any call is in flight, none otherwise.
 */
export class CancelWatch {
  private readonly calls = new Set<InFlight>();
  private timer: NodeJS.Timeout | undefined;
  private polling = false;

  constructor(private readonly db: Db, private readonly pollMs: number) {}

  /** Registers a call; the returned function unregisters it. */
  watch(taskId: string, sessionId: string | null, controller: AbortController): () => void {
    const entry = { taskId, sessionId, controller };
    this.calls.add(entry);
    this.timer ??= setInterval(() => void this.poll(), this.pollMs).unref();
    return () => {
      this.calls.delete(entry);
      if (this.calls.size === 0 && this.timer) {
        clearInterval(this.timer);
        this.timer = undefined;
      }
    };
  }

  private async poll(): Promise<void> {
    if (this.polling || this.calls.size === 0) return;
    this.polling = true;
    try {
      const tasks = [...new Set([...this.calls].map((c) => c.taskId))];
      const sessions = [...new Set([...this.calls].flatMap((c) => (c.sessionId ? [c.sessionId] : [])))];
      const r = await this.db.query<{ id: string }>(
        `SELECT id::text FROM tasks WHERE id = ANY ($1::uuid[]) AND (status <> 'running' OR cancel_requested)
         UNION SELECT task_id::text FROM agent_sessions WHERE id = ANY ($2::uuid[]) AND status <> 'running'`,
        [tasks, sessions],
      );
      const stopped = new Set(r.rows.map((x) => x.id));
      for (const c of this.calls)
        if (stopped.has(c.taskId)) c.controller.abort(forbidden(`Task ${c.taskId} was cancelled or stopped (or its session ended); its model call was aborted.`, 'task_stopped'));
    } catch (err) {
      logger().warn({ err }, 'gateway cancel check failed');
    } finally {
      this.polling = false;
    }
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}
