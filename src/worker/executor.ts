import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Task } from '../queue/index.js';
import type { Agent } from '../tenancy/index.js';
import type { UsageReport } from '../budget/usage-item.js';

/** Throw this to fail an attempt with a code of your own (e.g. oom_killed); it is retried like any failure. */
export class AttemptError extends Error {
  override name = 'AttemptError';
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
  }
}

/** Throw this from a handler to fail the task without retries. */
export class PermanentError extends AttemptError {
  override name = 'PermanentError';
  constructor(message: string, code = 'permanent_error') {
    super(message, code);
  }
}

/** What an executor gets besides the task. */
export interface ExecutionContext {
  /** Fired on cancel, timeout, lease loss or drain; `signal.reason` says which. */
  signal: AbortSignal;
  attempt: number;
  agent: Agent;
  /** The worker running the attempt. */
  workerId: string;
  /** W3C trace context of the attempt's span (tracing on): send it as the `traceparent` header of calls to the fabric (the model gateway) so they join the task's trace. */
  traceparent?: string;
  /** A line for the attempt's log. */
  log(line: string): void;
  /**
   * Reports what the attempt used (model tokens and cost, or the compute time of a sandbox
   * session); recorded and charged with the attempt's outcome, in its transaction. Without a
   * compute_ms report the worker charges the attempt's measured wall time.
   */
  reportUsage(usage: UsageReport): void;
}

/** Runs one attempt of a task and resolves to its JSON result; throws to fail it. */
export interface Executor {
  run(task: Task, ctx: ExecutionContext): Promise<unknown>;
  /**
   * The executor stops promptly on abort and has work to finish first (a sandbox kills its
   * program, keeps artifacts and wipes): the worker waits for `run` to settle, up to
   * ABORT_SETTLE_MS, before it records the outcome. Otherwise the outcome is recorded at once.
   */
  readonly settlesOnAbort?: boolean;
}

/** Longest a worker waits for a `settlesOnAbort` executor after aborting it. */
export const ABORT_SETTLE_MS = 30_000;

/** A handler module's export: `export default async function (task, ctx) { … }` (or `export const handle`). */
export type TaskHandler = (task: Task, ctx: ExecutionContext) => unknown;

export interface InProcessExecutorOptions {
  /** Directory handler paths are resolved in; a handler outside it is refused. Default: the working directory. */
  root: string;
}

/**
 * Runs trusted TypeScript/JavaScript handler modules in the worker process (`isolation: none`).
 * Agents with another isolation level are refused until a sandbox executor is configured.
 */
export class InProcessExecutor implements Executor {
  private readonly modules = new Map<string, Promise<TaskHandler>>();

  constructor(private readonly options: InProcessExecutorOptions) {}

  async run(task: Task, ctx: ExecutionContext): Promise<unknown> {
    const level = ctx.agent.isolation.level;
    if (level !== 'none')
      throw new PermanentError(`Agent ${ctx.agent.id} asks for isolation "${level}", which this worker cannot provide; run it on a worker with a sandbox executor.`, 'isolation_unavailable');
    const handler = ctx.agent.entrypoint?.handler;
    if (typeof handler !== 'string') throw new PermanentError(`Agent ${ctx.agent.id} has no entrypoint.handler to run in-process.`, 'no_handler');
    const fn = await this.load(handler);
    return fn(task, ctx);
  }

  private load(handler: string): Promise<TaskHandler> {
    const root = path.resolve(this.options.root);
    const file = path.resolve(root, handler);
    if (file !== root && !file.startsWith(root + path.sep))
      return Promise.reject(new PermanentError(`Handler ${handler} is outside the handlers directory ${root}.`, 'handler_outside_root'));
    let loading = this.modules.get(file);
    if (!loading) {
      loading = import(pathToFileURL(file).href).then((m: { default?: unknown; handle?: unknown }) => {
        const fn = typeof m.default === 'function' ? m.default : m.handle;
        if (typeof fn !== 'function') throw new PermanentError(`Handler ${handler} exports no default function or handle().`, 'no_handler');
        return fn as TaskHandler;
      });
      loading.catch(() => this.modules.delete(file));
      this.modules.set(file, loading);
    }
    return loading;
  }
}
