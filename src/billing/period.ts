import type { Queryable } from '../db/index.js';
import { notFound } from '../errors/index.js';

/** A billing period: a calendar month in the tenant's time zone, [start, end). */
export interface BillingPeriod {
  start: Date;
  end: Date;
}

/**
 * SQL for the time zone of tenant row `t`: `tenants.time_zone` when the budgets migration has
 * added it (read through to_jsonb so this works with or without the column), else UTC — the
 * same months the usage ledger's `period_start` counts in.
 */
export const TENANT_TIME_ZONE_SQL = `COALESCE(to_jsonb(t) ->> 'time_zone', 'UTC')`;

/** The billing period of `tenantId` containing `at`, moved by `offset` months (-1: the previous one). */
export async function billingPeriod(q: Queryable, tenantId: string, at: Date, offset = 0): Promise<BillingPeriod> {
  const r = await q.query<BillingPeriod>(
    `SELECT (m + make_interval(months => $3::int)) AT TIME ZONE tz AS start,
            (m + make_interval(months => $3::int + 1)) AT TIME ZONE tz AS "end"
       FROM (SELECT tz, date_trunc('month', $2::timestamptz AT TIME ZONE tz) AS m
               FROM (SELECT ${TENANT_TIME_ZONE_SQL} AS tz FROM tenants t WHERE t.id = $1) z) p`,
    [tenantId, at.toISOString(), offset],
  );
  if (!r.rows[0]) throw notFound('tenant', tenantId);
  return r.rows[0];
}
