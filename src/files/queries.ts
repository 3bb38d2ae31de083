import type { Queryable, Tx } from '../db/index.js';
import { decodeCursor, encodeCursor } from '../db/index.js';

/** A file as the API shows it. */
export interface AgentFile {
  id: string;
  name: string;
  size: number;
  sha256: string;
  content_type: string;
  task_id: string | null;
  created_at: string;
}

/** Who owns a file: every query is scoped by both. */
export interface FileScope {
  tenantId: string;
  agentId: string;
}

interface FileRow extends Omit<AgentFile, 'created_at'> {
  created_at: Date;
  storage_key: string;
}

const COLUMNS = 'id, name, size, sha256, content_type, task_id, created_at, storage_key';

const toFile = ({ storage_key: _, ...row }: FileRow): AgentFile => ({ ...row, created_at: row.created_at.toISOString() });

/** The storage quota as an upload needs it; undefined when the agent has no quota row. */
export async function readStorageQuota(q: Queryable, s: FileScope): Promise<{ limit: number; used: number; policy: string } | undefined> {
  const r = await q.query<{ limit: number; used: number; policy: string }>(
    `SELECT storage_limit_bytes AS limit, storage_used_bytes AS used, overage_policy AS policy FROM agent_quotas WHERE tenant_id = $1 AND agent_id = $2`,
    [s.tenantId, s.agentId],
  );
  return r.rows[0];
}

/**
 * Adds `bytes` to the agent's storage use — unless its policy is `block` and that would pass
 * the limit. One conditional statement: concurrent uploads wait on the row lock and each sees
 * the others' committed use, so the sum never passes the limit. Undefined when refused.
 */
export async function chargeStorage(tx: Tx, s: FileScope, bytes: number): Promise<{ used: number; limit: number; policy: string } | undefined> {
  const r = await tx.query<{ used: number; limit: number; policy: string }>(
    `UPDATE agent_quotas SET storage_used_bytes = storage_used_bytes + $3, updated_at = now()
      WHERE tenant_id = $1 AND agent_id = $2 AND (overage_policy <> 'block' OR storage_used_bytes + $3 <= storage_limit_bytes)
      RETURNING storage_used_bytes AS used, storage_limit_bytes AS limit, overage_policy AS policy`,
    [s.tenantId, s.agentId, bytes],
  );
  return r.rows[0];
}

/** True when `taskId` is a task of this agent. */
export async function isAgentTask(q: Queryable, s: FileScope, taskId: string): Promise<boolean> {
  const r = await q.query(`SELECT 1 FROM tasks WHERE tenant_id = $1 AND agent_id = $2 AND id = $3`, [s.tenantId, s.agentId, taskId]);
  return r.rows.length > 0;
}

export async function insertFile(
  tx: Tx,
  s: FileScope,
  f: { id: string; taskId: string | null; name: string; size: number; sha256: string; contentType: string; storageKey: string },
): Promise<AgentFile> {
  const r = await tx.query<FileRow>(
    `INSERT INTO agent_files (id, tenant_id, agent_id, task_id, name, size, sha256, content_type, storage_key)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING ${COLUMNS}`,
    [f.id, s.tenantId, s.agentId, f.taskId, f.name, f.size, f.sha256, f.contentType, f.storageKey],
  );
  return toFile(r.rows[0]!);
}

/** One file of the agent, with its storage key (never shown to clients). */
export async function findFile(q: Queryable, s: FileScope, id: string): Promise<{ file: AgentFile; storageKey: string } | undefined> {
  const r = await q.query<FileRow>(`SELECT ${COLUMNS} FROM agent_files WHERE tenant_id = $1 AND agent_id = $2 AND id = $3`, [s.tenantId, s.agentId, id]);
  return r.rows[0] && { file: toFile(r.rows[0]), storageKey: r.rows[0].storage_key };
}

/**
 * A file by id alone, for signed downloads: the URL's signature names the file, and it was
 * issued only after a tenant- and agent-scoped lookup.
 */
export async function findSignedFile(q: Queryable, id: string): Promise<{ file: AgentFile; storageKey: string } | undefined> {
  const r = await q.query<FileRow>(`SELECT ${COLUMNS} FROM agent_files WHERE id = $1`, [id]);
  return r.rows[0] && { file: toFile(r.rows[0]), storageKey: r.rows[0].storage_key };
}

/** Deletes the row and gives its bytes back to the quota, in the caller's transaction. */
export async function deleteFileRow(tx: Tx, s: FileScope, id: string): Promise<{ file: AgentFile; storageKey: string } | undefined> {
  const r = await tx.query<FileRow>(`DELETE FROM agent_files WHERE tenant_id = $1 AND agent_id = $2 AND id = $3 RETURNING ${COLUMNS}`, [s.tenantId, s.agentId, id]);
  const row = r.rows[0];
  if (!row) return undefined;
  await tx.query(
    `UPDATE agent_quotas SET storage_used_bytes = GREATEST(storage_used_bytes - $3, 0), updated_at = now() WHERE tenant_id = $1 AND agent_id = $2`,
    [s.tenantId, s.agentId, row.size],
  );
  return { file: toFile(row), storageKey: row.storage_key };
}

export interface ListFilesOptions {
  taskId?: string | undefined;
  /** Created at or after. */
  since?: string | undefined;
  /** Created before. */
  until?: string | undefined;
  limit: number;
  cursor?: string | undefined;
}

/** An agent's files, newest first (keyset on created_at, id). */
export async function listFiles(q: Queryable, s: FileScope, o: ListFilesOptions): Promise<{ files: AgentFile[]; next_cursor: string | null }> {
  const after = decodeCursor(o.cursor);
  const r = await q.query<FileRow & { cursor_at: string }>(
    `SELECT ${COLUMNS}, created_at::text AS cursor_at FROM agent_files
      WHERE tenant_id = $1 AND agent_id = $2
        AND ($3::uuid IS NULL OR task_id = $3)
        AND ($4::timestamptz IS NULL OR created_at >= $4)
        AND ($5::timestamptz IS NULL OR created_at < $5)
        AND ($6::timestamptz IS NULL OR (created_at, id) < ($6, $7::uuid))
      ORDER BY created_at DESC, id DESC LIMIT $8`,
    [s.tenantId, s.agentId, o.taskId ?? null, o.since ?? null, o.until ?? null, after?.createdAt ?? null, after?.id ?? null, o.limit + 1],
  );
  const rows = r.rows.slice(0, o.limit);
  const last = rows.at(-1);
  return {
    files: rows.map(({ cursor_at: _, ...row }) => toFile(row)),
    next_cursor: r.rows.length > o.limit && last ? encodeCursor(last.cursor_at, last.id) : null,
  };
}
