import type { Queryable } from '../../db/index.js';
import type { SpaceState } from './store.js';
import { readBytes } from './vectors.js';

/** Where a hit ranks: the memory's id and its cosine similarity to the query. */
export interface Hit {
  id: string;
  similarity: number;
}

interface Entry {
  dims: number;
  ids: string[];
  vectors: Float32Array;
  /** Highest seq loaded; newer rows are appended on the next search. */
  maxSeq: number;
  /** The space's deletion counter when loaded: when it moves, the entry reloads. */
  deletions: number;
}

/**
 * Exact cosine search in process, for engines without pgvector: each agent's vectors of one
 * space are cached as one Float32Array. The cache stays right across processes because every
 * search reads the space's counters first (one row): new rows (seq above the cache's) are
 * appended, and any deletion since the load reloads the whole entry. Least recently used
 * entries go when the cache passes its byte budget.
 */
export class ExactVectorIndex {
  private readonly entries = new Map<string, Entry>();
  /** One refresh per entry at a time: two concurrent loads would append the same rows twice. */
  private readonly refreshing = new Map<string, Promise<Entry>>();
  private bytes = 0;

  constructor(private readonly maxBytes: number) {}

  /** The `k` nearest of the agent's memories in `state.space`, optionally only among `allowed` ids. */
  async search(q: Queryable, tenantId: string, agentId: string, state: SpaceState, query: Float32Array, k: number, allowed?: Set<string>): Promise<Hit[]> {
    const key = `${tenantId}/${agentId}/${state.space}`;
    const previous = this.refreshing.get(key) ?? Promise.resolve();
    const turn = previous.catch(() => {}).then(() => this.refresh(q, key, tenantId, agentId, state, query.length));
    this.refreshing.set(key, turn);
    try {
      return topK(await turn, query, k, allowed);
    } finally {
      if (this.refreshing.get(key) === turn) this.refreshing.delete(key);
    }
  }

  /** Bytes of vectors held (for tests and metrics). */
  get heldBytes(): number {
    return this.bytes;
  }

  private async refresh(q: Queryable, key: string, tenantId: string, agentId: string, state: SpaceState, dims: number): Promise<Entry> {
    let entry = this.entries.get(key);
    if (entry && (entry.deletions !== state.deletions || entry.dims !== dims)) {
      this.drop(key, entry);
      entry = undefined;
    }
    if (!entry) entry = { dims, ids: [], vectors: new Float32Array(0), maxSeq: 0, deletions: state.deletions };
    else this.entries.delete(key); // re-inserted below: most recently used last
    if (entry.maxSeq < state.version) await this.load(q, tenantId, agentId, state.space, entry);
    this.entries.set(key, entry);
    this.evict(key);
    return entry;
  }

  private async load(q: Queryable, tenantId: string, agentId: string, space: string, entry: Entry): Promise<void> {
    const r = await q.query<{ id: string; seq: number; embedding: Uint8Array }>(
      `SELECT id, seq, embedding FROM semantic_memories WHERE tenant_id = $1 AND agent_id = $2 AND space = $3 AND seq > $4 ORDER BY seq`,
      [tenantId, agentId, space, entry.maxSeq],
    );
    if (r.rows.length === 0) return;
    const count = entry.ids.length + r.rows.length;
    const vectors = new Float32Array(count * entry.dims);
    vectors.set(entry.vectors);
    r.rows.forEach((row, i) => {
      readBytes(row.embedding, vectors, (entry.ids.length + i) * entry.dims);
      entry.maxSeq = Math.max(entry.maxSeq, Number(row.seq));
    });
    for (const row of r.rows) entry.ids.push(row.id);
    this.bytes += vectors.byteLength - entry.vectors.byteLength;
    entry.vectors = vectors;
  }

  private drop(key: string, entry: Entry): void {
    this.entries.delete(key);
    this.bytes -= entry.vectors.byteLength;
  }

  private evict(keep: string): void {
    for (const [key, entry] of this.entries) {
      if (this.bytes <= this.maxBytes) return;
      if (key !== keep) this.drop(key, entry);
    }
  }
}

/** A bounded selection of the best `k` by dot product (vectors are unit length). */
function topK(entry: Entry, query: Float32Array, k: number, allowed?: Set<string>): Hit[] {
  const { dims, vectors, ids } = entry;
  const best: { i: number; s: number }[] = [];
  for (let i = 0; i < ids.length; i++) {
    if (allowed && !allowed.has(ids[i]!)) continue;
    const base = i * dims;
    let s = 0;
    for (let d = 0; d < dims; d++) s += vectors[base + d]! * query[d]!;
    if (best.length === k && s <= best[k - 1]!.s) continue;
    let at = best.length < k ? best.length : k - 1;
    while (at > 0 && best[at - 1]!.s < s) at--;
    best.splice(at, 0, { i, s });
    if (best.length > k) best.pop();
  }
  return best.map((b) => ({ id: ids[b.i]!, similarity: b.s }));
}
