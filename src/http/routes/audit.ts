import type { FastifyReply } from 'fastify';
import { z } from 'zod';
import { readDevSecret, type Principal } from '../../auth/index.js';
import { AUDIT_EXPORT_FORMATS, AuditEvent, AuditExport, AuditExports, AuditFilters, listAudit, type AuditScope } from '../../audit/index.js';
import { forbidden } from '../../errors/index.js';
import { contentDisposition, createBlobStore } from '../../files/index.js';
import { Uuid } from '../../queue/index.js';
import { requireRole } from '../auth.js';
import { errorResponses } from '../errors.js';
import type { App, AppDeps } from '../types.js';

const tags = ['audit'];
const security = [{ bearerAuth: [] }];
const ADMIN = ['admin'] as const;
const AllTenants = z
  .enum(['true', 'false'])
  .optional()
  .describe("platform_admin only: every tenant's rows and the platform-level ones (plans), instead of the token's tenant");
const ListQuery = AuditFilters.extend({
  all_tenants: AllTenants,
  limit: z.coerce.number().int().min(1).max(1000).default(100),
  cursor: z.string().max(200).optional(),
}).strict();
const ExportBody = AuditFilters.extend({
  format: z.enum(AUDIT_EXPORT_FORMATS).default('jsonl').describe('jsonl: one JSON object a line; csv: RFC 4180 with a header row'),
  all_tenants: z.boolean().optional().describe('platform_admin only: export every tenant'),
}).strict();
const ExportParams = z.object({ id: Uuid('export ids are UUIDs') }).strict();
const ExportEnvelope = z.object({ export: AuditExport });

/** The rows the caller may see: its tenant's, or with all_tenants (platform_admin) everyone's. */
function scopeOf(p: Principal, allTenants: boolean): AuditScope {
  if (!allTenants) return { tenantId: p.tenantId };
  if (p.role !== 'platform_admin') throw forbidden(`Only a platform_admin may read every tenant's audit log; drop all_tenants (role "${p.role}" sees tenant ${p.tenantId}).`);
  return { allTenants: true };
}

/**
 * The audit log (README "Audit log"): tenant admins read and export their tenant's rows,
 * platform_admin any tenant's (x-fabric-tenant) or all of them (all_tenants); agents and the
 * other roles never.
 */
export function auditRoutes(app: App, deps: AppDeps): void {
  const { config } = deps;
  const secret = config.files.urlSigningSecret ?? config.jwtSecret ?? (config.databaseUrl ? undefined : readDevSecret(config.dataDir));
  const exports = new AuditExports({ db: deps.db, blobs: createBlobStore(config), signingSecret: secret });
  app.addHook('onClose', async () => {
    await exports.close();
  });

  app.get(
    '/api/audit',
    {
      schema: {
        tags,
        security,
        summary: 'Audit events, newest first, filtered by actor, agent, task, action and time (admin)',
        querystring: ListQuery,
        response: { 200: z.object({ events: z.array(AuditEvent), next_cursor: z.string().nullable() }), ...errorResponses },
      },
    },
    async (req) => {
      const p = requireRole(req, ADMIN, 'read the audit log');
      const { all_tenants, limit, cursor, ...filters } = req.query;
      return listAudit(deps.db, scopeOf(p, all_tenants === 'true'), filters, { limit, cursor });
    },
  );

  app.post(
    '/api/audit/exports',
    {
      schema: {
        tags,
        security,
        summary: "Export matching audit events as JSON lines or CSV into the tenant's storage; poll GET /api/audit/exports/:id for its signed URL (admin)",
        body: ExportBody,
        response: { 202: ExportEnvelope, ...errorResponses },
      },
    },
    async (req, reply) => {
      const p = requireRole(req, ADMIN, 'export the audit log');
      const { format, all_tenants, ...filters } = req.body;
      const job = await exports.start(p.tenantId, p.sub, p.role, format, scopeOf(p, all_tenants === true), filters);
      return reply.code(202).header('location', `/api/audit/exports/${job.id}`).send({ export: job });
    },
  );

  app.get(
    '/api/audit/exports/:id',
    { schema: { tags, security, summary: 'An export job; once completed, with a download URL valid 900 s (admin)', params: ExportParams, response: { 200: ExportEnvelope, ...errorResponses } } },
    async (req) => {
      const p = requireRole(req, ADMIN, 'read audit exports');
      return { export: await exports.get(p.tenantId, req.params.id.toLowerCase()) };
    },
  );

  app.get(
    '/audit-exports/:id',
    {
      schema: {
        tags,
        summary: 'Download an audit export with its signed URL (no token needed)',
        params: z.object({ id: z.string().max(100) }),
        querystring: z.looseObject({ expires: z.string().max(32).optional(), sig: z.string().max(128).optional() }),
        response: errorResponses,
      },
    },
    async (req, reply) => {
      const { name, contentType, blob } = await exports.openSigned(req.params.id.toLowerCase(), req.query.expires, req.query.sig);
      return (reply as FastifyReply)
        .header('content-type', contentType)
        .header('content-length', String(blob.size))
        .header('content-disposition', contentDisposition(name))
        .header('x-content-type-options', 'nosniff')
        .header('cache-control', 'private, no-store')
        .send(blob.body);
    },
  );
}
