import { z } from 'zod';
import { TenantId } from '../../auth/index.js';
import { ErasureRequest, getRetention, setRetention, SUBJECT_TYPES, type ErasureService } from '../../compliance/index.js';
import { forbidden, notFound } from '../../errors/index.js';
import { Uuid } from '../../queue/index.js';
import { findTenant } from '../../tenancy/index.js';
import { requireRole } from '../auth.js';
import { errorResponses } from '../errors.js';
import type { App, AppDeps } from '../types.js';

const tags = ['compliance'];
const security = [{ bearerAuth: [] }];
const ADMIN = ['admin'] as const;
const Envelope = z.object({ erasure_request: ErasureRequest });
const Retention = z.object({
  retention_days: z.number().int().describe('days artifacts and logs are kept in this tenant'),
  tenant_override: z.number().int().nullable().describe("the tenant's own setting; null = the default"),
  default_days: z.number().int().describe('FABRIC_RETENTION_DAYS'),
});

/** Data erasure (README "Data erasure") and the tenant's retention setting (README "Retention"): tenant admins, or a platform_admin for any tenant. */
export function erasureRoutes(app: App, deps: AppDeps, erasure: ErasureService): void {
  app.post(
    '/api/erasure-requests',
    {
      schema: {
        tags,
        security,
        summary: "Erase a user or an agent and everything the fabric holds of it; poll GET /api/erasure-requests/:id for its evidence (admin)",
        body: z
          .object({
            subject_type: z.enum(SUBJECT_TYPES),
            subject_id: z.string().min(1).max(200).describe("the user's or agent's id"),
            tenant_id: TenantId.optional().describe("platform_admin only: the subject's tenant (default: the token's)"),
          })
          .strict(),
        response: { 200: Envelope, 202: Envelope, ...errorResponses },
      },
    },
    async (req, reply) => {
      const p = requireRole(req, ADMIN, 'request data erasure');
      let tenantId = p.tenantId;
      if (req.body.tenant_id !== undefined && req.body.tenant_id !== p.tenantId) {
        if (p.role !== 'platform_admin') throw forbidden(`Only a platform_admin may name another tenant; drop tenant_id (your token is for tenant ${p.tenantId}).`);
        if (!(await findTenant(deps.db, req.body.tenant_id))) throw notFound('tenant', req.body.tenant_id);
        tenantId = req.body.tenant_id;
      }
      const { request, created } = await erasure.request(tenantId, { sub: p.sub, role: p.role }, req.body.subject_type, req.body.subject_id);
      return reply
        .code(created ? 202 : 200)
        .header('location', `/api/erasure-requests/${request.id}`)
        .send({ erasure_request: request });
    },
  );

  app.get(
    '/api/erasure-requests/:id',
    {
      schema: {
        tags,
        security,
        summary: 'An erasure request: its status and evidence, rows deleted or anonymised per store (admin)',
        params: z.object({ id: Uuid('erasure request ids are UUIDs') }).strict(),
        response: { 200: Envelope, ...errorResponses },
      },
    },
    async (req) => {
      const p = requireRole(req, ADMIN, 'read erasure requests');
      return { erasure_request: await erasure.get(p.tenantId, req.params.id.toLowerCase()) };
    },
  );

  const defaultDays = deps.config.retention.days;
  app.get(
    '/api/retention',
    { schema: { tags, security, summary: "How long the tenant's artifacts and logs are kept (admin)", response: { 200: Retention, ...errorResponses } } },
    async (req) => getRetention(deps.db, requireRole(req, ADMIN, 'read the retention setting').tenantId, defaultDays),
  );

  app.put(
    '/api/retention',
    {
      schema: {
        tags,
        security,
        summary: "Set the tenant's retention in days (1–3650), or null for the default (admin)",
        body: z.object({ retention_days: z.number().int().min(1).max(3650).nullable() }).strict(),
        response: { 200: Retention, ...errorResponses },
      },
    },
    async (req) => {
      const p = requireRole(req, ADMIN, 'change the retention setting');
      return setRetention(deps.db, p.tenantId, { sub: p.sub, role: p.role }, req.body.retention_days, defaultDays);
    },
  );
}
