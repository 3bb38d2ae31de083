import { READERS } from '../../auth/index.js';
import { CONTENT_TYPES, ExportQuery, UsageQuery, UsageReport, type BillingService } from '../../billing/index.js';
import { logger } from '../../telemetry/index.js';
import { requireRole } from '../auth.js';
import { errorResponses } from '../errors.js';
import type { App, AppDeps } from '../types.js';

const tags = ['billing'];
const security = [{ bearerAuth: [] }];

/** The usage report and the metered-event export of the caller's tenant. */
export function usageRoutes(app: App, deps: AppDeps, billing: BillingService): void {
  app.get(
    '/api/usage',
    {
      schema: {
        tags,
        security,
        summary: 'Consumed vs included per dimension, overage and its charge, projection to period end (tenant, or one agent or user)',
        querystring: UsageQuery,
        response: { 200: UsageReport, ...errorResponses },
      },
    },
    async (req) => {
      const p = requireRole(req, READERS, 'read usage');
      return billing.report(deps.db, p.tenantId, req.query);
    },
  );

  app.get(
    '/api/usage/export',
    {
      schema: {
        tags,
        security,
        summary: 'Every metered event of the period, streamed as CSV or JSON lines, with its overage share (line items)',
        querystring: ExportQuery,
        response: errorResponses,
      },
    },
    async (req, reply) => {
      const p = requireRole(req, READERS, 'export usage');
      const stream = await billing.export(deps.db, p.tenantId, req.query);
      stream.on('error', (err) => logger().error({ err }, 'usage export failed mid-stream; the client got a truncated file'));
      const name = `usage-${p.tenantId}-${req.query.period}.${req.query.format}`;
      return reply.header('content-type', CONTENT_TYPES[req.query.format]).header('content-disposition', `attachment; filename="${name}"`).send(stream as never); // a stream is sent as is, never serialized
    },
  );
}
