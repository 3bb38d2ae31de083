import type { Queryable } from '../db/index.js';
import type { BillingPeriod } from './period.js';
import { getPlan, termsOf, type PlanTerms } from './plans.js';

/**
 * Which plan prices a tenant's usage. A subscribed tenant: the terms recorded in its plan
 * history (a plan change prices the whole period it happens in). Before a tenant's first
 * subscription: the default plan (`FABRIC_BILLING_DEFAULT_PLAN`) when one is configured, else
 * none — unmetered and unrestricted, the self-hosted default.
 */
async function latestTerms(q: Queryable, tenantId: string, bound: Date, inclusive: boolean, defaultPlan: string | undefined): Promise<PlanTerms | null> {
  const r = await q.query<{ terms: PlanTerms }>(
    `SELECT terms FROM subscription_plan_history
      WHERE tenant_id = $1 AND effective_at ${inclusive ? '<=' : '<'} $2
      ORDER BY effective_at DESC, id DESC LIMIT 1`,
    [tenantId, bound.toISOString()],
  );
  if (r.rows[0]) return r.rows[0].terms;
  return defaultPlan ? termsOf(await getPlan(q, defaultPlan)) : null;
}

/** The terms in force at `at` (entitlements of a request). */
export function termsAt(q: Queryable, tenantId: string, at: Date, defaultPlan: string | undefined): Promise<PlanTerms | null> {
  return latestTerms(q, tenantId, at, true, defaultPlan);
}

/** The terms `period` is priced with: the latest effective before it ends. */
export function termsForPeriod(q: Queryable, tenantId: string, period: BillingPeriod, defaultPlan: string | undefined): Promise<PlanTerms | null> {
  return latestTerms(q, tenantId, period.end, false, defaultPlan);
}
