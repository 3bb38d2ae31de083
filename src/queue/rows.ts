import { PRIORITIES, type Task, type TaskStatus } from './schemas.js';

/** A tasks row as the queue reads it (with its dependency ids). */
export interface TaskRow {
  id: string;
  tenant_id: string;
  agent_id: string;
  type: string;
  payload: Record<string, unknown>;
  metadata: Record<string, string>;
  priority: number;
  status: TaskStatus;
  revision: number;
  run_at: Date;
  timeout_seconds: number;
  retry_on_timeout: boolean;
  max_retries: number;
  attempts: number;
  estimated_tokens: number | null;
  billing_subject: Task['billing_subject'];
  result: unknown;
  error: Task['error'];
  lease_owner: string | null;
  cancel_requested: boolean;
  created_at: Date;
  updated_at: Date;
  started_at: Date | null;
  finished_at: Date | null;
  depends_on: string[] | null;
  /** W3C trace context of the submit (tracing on), which the attempts continue. */
  traceparent?: string | null;
}

/** SELECT list that also gathers the dependency ids. */
export const TASK_COLUMNS = `t.*, (SELECT coalesce(array_agg(d.depends_on::text ORDER BY d.depends_on), '{}') FROM task_dependencies d WHERE d.task_id = t.id) AS depends_on`;

const iso = (d: Date | null) => (d ? d.toISOString() : null);

/** The API shape of a task row. */
export function toTask(row: TaskRow): Task {
  return {
    id: row.id,
    tenant_id: row.tenant_id,
    agent_id: row.agent_id,
    type: row.type,
    payload: row.payload,
    metadata: row.metadata,
    priority: PRIORITIES[row.priority]!,
    status: row.status,
    revision: row.revision,
    depends_on: row.depends_on ?? [],
    run_at: row.run_at.toISOString(),
    timeout_seconds: row.timeout_seconds,
    retry_on_timeout: row.retry_on_timeout,
    max_retries: row.max_retries,
    attempts: row.attempts,
    estimated_tokens: row.estimated_tokens,
    billing_subject: row.billing_subject ?? null,
    result: row.result ?? null,
    error: row.error ?? null,
    created_at: row.created_at.toISOString(),
    updated_at: row.updated_at.toISOString(),
    started_at: iso(row.started_at),
    finished_at: iso(row.finished_at),
  };
}
