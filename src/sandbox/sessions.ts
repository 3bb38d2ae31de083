import type { Db, Queryable } from '../db/index.js';
import { decodeCursor, encodeCursor } from '../db/index.js';

export type SessionStatus = 'running' | 'completed' | 'failed' | 'timed_out' | 'cancelled' | 'killed' | 'error';

export interface SessionRecord {
  id: string;
  tenant_id: string;
  agent_id: string;
  task_id: string;
  attempt: number;
  worker_id: string;
  isolation: 'process' | 'container';
  status: SessionStatus;
  exit_code: number | null;
  signal: string | null;
  error: { code: string; message: string } | null;
  usage: Record<string, number | boolean> | null;
  artifacts: { name: string; size: number; file_id?: string; error?: { code: string; message: string } }[];
  wipe: Record<string, unknown> | null;
  started_at: string;
  ended_at: string | null;
}

export async function recordSessionStart(
  db: Db,
  s: { id: string; tenantId: string; agentId: string; taskId: string; attempt: number; workerId: string; isolation: 'process' | 'container' },
): Promise<void> {
  await db.query(
    `INSERT INTO agent_sessions (id, tenant_id, agent_id, task_id, attempt, worker_id, isolation, status) VALUES ($1, $2, $3, $4, $5, $6, $7, 'running')`,
    [s.id, s.tenantId, s.agentId, s.taskId, s.attempt, s.workerId, s.isolation],
  );
}

/** Records how a session ended — with its wipe evidence — before the attempt's outcome is. */
export async function recordSessionEnd(
  db: Db,
  id: string,
  end: { status: SessionStatus; exitCode?: number | null; signal?: string | null; error?: { code: string; message: string } | null; usage?: unknown; artifacts?: unknown; wipe?: unknown },
): Promise<void> {
  await db.query(
    `UPDATE agent_sessions SET status = $2, exit_code = $3, signal = $4, error = $5, usage = $6, artifacts = $7, wipe = $8, ended_at = now() WHERE id = $1`,
    [
      id,
      end.status,
      end.exitCode ?? null,
      end.signal ?? null,
      end.error ? JSON.stringify(end.error) : null,
      end.usage ? JSON.stringify(end.usage) : null,
      JSON.stringify(end.artifacts ?? []),
      end.wipe ? JSON.stringify(end.wipe) : null,
    ],
  );
}

/**
 * Sessions still `running` whose attempt has ended — its worker died (the lease expired) or lost
 * the task — are marked `killed`: their sandbox was killed with the worker (--die-with-parent,
 * cgroup kill) or by the boot cleanup of its host. Run periodically; returns how many it closed.
 */
export async function closeOrphanSessions(db: Db): Promise<number> {
  const r = await db.query(
    `UPDATE agent_sessions s SET status = 'killed', ended_at = now(),
            error = '{"code": "worker_lost", "message": "The worker running this session stopped or lost the task; its sandbox was killed and cleaned up."}'
       FROM task_attempts a
      WHERE s.status = 'running' AND a.task_id = s.task_id AND a.attempt = s.attempt AND a.finished_at IS NOT NULL`,
  );
  return r.rowCount ?? 0;
}

/** An agent's sessions, newest first (keyset on started_at, id). */
export async function listSessions(q: Queryable, tenantId: string, agentId: string, opts: { limit: number; cursor?: string | undefined }) {
  const after = decodeCursor(opts.cursor);
  const r = await q.query<Omit<SessionRecord, 'started_at' | 'ended_at'> & { started_at: Date; ended_at: Date | null; cursor_at: string }>(
    `SELECT *, started_at::text AS cursor_at FROM agent_sessions
      WHERE tenant_id = $1 AND agent_id = $2 AND ($3::timestamptz IS NULL OR (started_at, id) < ($3, $4::uuid))
      ORDER BY started_at DESC, id DESC LIMIT $5`,
    [tenantId, agentId, after?.createdAt ?? null, after?.id ?? null, opts.limit + 1],
  );
  const rows = r.rows.slice(0, opts.limit);
  const last = rows.at(-1);
  const sessions: SessionRecord[] = rows.map(({ cursor_at: _, ...row }) => ({ ...row, started_at: row.started_at.toISOString(), ended_at: row.ended_at?.toISOString() ?? null }));
  return { sessions, next_cursor: r.rows.length > opts.limit && last ? encodeCursor(last.cursor_at, last.id) : null };
}
