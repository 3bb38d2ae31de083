import { withTransaction, type Db } from '../../db/index.js';
import { embeddingSpace, type EmbeddingProvider } from '../../embeddings/index.js';
import { conflict, FabricError } from '../../errors/index.js';
import { memoryEmbedLatency } from '../../telemetry/index.js';
import { ExactVectorIndex, type Hit } from './exact.js';
import { hasPgvector, searchPgvector } from './pgvector.js';
import { deleteMemory, insertMemories, memoriesByIds, memoriesOutside, moveMemories, spaceStates, type SemanticMemory, type Space } from './store.js';
import { unit } from './vectors.js';

export interface SemanticMemoryOptions {
  /** `auto`: pgvector where migration 0008 enabled it, else exact in process; `exact`: always in process. Default auto. */
  search: 'auto' | 'exact';
  /** Byte budget of the exact-search cache. Default 512 MiB. */
  cacheBytes: number;
}

export interface SearchRequest {
  query: string;
  topK: number;
  /** Metadata containment (`metadata @> filter`): every key given must be present with that value. */
  filter?: Record<string, unknown> | undefined;
  /** Search the current space even when some memories still wait for re-embedding. */
  allowPartial?: boolean | undefined;
}

export interface SearchResult {
  results: (SemanticMemory & { similarity: number })[];
  space: string;
  /** Memories not searched because they are in another space (only with allowPartial). */
  not_searched: number;
}

/**
 * An agent's semantic memory: store a text with its embedding, find the nearest by cosine
 * similarity within the configured provider's space, delete, and re-embed what another
 * provider or model made. Every query is scoped by tenant and agent.
 */
export class SemanticMemoryService {
  private readonly exact: ExactVectorIndex;

  constructor(
    private readonly db: Db,
    readonly provider: EmbeddingProvider,
    private readonly options: SemanticMemoryOptions = { search: 'auto', cacheBytes: 512 * 2 ** 20 },
  ) {
    this.exact = new ExactVectorIndex(options.cacheBytes);
  }

  /** Which search runs here: `pgvector` (HNSW) or `exact` (in process). */
  async searchMode(): Promise<'pgvector' | 'exact'> {
    if (this.options.search === 'exact') return 'exact';
    return (await this.hasVectorColumn()) ? 'pgvector' : 'exact';
  }

  private async embed(texts: string[]): Promise<{ space: Space; vectors: Float32Array[] }> {
    const stopTimer = memoryEmbedLatency.startTimer(); // failed calls count too: a slow provider is slow either way
    const vectors = (await this.provider.embed(texts).finally(stopTimer)).map(unit);
    const dimensions = vectors[0]!.length;
    if (vectors.some((v) => v.length !== dimensions))
      throw new FabricError(502, 'embedding_provider_error', 'The embedding provider returned vectors of different lengths in one answer.');
    const { provider, model } = this.provider;
    const space = { name: embeddingSpace(provider, model, dimensions), provider, model, dimensions };
    this.currentName = space.name;
    return { space, vectors };
  }

  /** Stores `text` with its embedding; it is searchable when this resolves. */
  async store(tenantId: string, agentId: string, text: string, metadata: Record<string, unknown>): Promise<SemanticMemory & { space: string }> {
    const { space, vectors } = await this.embed([text]);
    const withVector = await this.hasVectorColumn();
    const [row] = await withTransaction(this.db, (tx) => insertMemories(tx, tenantId, agentId, space, [{ text, metadata, embedding: vectors[0]! }], withVector), {
      name: 'semantic-memory-store',
    });
    return { ...row!, space: space.name };
  }

  /** The `topK` memories most similar to the query, best first. */
  async search(tenantId: string, agentId: string, req: SearchRequest): Promise<SearchResult> {
    const [{ space, vectors }, states] = await Promise.all([this.embed([req.query]), spaceStates(this.db, tenantId, agentId)]);
    const current = states.find((s) => s.space === space.name);
    const others = states.filter((s) => s.space !== space.name);
    const notSearched = others.reduce((n, s) => n + Number(s.memories), 0);
    if (notSearched > 0 && !req.allowPartial)
      throw new FabricError(
        409,
        'reembed_required',
        `${notSearched} of this agent's memories were embedded by another provider or model (${others.map((s) => s.space).join(', ')}) and cannot be compared with ${space.name}. An admin re-embeds them with POST /api/agents/${agentId}/memory/reembed; or send "allow_partial": true to search only the ${current?.memories ?? 0} memories already in ${space.name}.`,
        { memories_to_reembed: notSearched, spaces: others.map((s) => s.space), current_space: space.name },
      );
    if (!current) return { results: [], space: space.name, not_searched: notSearched };
    let hits: Hit[];
    if ((await this.searchMode()) === 'pgvector') hits = await searchPgvector(this.db, tenantId, agentId, space, vectors[0]!, req.topK, req.filter);
    else {
      const allowed = req.filter ? await this.idsMatching(tenantId, agentId, space.name, req.filter) : undefined;
      hits = await this.exact.search(this.db, tenantId, agentId, current, vectors[0]!, req.topK, allowed);
    }
    const rows = await memoriesByIds(this.db, tenantId, agentId, hits.map((h) => h.id));
    // a memory deleted between the ranking and this read is simply left out
    const results = hits.flatMap((h) => {
      const m = rows.get(h.id);
      return m ? [{ ...m, similarity: Math.round(h.similarity * 1e6) / 1e6 }] : [];
    });
    return { results, space: space.name, not_searched: notSearched };
  }

  /** Deletes one memory of the agent (404 when it has none with that id). */
  async remove(tenantId: string, agentId: string, id: string): Promise<void> {
    await withTransaction(this.db, (tx) => deleteMemory(tx, tenantId, agentId, id), { name: 'semantic-memory-delete' });
  }

  /**
   * Re-embeds up to `limit` of the agent's memories that are in another space with the
   * configured provider, in provider-sized batches, each batch one transaction.
   */
  async reembed(tenantId: string, agentId: string, limit: number, batchSize: number): Promise<{ reembedded: number; remaining: number; space: string }> {
    const withVector = await this.hasVectorColumn();
    let done = 0;
    let spaceName = embeddingSpace(this.provider.provider, this.provider.model, 0);
    while (done < limit) {
      const current = await this.currentSpaceName();
      spaceName = current;
      const rows = await memoriesOutside(this.db, tenantId, agentId, current, Math.min(batchSize, limit - done));
      if (rows.length === 0) break;
      const { space, vectors } = await this.embed(rows.map((r) => r.text));
      if (space.name !== current) throw conflict('embedding_space_changed', 'The embedding provider changed its dimensions during the re-embedding; run it again.');
      await withTransaction(this.db, (tx) => moveMemories(tx, tenantId, agentId, space, rows.map((r, i) => ({ id: r.id, from: r.space, embedding: vectors[i]! })), withVector), {
        name: 'semantic-memory-reembed',
      });
      done += rows.length;
    }
    const states = await spaceStates(this.db, tenantId, agentId);
    const remaining = states.filter((s) => s.space !== spaceName).reduce((n, s) => n + Number(s.memories), 0);
    return { reembedded: done, remaining, space: spaceName };
  }

  /** Loads the provider's model (the local word table) ahead of the first request. */
  warm(): Promise<void> {
    return this.provider.warm();
  }

  private currentName: string | undefined;
  private async currentSpaceName(): Promise<string> {
    return this.currentName ?? (await this.embed(['dimension probe'])).space.name;
  }

  private hasVector: Promise<boolean> | undefined;
  /** The pgvector column is kept filled whenever it exists, even when this process searches exactly. */
  private hasVectorColumn(): Promise<boolean> {
    this.hasVector ??= hasPgvector(this.db);
    return this.hasVector;
  }

  private async idsMatching(tenantId: string, agentId: string, space: string, filter: Record<string, unknown>): Promise<Set<string>> {
    const r = await this.db.query<{ id: string }>(
      `SELECT id FROM semantic_memories WHERE tenant_id = $1 AND agent_id = $2 AND space = $3 AND metadata @> $4::jsonb`,
      [tenantId, agentId, space, JSON.stringify(filter)],
    );
    return new Set(r.rows.map((row) => row.id));
  }
}
