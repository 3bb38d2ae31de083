import type { Db, Queryable } from '../db/index.js';
import { badRequest, FabricError, notFound } from '../errors/index.js';
import { getAgent } from '../tenancy/index.js';

/** One key of an agent's key-value memory. */
export interface MemoryEntry {
  key: string;
  value: unknown;
  /** ISO time after which the key no longer exists, or null. */
  expires_at: string | null;
}

export interface MemoryKeyInfo {
  key: string;
  expires_at: string | null;
  updated_at: string;
}

/** Longest key, in bytes of UTF-8. */
export const MAX_KEY_BYTES = 512;

export function checkKey(key: string): void {
  if (Buffer.byteLength(key) > MAX_KEY_BYTES || key.length === 0)
    throw badRequest('invalid_key', `Memory keys are 1–${MAX_KEY_BYTES} bytes of UTF-8; this one is ${Buffer.byteLength(key)}.`);
}

const keyNotFound = (key: string) => new FabricError(404, 'not_found', `Memory key "${key}" does not exist (or has expired).`);

interface Row {
  key: string;
  value: unknown;
  expires_at: Date | null;
}

const entry = (r: Row): MemoryEntry => ({ key: r.key, value: r.value, expires_at: r.expires_at?.toISOString() ?? null });

/** Sets a key (creating or replacing it) with an optional TTL; the agent must exist in the tenant. */
export async function putMemory(q: Queryable, tenantId: string, agentId: string, key: string, value: unknown, ttlSeconds?: number): Promise<MemoryEntry> {
  checkKey(key);
  // the agents join makes a foreign or deleted agent a 404, in the same statement
  const r = await q.query<Row>(
    `INSERT INTO agent_memory_kv (tenant_id, agent_id, key, value, expires_at)
     SELECT a.tenant_id, a.id, $3, $4::jsonb, CASE WHEN $5::int IS NULL THEN NULL ELSE now() + make_interval(secs => $5::int) END
       FROM agents a WHERE a.tenant_id = $1 AND a.id = $2 AND a.deleted_at IS NULL
     ON CONFLICT (agent_id, key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at, updated_at = now()
     RETURNING key, value, expires_at`,
    [tenantId, agentId, key, JSON.stringify(value), ttlSeconds ?? null],
  );
  if (!r.rows[0]) throw notFound('agent', agentId);
  return entry(r.rows[0]);
}

/**
 * Reads a key: one indexed lookup. A key past its expiry is not found even before the sweeper
 * deletes it. Only on a miss is the agent looked up, to tell "no such agent" from "no such key".
 */
export async function getMemory(q: Queryable, tenantId: string, agentId: string, key: string): Promise<MemoryEntry> {
  checkKey(key);
  const r = await q.query<Row>(
    `SELECT key, value, expires_at FROM agent_memory_kv
      WHERE tenant_id = $1 AND agent_id = $2 AND key = $3 AND (expires_at IS NULL OR expires_at > now())`,
    [tenantId, agentId, key],
  );
  if (r.rows[0]) return entry(r.rows[0]);
  await getAgent(q, tenantId, agentId);
  throw keyNotFound(key);
}

export async function deleteMemory(q: Queryable, tenantId: string, agentId: string, key: string): Promise<void> {
  checkKey(key);
  const r = await q.query(`DELETE FROM agent_memory_kv WHERE tenant_id = $1 AND agent_id = $2 AND key = $3 RETURNING (expires_at IS NULL OR expires_at > now()) AS live`, [tenantId, agentId, key]);
  if ((r.rows[0] as { live?: boolean } | undefined)?.live) return;
  await getAgent(q, tenantId, agentId);
  throw keyNotFound(key);
}

function decodeKeyCursor(cursor: string | undefined): string | undefined {
  if (cursor === undefined) return undefined;
  const key = Buffer.from(cursor, 'base64url').toString('utf8');
  if (!key || Buffer.from(key).toString('base64url') !== cursor)
    throw badRequest('invalid_cursor', 'The cursor is not one this API returned; pass next_cursor from the previous page unchanged.');
  return key;
}

/** An agent's live keys in byte order, optionally under a prefix; keyset-paginated by key. */
export async function listMemory(q: Queryable, tenantId: string, agentId: string, opts: { prefix?: string | undefined; limit: number; cursor?: string | undefined }) {
  await getAgent(q, tenantId, agentId);
  const after = decodeKeyCursor(opts.cursor);
  const prefix = opts.prefix ?? '';
  const r = await q.query<{ key: string; expires_at: Date | null; updated_at: Date }>(
    `SELECT key, expires_at, updated_at FROM agent_memory_kv
      WHERE tenant_id = $1 AND agent_id = $2 AND key >= $3 AND starts_with(key, $3) AND ($4::text IS NULL OR key > $4)
        AND (expires_at IS NULL OR expires_at > now())
      ORDER BY key LIMIT $5`,
    [tenantId, agentId, prefix, after ?? null, opts.limit + 1],
  );
  const rows = r.rows.slice(0, opts.limit);
  const keys: MemoryKeyInfo[] = rows.map((row) => ({ key: row.key, expires_at: row.expires_at?.toISOString() ?? null, updated_at: row.updated_at.toISOString() }));
  const last = rows.at(-1);
  return { keys, next_cursor: r.rows.length > opts.limit && last ? Buffer.from(last.key).toString('base64url') : null };
}

/** Deletes expired keys, a batch at a time (safe from several processes at once); returns how many. */
export async function sweepExpiredMemory(db: Db, batch = 1000): Promise<number> {
  let total = 0;
  for (;;) {
    const r = await db.query(
      `DELETE FROM agent_memory_kv WHERE ctid IN (
         SELECT ctid FROM agent_memory_kv WHERE expires_at <= now() LIMIT $1 FOR UPDATE SKIP LOCKED)`,
      [batch],
    );
    total += r.rowCount ?? 0;
    if ((r.rowCount ?? 0) < batch) return total;
  }
}
