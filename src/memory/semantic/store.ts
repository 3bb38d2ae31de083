import type { Queryable, Tx } from '../../db/index.js';
import { notFound } from '../../errors/index.js';
import { toBytes, toVectorLiteral } from './vectors.js';

/** A memory as the API shows it. */
export interface SemanticMemory {
  id: string;
  text: string;
  metadata: Record<string, unknown>;
  created_at: string;
}

/** The vector space a memory's embedding belongs to. */
export interface Space {
  name: string;
  provider: string;
  model: string;
  dimensions: number;
}

/** One agent's memories in one space, and the counters that keep exact caches correct. */
export interface SpaceState {
  space: string;
  memories: number;
  version: number;
  deletions: number;
}

export async function spaceStates(q: Queryable, tenantId: string, agentId: string): Promise<SpaceState[]> {
  const r = await q.query<SpaceState>(
    `SELECT space, memories, version, deletions FROM semantic_memory_spaces WHERE tenant_id = $1 AND agent_id = $2 AND memories > 0`,
    [tenantId, agentId],
  );
  return r.rows;
}

/**
 * Moves the space's version on by `inserted` (one per new row) and returns the first new
 * version. The row lock it takes is held to commit, so rows enter a space in `seq` order.
 */
async function bumpSpace(tx: Tx, tenantId: string, agentId: string, space: string, change: { inserted: number; deleted: number }): Promise<number> {
  // CHECK constraints see the proposed row even when it conflicts, hence GREATEST on a delete.
  const r = await tx.query<{ version: number }>(
    `INSERT INTO semantic_memory_spaces AS s (tenant_id, agent_id, space, memories, version, deletions)
     VALUES ($1, $2, $3, GREATEST($4::bigint - $5::bigint, 0), $4::bigint + $5::bigint, $5::bigint)
     ON CONFLICT (agent_id, space) DO UPDATE SET
       memories = s.memories + $4::bigint - $5::bigint,
       version = s.version + $4::bigint + $5::bigint,
       deletions = s.deletions + $5::bigint
     RETURNING version`,
    [tenantId, agentId, space, change.inserted, change.deleted],
  );
  return r.rows[0]!.version - change.inserted - change.deleted + 1;
}

/** Stores memories with their embeddings (the `vector` column too where pgvector is on). */
export async function insertMemories(
  tx: Tx,
  tenantId: string,
  agentId: string,
  space: Space,
  rows: { text: string; metadata: Record<string, unknown>; embedding: Float32Array }[],
  withVector: boolean,
): Promise<SemanticMemory[]> {
  const first = await bumpSpace(tx, tenantId, agentId, space.name, { inserted: rows.length, deleted: 0 });
  const out: SemanticMemory[] = [];
  for (const [i, row] of rows.entries()) {
    const r = await tx.query<SemanticMemory>(
      `INSERT INTO semantic_memories (tenant_id, agent_id, text, metadata, space, provider, model, dimensions, embedding, seq${withVector ? ', embedding_vector' : ''})
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10${withVector ? ', $11::vector' : ''})
       RETURNING id, text, metadata, created_at::text`,
      [tenantId, agentId, row.text, row.metadata, space.name, space.provider, space.model, space.dimensions, toBytes(row.embedding), first + i, ...(withVector ? [toVectorLiteral(row.embedding)] : [])],
    );
    out.push(r.rows[0]!);
  }
  return out;
}

/** Deletes one memory; 404 when the agent has no such memory. */
export async function deleteMemory(tx: Tx, tenantId: string, agentId: string, id: string): Promise<void> {
  const r = await tx.query<{ space: string }>(`DELETE FROM semantic_memories WHERE tenant_id = $1 AND agent_id = $2 AND id = $3 RETURNING space`, [tenantId, agentId, id]);
  if (!r.rows[0]) throw notFound('memory', id);
  await bumpSpace(tx, tenantId, agentId, r.rows[0].space, { inserted: 0, deleted: 1 });
}

/** The memories `ids` of an agent, in the order given. */
export async function memoriesByIds(q: Queryable, tenantId: string, agentId: string, ids: string[]): Promise<Map<string, SemanticMemory>> {
  const r = await q.query<SemanticMemory>(
    `SELECT id, text, metadata, created_at::text FROM semantic_memories WHERE tenant_id = $1 AND agent_id = $2 AND id = ANY($3::uuid[])`,
    [tenantId, agentId, ids],
  );
  return new Map(r.rows.map((m) => [m.id, m]));
}

/** Up to `limit` memories of the agent outside `space`, oldest first. */
export async function memoriesOutside(q: Queryable, tenantId: string, agentId: string, space: string, limit: number) {
  const r = await q.query<{ id: string; text: string; space: string }>(
    `SELECT id, text, space FROM semantic_memories WHERE tenant_id = $1 AND agent_id = $2 AND space <> $3 ORDER BY created_at, id LIMIT $4`,
    [tenantId, agentId, space, limit],
  );
  return r.rows;
}

/** Moves memories into `space` with their new embeddings, keeping both spaces' counters right. */
export async function moveMemories(
  tx: Tx,
  tenantId: string,
  agentId: string,
  space: Space,
  rows: { id: string; from: string; embedding: Float32Array }[],
  withVector: boolean,
): Promise<void> {
  const leaving = new Map<string, number>();
  for (const row of rows) leaving.set(row.from, (leaving.get(row.from) ?? 0) + 1);
  for (const [from, n] of leaving) await bumpSpace(tx, tenantId, agentId, from, { inserted: 0, deleted: n });
  const first = await bumpSpace(tx, tenantId, agentId, space.name, { inserted: rows.length, deleted: 0 });
  for (const [i, row] of rows.entries()) {
    await tx.query(
      `UPDATE semantic_memories SET space = $4, provider = $5, model = $6, dimensions = $7, embedding = $8, seq = $9${withVector ? ', embedding_vector = $10::vector' : ''}
       WHERE tenant_id = $1 AND agent_id = $2 AND id = $3`,
      [tenantId, agentId, row.id, space.name, space.provider, space.model, space.dimensions, toBytes(row.embedding), first + i, ...(withVector ? [toVectorLiteral(row.embedding)] : [])],
    );
  }
}
