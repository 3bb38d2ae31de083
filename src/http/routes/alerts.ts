import { z } from 'zod';
import { AlertView, getAlert, listAlerts, resolveAlertByHand, resolvedMessage, toView, type AlertScope } from '../../alerts/index.js';
import { recordAudit } from '../../audit/index.js';
import { MANAGERS, type Principal } from '../../auth/index.js';
import { ALERT_RULE_NAMES } from '../../config/index.js';
import { withTransaction } from '../../db/index.js';
import { badRequest, conflict, notFound } from '../../errors/index.js';
import { createNotifier } from '../../notify/index.js';
import { requireRole } from '../auth.js';
import { errorResponses } from '../errors.js';
import type { App, AppDeps } from '../types.js';

const tags = ['alerts'];
const security = [{ bearerAuth: [] }];
const ListQuery = z
  .object({
    state: z.enum(['firing', 'resolved']).optional(),
    rule: z.enum(ALERT_RULE_NAMES).optional(),
    limit: z.coerce.number().int().min(1).max(500).default(100),
    cursor: z.string().max(40).optional(),
  })
  .strict();
const Params = z.object({ id: z.string().regex(/^[1-9][0-9]{0,17}$/, 'alert ids are positive integers') }).strict();

/** The caller's tenant, and the fleet-wide alerts for platform_admin. */
const scopeOf = (p: Principal): AlertScope => ({ tenantId: p.tenantId, fleet: p.role === 'platform_admin' });

function decodeAlertCursor(cursor: string | undefined): string | undefined {
  if (cursor === undefined) return undefined;
  const id = Buffer.from(cursor, 'base64url').toString('utf8');
  if (!/^[1-9][0-9]{0,17}$/.test(id)) throw badRequest('invalid_cursor', 'The cursor is not one this API returned; pass next_cursor from the previous page unchanged.');
  return id;
}

/** Alerts of the rules (README "Alert rules"): list them, and resolve one by hand (audited). */
export function alertRoutes(app: App, deps: AppDeps): void {
  const notifier = createNotifier({ webhookUrl: deps.config.alertWebhookUrl, channel: deps.config.alertChannel });

  app.get(
    '/api/alerts',
    {
      schema: {
        tags,
        security,
        summary: "The tenant's alerts, newest first, by state and rule (fleet-wide ones too for platform_admin) (admin, operator)",
        querystring: ListQuery,
        response: { 200: z.object({ alerts: z.array(AlertView), next_cursor: z.string().nullable() }), ...errorResponses },
      },
    },
    async (req) => {
      const p = requireRole(req, MANAGERS, 'read alerts');
      const { state, rule, limit, cursor } = req.query;
      return listAlerts(deps.db, scopeOf(p), { state, rule }, { limit, before: decodeAlertCursor(cursor) });
    },
  );

  app.post(
    '/api/alerts/:id/resolve',
    {
      schema: {
        tags,
        security,
        summary: 'Resolve a firing alert by hand (audited); the rule does not fire again for that subject until its condition has cleared once (admin, operator)',
        params: Params,
        response: { 200: z.object({ alert: AlertView }), ...errorResponses },
      },
    },
    async (req) => {
      const p = requireRole(req, MANAGERS, 'resolve alerts');
      const scope = scopeOf(p);
      const row = await withTransaction(
        deps.db,
        async (tx) => {
          const resolved = await resolveAlertByHand(tx, scope, req.params.id, p.sub);
          if (!resolved) return undefined;
          await recordAudit(tx, {
            tenantId: resolved.tenant_id ?? p.tenantId,
            actor: { sub: p.sub, role: p.role },
            action: 'alert.resolve',
            targetType: 'alert',
            targetId: resolved.id,
            before: { state: 'firing', rule: resolved.rule, subject: resolved.subject, value: resolved.value },
            after: { state: 'resolved', resolved_by: p.sub },
          });
          return resolved;
        },
        { name: 'resolve alert' },
      );
      if (!row) {
        const existing = await getAlert(deps.db, scope, req.params.id);
        if (!existing) throw notFound('Alert', req.params.id);
        throw conflict('alert_already_resolved', `Alert ${existing.id} is already resolved (${existing.resolved_by ? `by ${existing.resolved_by}` : 'its condition cleared'}); GET /api/alerts?state=firing lists the ones still firing.`);
      }
      await notifier.send(resolvedMessage(row));
      return { alert: toView(row) };
    },
  );
}
