import { withTransaction, type Db } from '../db/index.js';
import { recordEvent } from '../events/index.js';
import type { Notifier } from '../notify/index.js';
import { includedLedgerUnits, periodTotals } from './metered.js';
import { billingPeriod } from './period.js';
import { termsForPeriod } from './terms.js';
import { DIMENSIONS, UNITS } from './units.js';

interface Notice {
  tenant_id: string;
  period_start: Date;
  dimension: string;
  plan_id: string;
  included: string;
  consumed: string;
}

/**
 * Records overage that has started in the tenant's current period: one notice row per period
 * and dimension (the primary key makes it once, across processes) and, with it, a
 * `billing.overage_started` event. Returns how many notices are new.
 */
export async function detectOverage(db: Db, tenantId: string, now: Date, defaultPlan: string | undefined): Promise<number> {
  return withTransaction(
    db,
    async (tx) => {
      const period = await billingPeriod(tx, tenantId, now);
      const terms = await termsForPeriod(tx, tenantId, period, defaultPlan);
      if (!terms) return 0;
      const totals = await periodTotals(tx, tenantId, period);
      let created = 0;
      for (const d of DIMENSIONS) {
        const included = includedLedgerUnits(terms, d);
        const consumed = totals[d].consumed;
        if (included === null || consumed <= included) continue;
        const r = await tx.query(
          `INSERT INTO billing_overage_notices (tenant_id, period_start, dimension, plan_id, included, consumed)
           VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING 1`,
          [tenantId, period.start.toISOString(), d, terms.plan_id, included.toString(), consumed.toString()],
        );
        if (!r.rows.length) continue;
        created++;
        await recordEvent(tx, {
          tenantId,
          eventType: 'billing.overage_started',
          subjectType: 'tenant',
          subjectId: tenantId,
          data: {
            dimension: d,
            unit: UNITS[d].unit,
            plan_id: terms.plan_id,
            period_start: period.start.toISOString(),
            included: included.toString(),
            consumed: consumed.toString(),
            overage_rate_micros: terms.dimensions[d].overage_rate_micros,
            rate_unit: UNITS[d].rateLabel,
          },
        });
      }
      return created;
    },
    { name: 'detect overage' },
  );
}

/**
 * Sends the notification of every notice not yet sent. Each is claimed (notified_at set) before
 * it is sent, so two processes never both send it: at most once, and a crash between claim and
 * send loses that one notification (the event and the notice row stay).
 */
export async function deliverOverageNotices(db: Db, notifier: Notifier): Promise<number> {
  const r = await db.query<Notice>(
    `UPDATE billing_overage_notices n SET notified_at = now()
      WHERE (n.tenant_id, n.period_start, n.dimension) IN (
        SELECT tenant_id, period_start, dimension FROM billing_overage_notices WHERE notified_at IS NULL
         ORDER BY created_at LIMIT 100 FOR UPDATE SKIP LOCKED)
      RETURNING n.tenant_id, n.period_start, n.dimension, n.plan_id, n.included::text, n.consumed::text`,
  );
  for (const n of r.rows) {
    const unit = UNITS[n.dimension as (typeof DIMENSIONS)[number]].unit;
    await notifier.send({
      severity: 'warning',
      title: 'Overage started',
      text: `Tenant ${n.tenant_id} has used ${n.consumed} ${unit} of ${n.dimension}, past the ${n.included} its plan "${n.plan_id}" includes this period (from ${n.period_start.toISOString()}). Work continues; the excess is charged at the plan's overage rate. See GET /api/usage.`,
      tenantId: n.tenant_id,
      fields: { dimension: n.dimension, plan: n.plan_id, included: n.included, consumed: n.consumed },
    });
  }
  return r.rows.length;
}
