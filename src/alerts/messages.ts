import type { Alert } from '../notify/index.js';
import type { AlertRule, Breach } from './rules.js';
import type { AlertRow } from './store.js';

const TITLES: Record<string, string> = {
  quota_tokens_pct: 'Token quota nearly used',
  queue_depth: 'Queue backing up',
  tasks_dead_lettered: 'Tasks in the dead letters',
  transactions_rollback_rate: 'Database rollback rate high',
  files_storage_pct: 'File storage nearly full',
  memory_embed_latency_p99: 'Embedding latency high',
  error_rate_anomaly: 'Error rate anomaly',
};

function who(a: { agent_id?: string | null; agentId?: string | null; tenant_id?: string | null; tenantId?: string | null; subject: string }): string {
  const agent = a.agent_id ?? a.agentId;
  if (agent) return `Agent ${agent}`;
  const tenant = a.tenant_id ?? a.tenantId;
  return tenant ? `Tenant ${tenant}` : 'The fleet';
}

/** The one-line summary stored with the alert and used as the message text. */
export function summarize(rule: AlertRule, b: Breach): string {
  return `${who(b)} ${rule.describe(b.value, b.threshold)}.`;
}

const round = (v: number) => Math.round(v * 1000) / 1000;

function base(row: AlertRow): Pick<Alert, 'tenantId' | 'agentId'> {
  return { ...(row.tenant_id ? { tenantId: row.tenant_id } : {}), ...(row.agent_id ? { agentId: row.agent_id } : {}) };
}

/** The notification of an alert that started firing. */
export function firingMessage(row: AlertRow): Alert {
  return {
    severity: row.severity,
    title: `${TITLES[row.rule] ?? row.rule} (firing)`,
    text: `${row.summary} Alert ${row.id}; resolve by hand with POST /api/alerts/${row.id}/resolve, or it resolves itself when the condition clears.`,
    ...base(row),
    fields: { alert_id: row.id, rule: row.rule, state: 'firing', value: round(row.value), threshold: round(row.threshold), subject: row.subject },
  };
}

/** The notification of an alert that resolved: its condition cleared, or an operator resolved it. */
export function resolvedMessage(row: AlertRow): Alert {
  const how = row.resolved_by ? `resolved by ${row.resolved_by}` : 'resolved: the condition cleared';
  return {
    severity: 'info',
    title: `${TITLES[row.rule] ?? row.rule} (resolved)`,
    text: `${who(row)}: alert ${row.id} (${row.rule}) ${how}. It had fired at ${row.fired_at.toISOString()}: ${row.summary}`,
    ...base(row),
    fields: { alert_id: row.id, rule: row.rule, state: 'resolved', last_value: round(row.value), threshold: round(row.threshold), subject: row.subject },
  };
}
