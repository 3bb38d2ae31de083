import { z } from 'zod';
import { MANAGERS, READERS } from '../../auth/index.js';
import { deleteMemory, getMemory, listMemory, MAX_KEY_BYTES, putMemory } from '../../memory/index.js';
import { Uuid } from '../../queue/index.js';
import { requireSelfOrRole } from '../auth.js';
import { errorResponses } from '../errors.js';
import type { App, AppDeps } from '../types.js';

const Entry = z.object({ key: z.string(), value: z.unknown(), expires_at: z.string().nullable() });
const KeyParams = z.object({ id: Uuid('agent ids are UUIDs'), key: z.string().min(1).describe(`1–${MAX_KEY_BYTES} bytes; URL-encode "/" and other reserved characters`) }).strict();
const common = { tags: ['memory'], security: [{ bearerAuth: [] }] };

/**
 * An agent's key-value memory (isolation-runtime-prd §3.2): the agent itself reads and writes
 * its own keys; the tenant's admins and operators may too (US-08), its readers may read.
 */
export function memoryRoutes(app: App, deps: AppDeps): void {
  app.put(
    '/api/agents/:id/memory/:key',
    {
      schema: {
        ...common,
        summary: 'Set a key (create or replace), optionally expiring after ttl_seconds',
        params: KeyParams,
        body: z
          .object({
            value: z.unknown().refine((v) => v !== undefined, 'value is required (any JSON, including null)'),
            ttl_seconds: z.number().int().min(1).max(10 * 365 * 86_400).optional(),
          })
          .strict(),
        response: { 200: Entry, ...errorResponses },
      },
    },
    async (req) => {
      const p = requireSelfOrRole(req, req.params.id, MANAGERS, 'write memory');
      return putMemory(deps.db, p.tenantId, req.params.id, req.params.key, req.body.value, req.body.ttl_seconds);
    },
  );

  app.get(
    '/api/agents/:id/memory/:key',
    { schema: { ...common, summary: 'Read a key; an expired key is 404 not_found', params: KeyParams, response: { 200: Entry, ...errorResponses } } },
    async (req) => {
      const p = requireSelfOrRole(req, req.params.id, READERS, 'read memory');
      return getMemory(deps.db, p.tenantId, req.params.id, req.params.key);
    },
  );

  app.delete(
    '/api/agents/:id/memory/:key',
    { schema: { ...common, summary: 'Delete a key', params: KeyParams, response: { 204: z.null(), ...errorResponses } } },
    async (req, reply) => {
      const p = requireSelfOrRole(req, req.params.id, MANAGERS, 'delete memory');
      await deleteMemory(deps.db, p.tenantId, req.params.id, req.params.key);
      return reply.code(204).send(null);
    },
  );

  app.get(
    '/api/agents/:id/memory',
    {
      schema: {
        ...common,
        summary: "List an agent's live keys in byte order",
        params: z.object({ id: Uuid('agent ids are UUIDs') }).strict(),
        querystring: z
          .object({ prefix: z.string().max(MAX_KEY_BYTES).optional(), limit: z.coerce.number().int().min(1).max(1000).default(100), cursor: z.string().max(1000).optional() })
          .strict(),
        response: {
          200: z.object({ keys: z.array(z.object({ key: z.string(), expires_at: z.string().nullable(), updated_at: z.string() })), next_cursor: z.string().nullable() }),
          ...errorResponses,
        },
      },
    },
    async (req) => {
      const p = requireSelfOrRole(req, req.params.id, READERS, 'list memory');
      return listMemory(deps.db, p.tenantId, req.params.id, req.query);
    },
  );
}
