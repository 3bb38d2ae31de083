import type { Queryable } from '../db/index.js';
import type { Alert, Notifier } from '../notify/index.js';
import { microsToUsd } from './money.js';

interface AlertRow {
  id: number;
  tenant_id: string;
  entity_type: 'agent' | 'budget';
  entity_id: string;
  agent_id: string | null;
  kind: 'threshold' | 'exhausted' | 'overage';
  period_start: Date;
  data: { dimension: 'tokens' | 'cost' | 'compute'; used: number; limit: number; policy: string; threshold_pct: number };
}

const TITLES = {
  threshold: { severity: 'warning', title: 'Budget threshold reached' },
  exhausted: { severity: 'critical', title: 'Budget exhausted' },
  overage: { severity: 'warning', title: 'Budget overage started' },
} as const;

function amount(dimension: AlertRow['data']['dimension'], v: number): string {
  if (dimension === 'cost') return `${microsToUsd(v)} USD`;
  if (dimension === 'compute') return `${v / 1000} compute seconds`;
  return `${v} tokens`;
}

/** The notifier message for one alert row. */
export function budgetAlert(row: AlertRow): Alert {
  const d = row.data;
  const who = row.entity_type === 'agent' ? `Agent ${row.entity_id}` : `Budget ${row.entity_id}`;
  const what = { threshold: `reached its ${d.threshold_pct} % alert threshold`, exhausted: 'has used its whole limit', overage: 'went past its limit' }[row.kind];
  const next =
    d.policy === 'block'
      ? 'New work that needs more is refused (429 quota_exceeded) until the next period or a higher limit.'
      : 'Its overage_policy is alert_only, so it keeps running; raise the limit or change the policy if that is not intended.';
  return {
    ...TITLES[row.kind],
    text: `${who} ${what}: ${amount(d.dimension, d.used)} used or reserved of ${amount(d.dimension, d.limit)} this period. ${next}`,
    tenantId: row.tenant_id,
    ...(row.agent_id ? { agentId: row.agent_id } : {}),
    fields: { kind: row.kind, dimension: d.dimension, policy: d.policy, period_start: row.period_start.toISOString() },
  };
}

/**
 * Delivers pending alerts from the budget_alerts outbox: each row is taken by exactly one
 * process (UPDATE … SKIP LOCKED sets notified_at), then sent to the notifier (#fleet-ops).
 * At most once: a process that dies between taking and sending loses that message (the row
 * and its system event remain). Returns how many were sent.
 */
export async function dispatchBudgetAlerts(q: Queryable, notifier: Notifier, limit = 100): Promise<number> {
  const r = await q.query<AlertRow>(
    `UPDATE budget_alerts SET notified_at = now()
      WHERE id IN (SELECT id FROM budget_alerts WHERE notify AND notified_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
      RETURNING id, tenant_id, entity_type, entity_id, agent_id, kind, period_start, data`,
    [limit],
  );
  for (const row of r.rows.sort((a, b) => a.id - b.id)) await notifier.send(budgetAlert(row));
  return r.rows.length;
}
