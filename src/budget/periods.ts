import type { Queryable } from '../db/index.js';
import { monthStartSql } from './quotas.js';

const dayStartSql = (at: string) => `(date_trunc('day', ${at} AT TIME ZONE t.time_zone) AT TIME ZONE t.time_zone)`;

/**
 * Starts new periods that are due at `now` (a Clock's time): agent quotas monthly (the 1st at
 * 00:00 in the tenant's time zone), budgets daily. Each is one conditional UPDATE on the
 * period marker (`period_start < start of the current period`), so when several processes
 * run it at once exactly one resets each row (the others re-check it after its commit and
 * find nothing due). A reset only zeroes the used counters: reserved units (running tasks)
 * stay held. Each agent reset is a `period_reset` ledger entry with the amounts it zeroed;
 * budgets with reset_policy carry_over keep their unused allowance for the next day.
 */
export async function resetPeriods(q: Queryable, now: Date): Promise<{ agents: number; budgets: number }> {
  const agents = await q.query<{ n: number }>(
    `WITH due AS (
       SELECT q.agent_id, q.tenant_id, q.monthly_tokens_used, q.monthly_cost_used_usd, q.period_start AS old_start, ${monthStartSql('$1::timestamptz')} AS new_start
         FROM agent_quotas q JOIN tenants t ON t.id = q.tenant_id
        WHERE q.period_start < ${monthStartSql('$1::timestamptz')}
        FOR UPDATE OF q
     ), reset AS (
       UPDATE agent_quotas q SET monthly_tokens_used = 0, monthly_cost_used_usd = 0, period_start = due.new_start, updated_at = now()
         FROM due WHERE q.agent_id = due.agent_id
       RETURNING q.agent_id
     ), ledger AS (
       INSERT INTO ledger_entries (tenant_id, agent_id, entry_type, tokens, cost_usd, details)
       SELECT tenant_id, agent_id, 'period_reset', -monthly_tokens_used, -monthly_cost_used_usd,
              jsonb_build_object('from', old_start, 'to', new_start)
         FROM due
     )
     SELECT count(*)::int AS n FROM reset`,
    [now],
  );
  const carry = (max: string, carried: string, used: string, reserved = '0') =>
    `CASE WHEN b.reset_policy = 'carry_over' AND b.${max} IS NOT NULL THEN greatest(0, b.${max} + b.${carried} - b.${used} - ${reserved}) ELSE 0 END`;
  const budgets = await q.query<{ n: number }>(
    `WITH due AS (
       SELECT b.id, ${dayStartSql('$1::timestamptz')} AS new_start
         FROM budgets b JOIN tenants t ON t.id = b.tenant_id
        WHERE b.period_start < ${dayStartSql('$1::timestamptz')}
        FOR UPDATE OF b
     ), reset AS (
       UPDATE budgets b SET
              tokens_carried = ${carry('max_tokens_per_day', 'tokens_carried', 'tokens_used', 'b.tokens_reserved')},
              cost_carried_micros = ${carry('max_cost_per_day_micros', 'cost_carried_micros', 'cost_used_micros', 'b.cost_reserved_micros')},
              compute_ms_carried = ${carry('max_compute_seconds_per_day', 'compute_ms_carried', 'compute_ms_used').replace('b.max_compute_seconds_per_day +', 'b.max_compute_seconds_per_day * 1000 +')},
              tokens_used = 0, cost_used_micros = 0, compute_ms_used = 0, period_start = due.new_start, updated_at = now()
         FROM due WHERE b.id = due.id
       RETURNING b.id
     )
     SELECT count(*)::int AS n FROM reset`,
    [now],
  );
  return { agents: agents.rows[0]!.n, budgets: budgets.rows[0]!.n };
}
