import { z } from 'zod';
import { READERS, type Principal } from '../../auth/index.js';
import {
  cancel,
  changePlan,
  ChangePlanBody,
  Entitlements,
  findSubscription,
  resume,
  subscribe,
  SubscribeBody,
  Subscription,
  suspend,
  termsAt,
  toSubscription,
  type BillingService,
} from '../../billing/index.js';
import { withTransaction, type Tx } from '../../db/index.js';
import { requireRole } from '../auth.js';
import { errorResponses } from '../errors.js';
import type { App, AppDeps } from '../types.js';
import { createRoute } from './create.js';

const tags = ['billing'];
const security = [{ bearerAuth: [] }];
const SubscriptionEnvelope = z.object({ subscription: Subscription });

/** Who may do what to a tenant's subscription: its admin chooses plans and cancels; suspending is the platform's. */
const TENANT_ADMIN = ['admin'] as const;

/**
 * The caller's tenant's subscription (a platform_admin picks the tenant with X-Fabric-Tenant).
 * Tenant admins subscribe, change plan and cancel; only a platform_admin suspends and resumes.
 */
export function billingSubscriptionRoutes(app: App, deps: AppDeps, billing: BillingService): void {
  app.get(
    '/api/subscription',
    {
      schema: {
        tags,
        security,
        summary: "The tenant's subscription and the entitlements in force (null when billing does not apply)",
        response: {
          200: z.object({ subscription: Subscription.nullable(), plan_id: z.string().nullable(), entitlements: Entitlements.nullable() }),
          ...errorResponses,
        },
      },
    },
    async (req) => {
      const p = requireRole(req, READERS, 'read the subscription');
      const row = await findSubscription(deps.db, p.tenantId);
      const terms = await termsAt(deps.db, p.tenantId, billing.clock.now(), billing.defaultPlan);
      return { subscription: row ? toSubscription(row) : null, plan_id: terms?.plan_id ?? null, entitlements: terms?.entitlements ?? null };
    },
  );

  createRoute(app, deps, {
    url: '/api/subscription',
    tags,
    summary: 'Subscribe the tenant to a plan (admin; non-self-service plans: platform_admin)',
    body: SubscribeBody,
    response: SubscriptionEnvelope,
    roles: TENANT_ADMIN,
    doing: 'subscribe the tenant',
    name: 'subscribe',
    create: async (tx, actor, body) => {
      const subscription = await subscribe(tx, actor, body.plan_id, billing.clock.now());
      billing.subscriptionCreated(actor.tenantId);
      return { subscription };
    },
  });

  app.patch(
    '/api/subscription',
    {
      schema: { tags, security, summary: 'Change plan, effective at once for the whole current period (admin)', body: ChangePlanBody, response: { 200: SubscriptionEnvelope, ...errorResponses } },
    },
    async (req) => {
      const actor = requireRole(req, TENANT_ADMIN, 'change the plan');
      const subscription = await withTransaction(deps.db, (tx) => changePlan(tx, actor, req.body.plan_id, billing.clock.now()), { name: 'change plan' });
      return { subscription };
    },
  );

  const action = (path: string, summary: string, roles: readonly ('admin')[], doing: string, run: (tx: Tx, actor: Principal) => Promise<Subscription>) =>
    app.post(path, { schema: { tags, security, summary, response: { 200: SubscriptionEnvelope, ...errorResponses } } }, async (req) => {
      const actor = requireRole(req, roles, doing);
      return { subscription: await withTransaction(deps.db, (tx) => run(tx, actor), { name: doing }) };
    });

  action('/api/subscription/cancel', 'Cancel: new tasks accepted until the end of the billing period, refused after; usage kept (admin)', TENANT_ADMIN, 'cancel the subscription', (tx, actor) =>
    cancel(tx, actor, billing.clock.now()),
  );
  action('/api/subscription/suspend', 'Suspend: new tasks refused at once with 403 subscription_inactive (platform_admin)', [], 'suspend subscriptions', (tx, actor) =>
    suspend(tx, actor, billing.clock.now()),
  );
  action('/api/subscription/resume', 'Resume a suspended subscription (platform_admin)', [], 'resume subscriptions', (tx, actor) => resume(tx, actor));
}
