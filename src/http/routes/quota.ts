import { z } from 'zod';
import { READERS } from '../../auth/index.js';
import { adjustQuotaUsage, AgentQuota, getQuota, QuotaAdjustmentBody, QuotaLimitsInput, updateQuotaLimits } from '../../budget/index.js';
import { withTransaction } from '../../db/index.js';
import { recordAudit } from '../../audit/index.js';
import { Uuid } from '../../queue/index.js';
import { requireRole, requireSelfOrRole } from '../auth.js';
import { errorResponses } from '../errors.js';
import type { App, AppDeps } from '../types.js';

const tags = ['quotas'];
const security = [{ bearerAuth: [] }];
const Params = z.object({ id: Uuid('agent ids are UUIDs') }).strict();
const QuotaEnvelope = z.object({ quota: AgentQuota });
const PutQuotaBody = QuotaLimitsInput.refine((b) => Object.keys(b).length > 0, { message: 'give at least one of the limits or overage_policy' });

/** An agent's quota (isolation-runtime-prd §3.5): read it, change its limits (admin), adjust its counters (admin, audited). */
export function quotaRoutes(app: App, deps: AppDeps): void {
  app.get(
    '/api/agents/:id/quota',
    { schema: { tags, security, summary: "An agent's quota: limits, used, reserved, and tokens_pct / cost_pct / storage_pct (0–100)", params: Params, response: { 200: QuotaEnvelope, ...errorResponses } } },
    async (req) => {
      const p = requireSelfOrRole(req, req.params.id, READERS, 'read quotas');
      return { quota: await getQuota(deps.db, p.tenantId, req.params.id) };
    },
  );

  app.put(
    '/api/agents/:id/quota',
    { schema: { tags, security, summary: "Change any subset of an agent's limits and overage_policy (admin only)", params: Params, body: PutQuotaBody, response: { 200: QuotaEnvelope, ...errorResponses } } },
    async (req) => {
      const actor = requireRole(req, ['admin'], 'change quotas');
      const quota = await withTransaction(
        deps.db,
        async (tx) => {
          const { before, after } = await updateQuotaLimits(tx, actor.tenantId, req.params.id, req.body);
          await recordAudit(tx, { tenantId: actor.tenantId, actor, action: 'agent.quota.update', targetType: 'agent', targetId: req.params.id, before, after });
          return after;
        },
        { name: 'update quota' },
      );
      return { quota };
    },
  );

  app.post(
    '/api/agents/:id/quota/adjustments',
    {
      schema: {
        tags,
        security,
        summary: "Adjust an agent's used counters by hand, with a reason (admin only; ledger entry and audit row with before/after)",
        params: Params,
        body: QuotaAdjustmentBody,
        response: { 200: QuotaEnvelope, ...errorResponses },
      },
    },
    async (req) => {
      const actor = requireRole(req, ['admin'], 'adjust quotas');
      const quota = await withTransaction(deps.db, (tx) => adjustQuotaUsage(tx, actor, actor.tenantId, req.params.id, req.body), { name: 'adjust quota' });
      return { quota };
    },
  );
}
