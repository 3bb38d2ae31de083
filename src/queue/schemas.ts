import { z } from 'zod';

export const PRIORITIES = ['critical', 'high', 'normal', 'low'] as const;
export const Priority = z.enum(PRIORITIES);
export type Priority = z.infer<typeof Priority>;

/** Task states (agent-fabric.md FR-SCHED-6 plus waiting, timed_out and dead_lettered). */
export const TASK_STATUSES = ['queued', 'waiting', 'running', 'completed', 'failed', 'cancelled', 'timed_out', 'dead_lettered'] as const;
export const TaskStatus = z.enum(TASK_STATUSES);
export type TaskStatus = z.infer<typeof TaskStatus>;

/** States a task never leaves. */
export const TERMINAL: readonly TaskStatus[] = ['completed', 'failed', 'cancelled', 'timed_out', 'dead_lettered'];
/** Terminal states that fail the tasks depending on this one. */
export const FAILED_TERMINAL: readonly TaskStatus[] = ['failed', 'cancelled', 'timed_out', 'dead_lettered'];

/** A UUID in its canonical lowercase form (the database prints them lowercase). */
export const Uuid = (message = 'ids are UUIDs') => z.uuid(message).transform((s) => s.toLowerCase());

/** What a producer sends for one task. */
export const SubmitTaskBody = z
  .object({
    agent_id: Uuid('agent ids are UUIDs'),
    type: z.string().min(1).max(200).describe('free-form; handed to the agent program'),
    payload: z.record(z.string(), z.unknown()).default({}),
    priority: Priority.default('normal'),
    depends_on: z
      .array(Uuid('task ids are UUIDs'))
      .max(100)
      .default([])
      .transform((ids) => [...new Set(ids)])
      .describe('tasks that must complete first'),
    timeout_seconds: z.number().int().min(1).max(7 * 86_400).optional().describe("default: the agent's runtime profile (600 s unless configured); at most the fabric's ceiling"),
    retry_on_timeout: z.boolean().default(false),
    run_at: z.iso.datetime({ offset: true }).optional().describe('not before this time'),
    max_retries: z.number().int().min(0).max(20).default(3),
    estimated_tokens: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional(),
    idempotency_key: z.string().min(1).max(255).optional().describe('same as the Idempotency-Key header'),
    metadata: z.record(z.string().max(100), z.string().max(1000)).default({}),
  })
  .strict();
export type SubmitTaskBody = z.infer<typeof SubmitTaskBody>;

export const SubmitBatchBody = z
  .object({ tasks: z.array(SubmitTaskBody.omit({ idempotency_key: true })).min(1).max(1000) })
  .strict();

export const TaskError = z.looseObject({ code: z.string(), message: z.string() });

export const Task = z.object({
  id: z.uuid(),
  tenant_id: z.string(),
  agent_id: z.uuid(),
  type: z.string(),
  payload: z.record(z.string(), z.unknown()),
  metadata: z.record(z.string(), z.string()),
  priority: Priority,
  status: TaskStatus,
  revision: z.number().int(),
  depends_on: z.array(z.uuid()),
  run_at: z.string(),
  timeout_seconds: z.number().int(),
  retry_on_timeout: z.boolean(),
  max_retries: z.number().int(),
  attempts: z.number().int(),
  estimated_tokens: z.number().nullable(),
  billing_subject: z.enum(['USER', 'ORG']).nullable().describe("who pays: the workspace's setting at submission, never changed after"),
  result: z.unknown(),
  error: TaskError.nullable(),
  created_at: z.string(),
  updated_at: z.string(),
  started_at: z.string().nullable(),
  finished_at: z.string().nullable(),
});
export type Task = z.infer<typeof Task>;

export const TaskAttempt = z.object({
  attempt: z.number().int(),
  worker_id: z.string(),
  started_at: z.string(),
  finished_at: z.string().nullable(),
  outcome: z.string().nullable(),
  error: TaskError.nullable(),
});

export const ListTasksQuery = z
  .object({
    agent_id: Uuid('agent ids are UUIDs').optional(),
    status: TaskStatus.optional(),
    limit: z.coerce.number().int().min(1).max(500).default(100),
    cursor: z.string().max(200).optional(),
  })
  .strict();

export const QueueStats = z.object({
  agent_id: z.uuid(),
  depth: z.number().int().describe('queued + waiting: counts against max_queue_depth'),
  queued: z.number().int(),
  waiting: z.number().int(),
  running: z.number().int(),
  max_queue_depth: z.number().int(),
  max_concurrency: z.number().int(),
  oldest_queued_age_seconds: z.number().nullable(),
});
