/**
 * Zero-telemetry mode (README "Zero-telemetry mode"; managed-execution-prd §14.16): a tenant
 * may turn off product telemetry — what the fabric records about how the tenant uses it — while
 * security and audit records are always kept. Every place that emits telemetry asks
 * `telemetryAllowed(kind, tenantId)`; this is the one list of what is which.
 */
export const TELEMETRY_KINDS = {
  /** Product telemetry: off for a tenant in zero-telemetry mode. */
  access_log: 'product', // the per-request access line of a request that succeeded (< 400)
  agent_metrics: 'product', // per-agent series: agent_fabric_tasks_total, _tokens_total, queue gauges (agent_id label)
  trace_export: 'product', // spans of the tenant's requests and tasks sent to an OTLP collector
  content_log: 'product', // log lines that carry what the tenant's agents did (task payload summaries, model names per call)
  /** Security and audit: always kept. */
  audit_log: 'security', // audit_log rows (hash-chained), incl. settings and kill-switch changes
  policy_decision: 'security', // policy_decisions rows and agent_fabric_policy_decisions_total
  egress_denial: 'security', // sandbox egress proxy refusals
  quota_refusal: 'security', // quota_exceeded, budget and rate-limit refusals, their ledger rows and alerts
  auth_failure: 'security', // access lines of refused requests (status ≥ 400): 401, 403, 429 …
  task_state: 'security', // system_events: the tenant's own task/session state its API and SSE stream serve — data, not telemetry
} as const;

export type TelemetryKind = keyof typeof TELEMETRY_KINDS;

/** Label value that replaces an agent id in metrics of a tenant in zero-telemetry mode. */
export const ZERO_TELEMETRY_LABEL = '_zero_telemetry';

// Normally one (the process's operator controls); a tenant is in the mode if any says so.
const lookups = new Set<(tenantId: string) => boolean>();

/** Installs a per-tenant zero-telemetry lookup (the operator controls do, at start); returns its remover. */
export function setZeroTelemetryLookup(fn: (tenantId: string) => boolean): () => void {
  lookups.add(fn);
  return () => void lookups.delete(fn);
}

/** Whether telemetry of `kind` may be emitted for `tenantId` (no tenant: always). */
export function telemetryAllowed(kind: TelemetryKind, tenantId: string | null | undefined): boolean {
  if (TELEMETRY_KINDS[kind] === 'security' || !tenantId) return true;
  for (const zero of lookups) if (zero(tenantId)) return false;
  return true;
}

/** The agent_id label for a per-agent metric: the id, or `_zero_telemetry` for a tenant in that mode. */
export function agentLabel(tenantId: string | null | undefined, agentId: string): string {
  return telemetryAllowed('agent_metrics', tenantId) ? agentId : ZERO_TELEMETRY_LABEL;
}
