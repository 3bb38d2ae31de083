import { withTransaction, type Db } from '../../db/index.js';
import type { Hit } from './exact.js';
import type { Space } from './store.js';
import { toVectorLiteral } from './vectors.js';

/** True when migration 0008 found pgvector and added the `vector` column. */
export async function hasPgvector(db: Db): Promise<boolean> {
  const r = await db.query<{ yes: boolean }>(
    `SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_name = 'semantic_memories' AND column_name = 'embedding_vector') AS yes`,
  );
  return r.rows[0]!.yes;
}

/**
 * The `k` nearest memories by pgvector's cosine distance. The partial HNSW index of the
 * space's dimension is used when the planner finds it cheaper (large agents); small agents
 * are scanned exactly through the agent index. Iterative scans keep an HNSW search going
 * until `k` rows pass the agent (and metadata) filter.
 */
export async function searchPgvector(db: Db, tenantId: string, agentId: string, space: Space, query: Float32Array, k: number, filter?: Record<string, unknown>): Promise<Hit[]> {
  // The dimension is a trusted integer; it must be a literal for the partial index to match.
  const dims = Math.trunc(space.dimensions);
  const cast = `embedding_vector::vector(${dims})`;
  return withTransaction(
    db,
    async (tx) => {
      await tx.query(`SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true), set_config('hnsw.ef_search', $1, true)`, [String(Math.max(40, k * 2))]);
      const r = await tx.query<{ id: string; distance: number }>(
        `SELECT id, ${cast} <=> $4::vector(${dims}) AS distance
         FROM semantic_memories
         WHERE tenant_id = $1 AND agent_id = $2 AND space = $3 AND dimensions = ${dims}${filter ? ' AND metadata @> $6::jsonb' : ''}
         ORDER BY ${cast} <=> $4::vector(${dims})
         LIMIT $5`,
        [tenantId, agentId, space.name, toVectorLiteral(query), k, ...(filter ? [JSON.stringify(filter)] : [])],
      );
      // relaxed_order may return near-ties out of order
      return r.rows.map((row) => ({ id: row.id, similarity: 1 - Number(row.distance) })).sort((a, b) => b.similarity - a.similarity);
    },
    { name: 'semantic-search' },
  );
}
