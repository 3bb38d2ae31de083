import type { Notifier, Alert } from '../../src/notify/index.js';
import { TERMINAL, type QueueOptions, type Task } from '../../src/queue/index.js';
import { Worker, type ExecutionContext, type Executor } from '../../src/worker/index.js';
import type { TestApp } from './app.js';

/** Fast queue settings for tests: short leases and retry delays of 0.1 s, 0.4 s, 1.6 s. */
export const FAST_QUEUE = { leaseSeconds: 2, retryBaseSeconds: 0.1, retryFactor: 4 };

/** An executor whose behaviour per task type is given by the test. */
export function scriptedExecutor(handlers: Record<string, (task: Task, ctx: ExecutionContext) => unknown>): Executor {
  return {
    async run(task, ctx) {
      const fn = handlers[task.type];
      if (!fn) throw new Error(`no test handler for type ${task.type}`);
      return fn(task, ctx);
    },
  };
}

/** A notifier that remembers what it was asked to send. */
export function recordingNotifier(): Notifier & { alerts: Alert[] } {
  const alerts: Alert[] = [];
  return { alerts, send: async (a) => void alerts.push(a) };
}

/** Starts a worker on the test app's database. */
export async function startWorker(t: TestApp, executor: Executor, opts: { concurrency?: number; notifier?: Notifier; id?: string; queue?: Partial<QueueOptions> } = {}): Promise<Worker> {
  const worker = new Worker(t.db, {
    executor,
    notifier: opts.notifier ?? recordingNotifier(),
    concurrency: opts.concurrency ?? 4,
    pollIntervalMs: 100,
    queue: { ...FAST_QUEUE, ...opts.queue },
    ...(opts.id ? { id: opts.id } : {}),
  });
  await worker.start();
  return worker;
}

/** Provisions an agent and returns its id. */
export async function provisionAgent(t: TestApp, body: Record<string, unknown> = {}): Promise<string> {
  const res = await t.app.inject({
    method: 'POST',
    url: '/api/agents/provision',
    headers: await t.auth('admin'),
    payload: { name: `agent-${Math.random().toString(36).slice(2, 10)}`, model: 'm', isolation: { level: 'none' }, ...body },
  });
  if (res.statusCode !== 201) throw new Error(`provision failed: ${res.body}`);
  return res.json().agent.id;
}

/** Submits a task as admin; returns the response. */
export async function submit(t: TestApp, body: Record<string, unknown>, headers: Record<string, string> = {}) {
  return t.app.inject({ method: 'POST', url: '/api/tasks', headers: { ...(await t.auth('admin')), ...headers }, payload: body });
}

/** Polls a task until `done(task)` or the deadline; returns the last seen task. */
export async function waitForTask(t: TestApp, id: string, done: (task: Task) => boolean, timeoutMs = 10_000): Promise<Task> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const res = await t.app.inject({ method: 'GET', url: `/api/tasks/${id}`, headers: await t.auth('admin') });
    const task = res.json().task as Task;
    if (done(task) || Date.now() > until) return task;
    await new Promise((r) => setTimeout(r, 50));
  }
}

export const terminal = (task: Task) => TERMINAL.includes(task.status);
