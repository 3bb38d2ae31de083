import { z } from 'zod';
import { recordAudit } from '../audit/index.js';
import type { Principal } from '../auth/index.js';
import type { Queryable, Tx } from '../db/index.js';
import { conflict, FabricError, forbidden } from '../errors/index.js';
import { recordEvent } from '../events/index.js';
import { billingPeriod } from './period.js';
import { getPlan, termsOf, type Plan } from './plans.js';

export const SubscriptionStatus = z.enum(['active', 'suspended', 'cancelled']);

export const Subscription = z.object({
  id: z.uuid(),
  tenant_id: z.string(),
  plan_id: z.string(),
  status: SubscriptionStatus,
  started_at: z.string(),
  suspended_at: z.string().nullable(),
  cancelled_at: z.string().nullable(),
  ends_at: z.string().nullable().describe('cancelled: new tasks are accepted until then (the end of the period it was cancelled in)'),
  created_at: z.string(),
  updated_at: z.string(),
});
export type Subscription = z.infer<typeof Subscription>;

export const SubscribeBody = z.object({ plan_id: z.string().min(1).max(63) }).strict();
export const ChangePlanBody = SubscribeBody;

export interface SubscriptionRow {
  id: string;
  tenant_id: string;
  plan_id: string;
  status: Subscription['status'];
  started_at: Date;
  suspended_at: Date | null;
  cancelled_at: Date | null;
  ends_at: Date | null;
  created_at: Date;
  updated_at: Date;
}

const iso = (d: Date | null) => (d ? d.toISOString() : null);

export function toSubscription(r: SubscriptionRow): Subscription {
  return {
    id: r.id,
    tenant_id: r.tenant_id,
    plan_id: r.plan_id,
    status: r.status,
    started_at: r.started_at.toISOString(),
    suspended_at: iso(r.suspended_at),
    cancelled_at: iso(r.cancelled_at),
    ends_at: iso(r.ends_at),
    created_at: r.created_at.toISOString(),
    updated_at: r.updated_at.toISOString(),
  };
}

/** The tenant's subscription row (any status), or undefined. */
export async function findSubscription(q: Queryable, tenantId: string, opts: { forUpdate?: boolean } = {}): Promise<SubscriptionRow | undefined> {
  const r = await q.query<SubscriptionRow>(`SELECT * FROM subscriptions WHERE tenant_id = $1${opts.forUpdate ? ' FOR UPDATE' : ''}`, [tenantId]);
  return r.rows[0];
}

async function requireSubscription(tx: Tx, tenantId: string): Promise<SubscriptionRow> {
  const row = await findSubscription(tx, tenantId, { forUpdate: true });
  if (!row) throw new FabricError(404, 'subscription_not_found', `Tenant ${tenantId} has no subscription; create one with POST /api/subscription {"plan_id": …}.`);
  return row;
}

/** A plan the actor may put the tenant on: tenant admins only self-service plans. */
async function choosablePlan(tx: Tx, actor: Principal, planId: string): Promise<Plan> {
  const plan = await getPlan(tx, planId);
  if (!plan.self_service && actor.role !== 'platform_admin')
    throw forbidden(`Plan "${plan.id}" is assigned by a platform admin (it is not self-service); ask yours, or choose another plan from GET /api/plans.`, 'plan_not_self_service');
  return plan;
}

/** Records the terms the tenant is billed with from `at`, replacing any scheduled for later. */
async function recordTerms(tx: Tx, tenantId: string, plan: Plan, at: Date, reason: 'subscribe' | 'change_plan'): Promise<void> {
  await tx.query('DELETE FROM subscription_plan_history WHERE tenant_id = $1 AND effective_at > $2', [tenantId, at.toISOString()]);
  await tx.query(
    `INSERT INTO subscription_plan_history (tenant_id, plan_id, terms, effective_at, reason) VALUES ($1, $2, $3, $4, $5)`,
    [tenantId, plan.id, JSON.stringify(termsOf(plan)), at.toISOString(), reason],
  );
}

async function transition(
  tx: Tx,
  actor: Principal,
  before: SubscriptionRow | undefined,
  set: string,
  params: unknown[],
  what: { action: string; event: string; data?: Record<string, unknown> },
): Promise<Subscription> {
  const tenantId = actor.tenantId;
  const r = await tx.query<SubscriptionRow>(`UPDATE subscriptions SET ${set}, updated_at = now() WHERE tenant_id = $1 RETURNING *`, [tenantId, ...params]);
  const after = toSubscription(r.rows[0]!);
  await recordEvent(tx, { tenantId, eventType: what.event, subjectType: 'subscription', subjectId: after.id, data: { plan_id: after.plan_id, status: after.status, ...what.data } });
  await recordAudit(tx, { tenantId, actor, action: what.action, targetType: 'subscription', targetId: after.id, before: before ? toSubscription(before) : undefined, after });
  return after;
}

/**
 * Subscribes the actor's tenant to `planId` from `now` (or reactivates a cancelled
 * subscription with it). 409 subscription_exists when one is active or suspended.
 */
export async function subscribe(tx: Tx, actor: Principal, planId: string, now: Date): Promise<Subscription> {
  const tenantId = actor.tenantId;
  const plan = await choosablePlan(tx, actor, planId);
  const existing = await findSubscription(tx, tenantId, { forUpdate: true });
  if (existing && existing.status !== 'cancelled')
    throw conflict('subscription_exists', `Tenant ${tenantId} already has a ${existing.status} subscription to "${existing.plan_id}"; change its plan with PATCH /api/subscription.`);
  await recordTerms(tx, tenantId, plan, now, 'subscribe');
  if (!existing) {
    const r = await tx.query<SubscriptionRow>(
      `INSERT INTO subscriptions (tenant_id, plan_id, status, started_at) VALUES ($1, $2, 'active', $3) RETURNING *`,
      [tenantId, plan.id, now.toISOString()],
    );
    const sub = toSubscription(r.rows[0]!);
    await recordEvent(tx, { tenantId, eventType: 'subscription.created', subjectType: 'subscription', subjectId: sub.id, data: { plan_id: plan.id } });
    await recordAudit(tx, { tenantId, actor, action: 'subscription.create', targetType: 'subscription', targetId: sub.id, after: sub });
    return sub;
  }
  return transition(tx, actor, existing, `plan_id = $2, status = 'active', started_at = $3, suspended_at = NULL, cancelled_at = NULL, ends_at = NULL`, [plan.id, now.toISOString()], {
    action: 'subscription.reactivate',
    event: 'subscription.created',
  });
}

/** Moves the tenant to another plan at once; the new plan prices the whole current period (no proration). */
export async function changePlan(tx: Tx, actor: Principal, planId: string, now: Date): Promise<Subscription> {
  const before = await requireSubscription(tx, actor.tenantId);
  if (before.status === 'cancelled')
    throw conflict('subscription_cancelled', 'The subscription is cancelled; subscribe again with POST /api/subscription {"plan_id": …}.');
  const plan = await choosablePlan(tx, actor, planId);
  if (plan.id === before.plan_id) return toSubscription(before);
  await recordTerms(tx, actor.tenantId, plan, now, 'change_plan');
  return transition(tx, actor, before, 'plan_id = $2', [plan.id], { action: 'subscription.change_plan', event: 'subscription.plan_changed', data: { from: before.plan_id } });
}

/** Suspends at once: new tasks are refused with 403 subscription_inactive until resumed. */
export async function suspend(tx: Tx, actor: Principal, now: Date): Promise<Subscription> {
  const before = await requireSubscription(tx, actor.tenantId);
  if (before.status === 'cancelled') throw conflict('subscription_cancelled', 'The subscription is cancelled; there is nothing to suspend.');
  if (before.status === 'suspended') return toSubscription(before);
  return transition(tx, actor, before, `status = 'suspended', suspended_at = $2`, [now.toISOString()], { action: 'subscription.suspend', event: 'subscription.suspended' });
}

export async function resume(tx: Tx, actor: Principal): Promise<Subscription> {
  const before = await requireSubscription(tx, actor.tenantId);
  if (before.status !== 'suspended')
    throw conflict('subscription_not_suspended', `The subscription is ${before.status}, not suspended; only a suspended subscription can be resumed.`);
  return transition(tx, actor, before, `status = 'active', suspended_at = NULL`, [], { action: 'subscription.resume', event: 'subscription.resumed' });
}

/**
 * Cancels: running sessions finish, new tasks are accepted until the end of the current billing
 * period (`ends_at`) and refused after it; usage rows are kept. A suspended subscription ends at
 * once (cancelling must not lift a suspension). Cancelling again changes nothing.
 */
export async function cancel(tx: Tx, actor: Principal, now: Date): Promise<Subscription> {
  const before = await requireSubscription(tx, actor.tenantId);
  if (before.status === 'cancelled') return toSubscription(before);
  const endsAt = before.status === 'suspended' ? now : (await billingPeriod(tx, actor.tenantId, now)).end;
  return transition(tx, actor, before, `status = 'cancelled', cancelled_at = $2, ends_at = $3`, [now.toISOString(), endsAt.toISOString()], {
    action: 'subscription.cancel',
    event: 'subscription.cancelled',
    data: { ends_at: endsAt.toISOString() },
  });
}

/** Whether the subscription accepts new tasks at `now`, and if not, why (for the 403). */
export function inactiveReason(sub: SubscriptionRow, now: Date): string | undefined {
  if (sub.status === 'suspended')
    return `The subscription of tenant ${sub.tenant_id} is suspended since ${sub.suspended_at?.toISOString()}; new tasks are refused until a platform admin resumes it.`;
  if (sub.status === 'cancelled' && sub.ends_at && now >= sub.ends_at)
    return `The subscription of tenant ${sub.tenant_id} was cancelled and ended at ${sub.ends_at.toISOString()}; subscribe again with POST /api/subscription to submit tasks.`;
  return undefined;
}
