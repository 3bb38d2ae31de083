import { z } from 'zod';
import { READERS } from '../../auth/index.js';
import { Uuid } from '../../queue/index.js';
import { listSessions } from '../../sandbox/index.js';
import { getAgent } from '../../tenancy/index.js';
import { requireSelfOrRole } from '../auth.js';
import { errorResponses } from '../errors.js';
import type { App, AppDeps } from '../types.js';

const Session = z.object({
  id: z.uuid(),
  tenant_id: z.string(),
  agent_id: z.uuid(),
  task_id: z.uuid(),
  attempt: z.number().int(),
  worker_id: z.string(),
  isolation: z.enum(['process', 'container']),
  status: z.enum(['running', 'completed', 'failed', 'timed_out', 'cancelled', 'killed', 'error']),
  exit_code: z.number().int().nullable(),
  signal: z.string().nullable(),
  error: z.object({ code: z.string(), message: z.string() }).nullable(),
  usage: z.record(z.string(), z.union([z.number(), z.boolean()])).nullable().describe('peakMemoryBytes, cpuSeconds, wallSeconds, artifactBytes, oomKilled'),
  artifacts: z
    .array(z.object({ name: z.string(), size: z.number(), file_id: z.uuid().optional(), error: z.object({ code: z.string(), message: z.string() }).optional() }))
    .describe('files the program left in /workspace/out: each kept as an agent file (file_id, read it at /api/agents/:id/files/:file_id) or why not (error)'),
  wipe: z.record(z.string(), z.unknown()).nullable().describe('wipe evidence: method, files, bytes, verified, duration_ms'),
  started_at: z.string(),
  ended_at: z.string().nullable(),
});

export function sessionRoutes(app: App, deps: AppDeps): void {
  app.get(
    '/api/agents/:id/sessions',
    {
      schema: {
        tags: ['agents', 'sandboxes'],
        security: [{ bearerAuth: [] }],
        summary: "An agent's sandbox sessions, newest first: how each ended, its usage, artifacts and wipe evidence",
        params: z.object({ id: Uuid('agent ids are UUIDs') }).strict(),
        querystring: z.object({ limit: z.coerce.number().int().min(1).max(500).default(50), cursor: z.string().max(500).optional() }).strict(),
        response: { 200: z.object({ sessions: z.array(Session), next_cursor: z.string().nullable() }), ...errorResponses },
      },
    },
    async (req) => {
      const p = requireSelfOrRole(req, req.params.id, READERS, 'read sessions');
      await getAgent(deps.db, p.tenantId, req.params.id);
      return listSessions(deps.db, p.tenantId, req.params.id, { limit: req.query.limit, cursor: req.query.cursor });
    },
  );
}
