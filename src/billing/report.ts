import { z } from 'zod';
import type { Queryable } from '../db/index.js';
import { includedLedgerUnits, meteredEvents, overageAt, periodTotals } from './metered.js';
import { billingPeriod, type BillingPeriod } from './period.js';
import type { PlanTerms } from './plans.js';
import { findSubscription } from './subscriptions.js';
import { termsForPeriod } from './terms.js';
import { DIMENSIONS, toSafeNumber, UNITS, type Dimension } from './units.js';

export const PeriodName = z.enum(['current', 'previous']);
export type PeriodName = z.infer<typeof PeriodName>;

export const UsageQuery = z
  .object({
    period: PeriodName.default('current'),
    agent_id: z.uuid().optional().describe("only this agent's events"),
    user_id: z.uuid().optional().describe("only this user's events"),
  })
  .strict();
export type UsageQuery = z.infer<typeof UsageQuery>;

const Int = z.number().int();
const DimensionUsage = z.object({
  dimension: z.enum(DIMENSIONS),
  unit: z.string().describe('unit of every quantity of this entry (the usage ledger\'s)'),
  events: Int,
  consumed: Int,
  included: Int.nullable().describe("the plan's monthly allowance for the whole tenant; null = unlimited"),
  remaining: Int.nullable().describe("the tenant's allowance left (never negative); null = unlimited"),
  overage_quantity: Int,
  overage_rate_micros: Int.nullable(),
  rate_unit: z.string(),
  overage_charge_micros: Int,
  cost_micros: Int.describe('sum of the events\' cost_micros'),
  projected: z.object({ consumed: Int, overage_quantity: Int, overage_charge_micros: Int }),
});

export const UsageReport = z.object({
  tenant_id: z.string(),
  period: z.object({ name: PeriodName, start: z.string(), end: z.string(), elapsed_fraction: z.number() }),
  scope: z.object({ agent_id: z.string().nullable(), user_id: z.string().nullable() }),
  plan: z.object({ id: z.string(), name: z.string() }).nullable().describe('null: no plan prices this period (unmetered)'),
  subscription_status: z.string().nullable(),
  dimensions: z.array(DimensionUsage),
  totals: z.object({
    base_fee_micros: Int.nullable().describe('the tenant\'s subscription fee; null in an agent or user report'),
    overage_charge_micros: Int,
    cost_micros: Int,
    total_micros: Int.describe('base fee + overage charges'),
    projected_overage_charge_micros: Int,
    projected_total_micros: Int,
  }),
  projection: z.string(),
});
export type UsageReport = z.infer<typeof UsageReport>;

interface Sums {
  events: bigint;
  consumed: bigint;
  cost: bigint;
  overage: bigint;
  charge: bigint;
}

const zero = (): Sums => ({ events: 0n, consumed: 0n, cost: 0n, overage: 0n, charge: 0n });

/** Tenant-wide sums per dimension: one aggregate; the overage follows from the totals. */
async function tenantSums(q: Queryable, tenantId: string, period: BillingPeriod, terms: PlanTerms | null): Promise<Record<Dimension, Sums>> {
  const totals = await periodTotals(q, tenantId, period);
  return Object.fromEntries(
    DIMENSIONS.map((d) => {
      const over = overageAt(terms, d, totals[d].consumed);
      return [d, { ...totals[d], overage: over.quantity, charge: over.charge }];
    }),
  ) as Record<Dimension, Sums>;
}

/** Sums of an agent's or user's events, each with its share of the tenant's overage (event order). */
async function scopedSums(
  q: Queryable,
  tenantId: string,
  period: BillingPeriod,
  terms: PlanTerms | null,
  match: (e: { agent_id: string | null; user_id: string | null }) => boolean,
): Promise<{ scope: Record<Dimension, Sums>; tenantConsumed: Record<Dimension, bigint> }> {
  const scope = Object.fromEntries(DIMENSIONS.map((d) => [d, zero()])) as Record<Dimension, Sums>;
  const tenantConsumed = Object.fromEntries(DIMENSIONS.map((d) => [d, 0n])) as Record<Dimension, bigint>;
  for await (const e of meteredEvents(q, tenantId, period, terms)) {
    tenantConsumed[e.dimension] += e.quantity;
    if (!match(e)) continue;
    const s = scope[e.dimension];
    s.events += 1n;
    s.consumed += e.quantity;
    s.cost += e.cost_micros;
    s.overage += e.overage_quantity;
    s.charge += e.overage_charge_micros;
  }
  return { scope, tenantConsumed };
}

export interface UsageReportInput extends UsageQuery {
  tenantId: string;
  now: Date;
  defaultPlan: string | undefined;
}

/**
 * Consumed vs included per dimension for the current or previous billing period, with the
 * overage and its charge, exact to the micro-USD. Projection to the period's end is linear
 * on elapsed time: consumed × period length ÷ time elapsed.
 */
export async function usageReport(q: Queryable, input: UsageReportInput): Promise<UsageReport> {
  const { tenantId, now } = input;
  const period = await billingPeriod(q, tenantId, now, input.period === 'current' ? 0 : -1);
  const terms = await termsForPeriod(q, tenantId, period, input.defaultPlan);
  const scoped = input.agent_id !== undefined || input.user_id !== undefined;
  const agentId = input.agent_id?.toLowerCase();
  const userId = input.user_id?.toLowerCase();
  let sums: Record<Dimension, Sums>;
  let tenantConsumed: Record<Dimension, bigint>;
  if (scoped) {
    const s = await scopedSums(q, tenantId, period, terms, (e) => (!agentId || e.agent_id === agentId) && (!userId || e.user_id === userId));
    sums = s.scope;
    tenantConsumed = s.tenantConsumed;
  } else {
    sums = await tenantSums(q, tenantId, period, terms);
    tenantConsumed = Object.fromEntries(DIMENSIONS.map((d) => [d, sums[d].consumed])) as Record<Dimension, bigint>;
  }

  const length = BigInt(period.end.getTime() - period.start.getTime());
  const elapsed = BigInt(Math.min(Math.max(now.getTime(), period.start.getTime()), period.end.getTime()) - period.start.getTime());
  const project = (v: bigint) => (elapsed > 0n ? (v * length) / elapsed : v);

  let overageTotal = 0n;
  let costTotal = 0n;
  let projectedOverageTotal = 0n;
  const dimensions = DIMENSIONS.map((d) => {
    const s = sums[d];
    const included = includedLedgerUnits(terms, d);
    const rate = terms ? terms.dimensions[d].overage_rate_micros : null;
    // Tenant-wide, the projected overage follows from the projected total; an agent's or
    // user's share of it is its own overage scaled the same way.
    const projected = scoped
      ? { consumed: project(s.consumed), quantity: project(s.overage), charge: project(s.charge) }
      : (() => {
          const consumed = project(s.consumed);
          const over = overageAt(terms, d, consumed);
          return { consumed, quantity: over.quantity, charge: over.charge };
        })();
    overageTotal += s.charge;
    costTotal += s.cost;
    projectedOverageTotal += projected.charge;
    return {
      dimension: d,
      unit: UNITS[d].unit,
      events: toSafeNumber(s.events),
      consumed: toSafeNumber(s.consumed),
      included: included === null ? null : toSafeNumber(included),
      remaining: included === null ? null : toSafeNumber(included > tenantConsumed[d] ? included - tenantConsumed[d] : 0n),
      overage_quantity: toSafeNumber(s.overage),
      overage_rate_micros: rate,
      rate_unit: UNITS[d].rateLabel,
      overage_charge_micros: toSafeNumber(s.charge),
      cost_micros: toSafeNumber(s.cost),
      projected: { consumed: toSafeNumber(projected.consumed), overage_quantity: toSafeNumber(projected.quantity), overage_charge_micros: toSafeNumber(projected.charge) },
    };
  });
  const base = scoped || !terms ? null : BigInt(terms.base_fee_micros);
  const sub = await findSubscription(q, tenantId);
  return {
    tenant_id: tenantId,
    period: {
      name: input.period,
      start: period.start.toISOString(),
      end: period.end.toISOString(),
      elapsed_fraction: Number(elapsed) / Number(length),
    },
    scope: { agent_id: agentId ?? null, user_id: userId ?? null },
    plan: terms ? { id: terms.plan_id, name: terms.name } : null,
    subscription_status: sub?.status ?? null,
    dimensions,
    totals: {
      base_fee_micros: base === null ? null : toSafeNumber(base),
      overage_charge_micros: toSafeNumber(overageTotal),
      cost_micros: toSafeNumber(costTotal),
      total_micros: toSafeNumber((base ?? 0n) + overageTotal),
      projected_overage_charge_micros: toSafeNumber(projectedOverageTotal),
      projected_total_micros: toSafeNumber((base ?? 0n) + projectedOverageTotal),
    },
    projection: 'linear on elapsed time: consumed × period length ÷ time elapsed (the previous period is complete: projected = actual)',
  };
}
