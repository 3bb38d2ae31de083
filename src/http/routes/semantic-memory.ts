import { z } from 'zod';
import { READERS, type Role } from '../../auth/index.js';
import { createEmbeddingProvider } from '../../embeddings/index.js';
import { SemanticMemoryService } from '../../memory/semantic/index.js';
import { Uuid } from '../../queue/index.js';
import { getAgent } from '../../tenancy/index.js';
import { logger } from '../../telemetry/index.js';
import { requireRole, requireSelfOrRole } from '../auth.js';
import { errorResponses } from '../errors.js';
import type { App, AppDeps } from '../types.js';

const ADMINS: readonly Role[] = ['admin'];
/** People who may write an agent's memories besides the agent itself. */
const WRITERS: readonly Role[] = ['admin', 'operator'];
const MAX_TEXT = 32_000;
const MAX_METADATA_BYTES = 16_384;

const Metadata = z
  .record(z.string(), z.unknown())
  .refine((m) => JSON.stringify(m).length <= MAX_METADATA_BYTES, `metadata must be at most ${MAX_METADATA_BYTES} bytes of JSON`);
const AgentParams = z.object({ id: Uuid('agent ids are UUIDs') }).strict();
const Result = z.object({ id: z.uuid(), text: z.string(), metadata: z.record(z.string(), z.unknown()), similarity: z.number(), created_at: z.string() });
const common = { tags: ['memory'], security: [{ bearerAuth: [] }] };

/**
 * An agent's semantic memory (isolation-runtime-prd §3.2, US-06/07): store texts with their
 * embeddings, search them by cosine similarity, delete one, re-embed after a provider change.
 * Paths stay clear of the key-value routes (`/memory/:key`): embed, search and reembed are
 * POST-only, and single memories live under `/memory/embeddings/:mem_id`.
 */
export function semanticMemoryRoutes(app: App, deps: AppDeps, service = defaultService(deps)): void {
  app.post(
    '/api/agents/:id/memory/embed',
    {
      schema: {
        ...common,
        summary: "Store a text with its embedding in the agent's semantic memory; searchable when this answers",
        params: AgentParams,
        body: z.object({ text: z.string().trim().min(1).max(MAX_TEXT), metadata: Metadata.optional() }).strict(),
        response: { 201: z.object({ id: z.uuid(), space: z.string().describe('provider:model:dimensions of the stored vector') }), ...errorResponses },
      },
    },
    async (req, reply) => {
      const p = requireSelfOrRole(req, req.params.id, WRITERS, 'store memories');
      await getAgent(deps.db, p.tenantId, req.params.id);
      const m = await service.store(p.tenantId, req.params.id, req.body.text, req.body.metadata ?? {});
      return reply.code(201).send({ id: m.id, space: m.space });
    },
  );

  app.post(
    '/api/agents/:id/memory/search',
    {
      schema: {
        ...common,
        summary: "The agent's memories most similar to a query (cosine similarity, best first)",
        description:
          'Only memories embedded by the configured provider and model are compared. When some are in another space the answer is 409 reembed_required, unless allow_partial is true. filter keeps memories whose metadata contains it (JSON containment, metadata @> filter).',
        params: AgentParams,
        body: z
          .object({
            query: z.string().trim().min(1).max(MAX_TEXT),
            top_k: z.number().int().min(1).max(100).default(5),
            filter: Metadata.optional().describe('e.g. {"lead": "FBX"}: only memories whose metadata has lead = "FBX"'),
            allow_partial: z.boolean().default(false),
          })
          .strict(),
        response: { 200: z.object({ results: z.array(Result), space: z.string(), not_searched: z.number().int() }), ...errorResponses },
      },
    },
    async (req) => {
      const p = requireSelfOrRole(req, req.params.id, READERS, 'search memories');
      await getAgent(deps.db, p.tenantId, req.params.id);
      const { query, top_k, filter, allow_partial } = req.body;
      return service.search(p.tenantId, req.params.id, { query, topK: top_k, filter, allowPartial: allow_partial });
    },
  );

  app.delete(
    '/api/agents/:id/memory/embeddings/:mem_id',
    {
      schema: {
        ...common,
        summary: 'Delete one semantic memory',
        params: z.object({ id: Uuid('agent ids are UUIDs'), mem_id: Uuid('memory ids are UUIDs') }).strict(),
        response: { 204: z.null(), ...errorResponses },
      },
    },
    async (req, reply) => {
      const p = requireSelfOrRole(req, req.params.id, WRITERS, 'delete memories');
      await getAgent(deps.db, p.tenantId, req.params.id);
      await service.remove(p.tenantId, req.params.id, req.params.mem_id);
      return reply.code(204).send(null);
    },
  );

  app.post(
    '/api/agents/:id/memory/reembed',
    {
      schema: {
        ...common,
        summary: "Re-embed the agent's memories that another provider or model embedded (admin)",
        description: 'Re-embeds up to limit memories per call, oldest first; call again while remaining > 0.',
        params: AgentParams,
        body: z.object({ limit: z.number().int().min(1).max(10_000).default(1000) }).strict().default({ limit: 1000 }),
        response: { 200: z.object({ reembedded: z.number().int(), remaining: z.number().int(), space: z.string() }), ...errorResponses },
      },
    },
    async (req) => {
      const p = requireRole(req, ADMINS, 're-embed memories');
      await getAgent(deps.db, p.tenantId, req.params.id);
      return service.reembed(p.tenantId, req.params.id, req.body.limit, deps.config.embeddings.batchSize);
    },
  );
}

function defaultService(deps: AppDeps): SemanticMemoryService {
  const service = new SemanticMemoryService(deps.db, createEmbeddingProvider(deps.config.embeddings), {
    search: 'auto',
    cacheBytes: deps.config.embeddings.searchCacheMb * 2 ** 20,
  });
  // Load the local word table now, so the first embed does not wait for it.
  service.warm().catch((err: unknown) => logger().error({ err }, 'the embedding provider failed to load; semantic memory calls will fail until it does'));
  return service;
}
