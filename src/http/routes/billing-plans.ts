import { z } from 'zod';
import { READERS } from '../../auth/index.js';
import { createPlan, CreatePlanBody, getPlan, listPlans, Plan, updatePlan, UpdatePlanBody, type BillingService } from '../../billing/index.js';
import { withTransaction } from '../../db/index.js';
import { requireRole } from '../auth.js';
import { errorResponses } from '../errors.js';
import type { App, AppDeps } from '../types.js';
import { createRoute } from './create.js';

const tags = ['billing'];
const security = [{ bearerAuth: [] }];
const PlanEnvelope = z.object({ plan: Plan });
const PlanParams = z.object({ id: z.string().min(1).max(63) }).strict();

/** Plans: everyone of a tenant reads them; a platform_admin creates and changes them. */
export function billingPlanRoutes(app: App, deps: AppDeps, billing: BillingService): void {
  app.get(
    '/api/plans',
    { schema: { tags, security, summary: 'List the plans (included quotas, overage rates, entitlements)', response: { 200: z.object({ plans: z.array(Plan) }), ...errorResponses } } },
    async (req) => {
      requireRole(req, READERS, 'list plans');
      return { plans: await listPlans(deps.db) };
    },
  );

  app.get(
    '/api/plans/:id',
    { schema: { tags, security, summary: 'Get a plan', params: PlanParams, response: { 200: PlanEnvelope, ...errorResponses } } },
    async (req) => {
      requireRole(req, READERS, 'read plans');
      return { plan: await getPlan(deps.db, req.params.id) };
    },
  );

  createRoute(app, deps, {
    url: '/api/plans',
    tags,
    summary: 'Create a plan (platform_admin)',
    body: CreatePlanBody,
    response: PlanEnvelope,
    roles: [],
    doing: 'create plans',
    name: 'create plan',
    create: async (tx, actor, body) => ({ plan: await createPlan(tx, actor, body) }),
  });

  app.patch(
    '/api/plans/:id',
    {
      schema: {
        tags,
        security,
        summary: 'Change a plan (platform_admin): new subscriptions at once, existing ones from their next billing period',
        params: PlanParams,
        body: UpdatePlanBody,
        response: { 200: PlanEnvelope, ...errorResponses },
      },
    },
    async (req) => {
      const actor = requireRole(req, [], 'change plans');
      const plan = await withTransaction(deps.db, (tx) => updatePlan(tx, actor, req.params.id, req.body, billing.clock.now()), { name: 'update plan' });
      return { plan };
    },
  );
}
