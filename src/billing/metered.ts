import type { Queryable } from '../db/index.js';
import type { BillingPeriod } from './period.js';
import type { PlanTerms } from './plans.js';
import { DIMENSIONS, overageCharge, UNITS, type Dimension } from './units.js';

/** One agent_quota_usage row with its share of the period's overage (exact, BigInt). */
export interface MeteredEvent {
  id: string;
  created_at: Date;
  period_start: Date;
  tenant_id: string;
  billing_subject: string | null;
  workspace_id: string | null;
  user_id: string | null;
  agent_id: string | null;
  task_id: string | null;
  attempt: number | null;
  session_id: string | null;
  dimension: Dimension;
  model: string | null;
  input_tokens: bigint;
  output_tokens: bigint;
  quantity: bigint;
  cost_micros: bigint;
  /** The part of `quantity` past the plan's included quantity. */
  overage_quantity: bigint;
  /** What that part is charged; the events' charges add up to the period's overage charge exactly. */
  overage_charge_micros: bigint;
  idempotency_key: string | null;
}

/** Its row as read: the bigint columns arrive as text (exact). */
type Row = Omit<MeteredEvent, 'input_tokens' | 'output_tokens' | 'quantity' | 'cost_micros' | 'overage_quantity' | 'overage_charge_micros'> &
  Record<'input_tokens' | 'output_tokens' | 'quantity' | 'cost_micros', string>;

/** Included quantity of `dimension` in ledger units; null = unlimited (no overage). */
export function includedLedgerUnits(terms: PlanTerms | null, dimension: Dimension): bigint | null {
  const included = terms?.dimensions[dimension].included;
  if (!terms || included === null || included === undefined) return null;
  return BigInt(included) * UNITS[dimension].includedUnit;
}

/** The overage quantity and its charge when the period's total of `dimension` is `total`. */
export function overageAt(terms: PlanTerms | null, dimension: Dimension, total: bigint): { quantity: bigint; charge: bigint } {
  const included = includedLedgerUnits(terms, dimension);
  if (included === null || total <= included) return { quantity: 0n, charge: 0n };
  const quantity = total - included;
  return { quantity, charge: overageCharge(dimension, quantity, BigInt(terms!.dimensions[dimension].overage_rate_micros)) };
}

const PAGE = 1000;

/**
 * Every metered event of the tenant's period in ledger order (id), each with the overage its
 * quantity adds to the running total of its dimension. Reads keyset pages of 1,000 rows, so
 * memory stays flat however long the period; a period still open is a live view.
 */
export async function* meteredEvents(q: Queryable, tenantId: string, period: BillingPeriod, terms: PlanTerms | null): AsyncGenerator<MeteredEvent> {
  const running = Object.fromEntries(DIMENSIONS.map((d) => [d, 0n])) as Record<Dimension, bigint>;
  let after = '0';
  for (;;) {
    const r = await q.query<Row>(
      `SELECT id::text, created_at, period_start, tenant_id, billing_subject, workspace_id, user_id, agent_id, task_id, attempt, session_id,
              dimension, model, input_tokens::text, output_tokens::text, quantity::text, cost_micros::text, idempotency_key
         FROM agent_quota_usage
        WHERE tenant_id = $1 AND period_start >= $2 AND period_start < $3 AND agent_quota_usage.id > $4::bigint
        ORDER BY agent_quota_usage.id LIMIT ${PAGE}`, // the column: "id" alone would sort the text alias
      [tenantId, period.start.toISOString(), period.end.toISOString(), after],
    );
    for (const row of r.rows) {
      const quantity = BigInt(row.quantity);
      const before = overageAt(terms, row.dimension, running[row.dimension]);
      running[row.dimension] += quantity;
      const now = overageAt(terms, row.dimension, running[row.dimension]);
      yield {
        ...row,
        input_tokens: BigInt(row.input_tokens),
        output_tokens: BigInt(row.output_tokens),
        quantity,
        cost_micros: BigInt(row.cost_micros),
        overage_quantity: now.quantity - before.quantity,
        overage_charge_micros: now.charge - before.charge,
      };
    }
    if (r.rows.length < PAGE) return;
    after = r.rows.at(-1)!.id;
  }
}

export interface PeriodTotals {
  events: bigint;
  consumed: bigint;
  cost: bigint;
}

/** The tenant's totals per dimension over `period`: one aggregate, exact (summed as numeric, read as text). */
export async function periodTotals(q: Queryable, tenantId: string, period: BillingPeriod): Promise<Record<Dimension, PeriodTotals>> {
  const r = await q.query<{ dimension: Dimension; events: string; consumed: string; cost: string }>(
    `SELECT dimension, count(*)::text AS events, sum(quantity)::text AS consumed, sum(cost_micros)::text AS cost
       FROM agent_quota_usage WHERE tenant_id = $1 AND period_start >= $2 AND period_start < $3 GROUP BY dimension`,
    [tenantId, period.start.toISOString(), period.end.toISOString()],
  );
  const totals = Object.fromEntries(DIMENSIONS.map((d) => [d, { events: 0n, consumed: 0n, cost: 0n }])) as Record<Dimension, PeriodTotals>;
  for (const row of r.rows) totals[row.dimension] = { events: BigInt(row.events), consumed: BigInt(row.consumed), cost: BigInt(row.cost) };
  return totals;
}
