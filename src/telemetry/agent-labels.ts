import { telemetryAllowed, ZERO_TELEMETRY_LABEL } from './zero-telemetry.js';

/**
 * The one cap on agent_id label values, used by every metric that has an agent_id label: agent
 * ids are unbounded, and each value is a series Prometheus keeps. With labels off, every series
 * is agent_id="_all"; with them on, at most `maxAgents` agent ids get their own series and the
 * rest are folded into agent_id="_other".
 */
export interface AgentLabelOptions {
  /** Per-agent series at all (`FABRIC_METRICS_AGENT_LABELS` = on | off). Default on. */
  enabled: boolean;
  /** Most agent ids with their own series per metric (`FABRIC_METRICS_MAX_AGENT_LABELS`). Default 200. */
  maxAgents: number;
}

export const OTHER_AGENTS = '_other';
export const ALL_AGENTS = '_all';

let options: AgentLabelOptions = { enabled: true, maxAgents: 200 };
/** Agent ids counters have given a series of their own in this process, first come first served. */
const counted = new Set<string>();

/** Sets the cap (the server calls it once from config; tests change it). */
export function configureAgentLabels(next: Partial<AgentLabelOptions>): void {
  options = { ...options, ...next };
  counted.clear();
}

export function agentLabelOptions(): AgentLabelOptions {
  return options;
}

/**
 * The agent_id label value for a counter: the agent's id for the first `maxAgents` agents this
 * process counts, then "_other" (a counter cannot give its series back, so first come wins);
 * "_zero_telemetry" for every agent of a tenant in zero-telemetry mode.
 */
export function agentLabel(tenantId: string | null | undefined, agentId: string): string {
  if (!telemetryAllowed('agent_metrics', tenantId)) return ZERO_TELEMETRY_LABEL;
  if (!options.enabled) return ALL_AGENTS;
  if (counted.has(agentId)) return agentId;
  if (counted.size >= options.maxAgents) return OTHER_AGENTS;
  counted.add(agentId);
  return agentId;
}

export interface AgentSeries {
  agent_id: string;
  tenant_id: string;
  value: number;
}

/**
 * Caps the series of a gauge read from a table: the `maxAgents` agents with the highest values
 * keep their own series; the rest are folded per tenant into agent_id="_other" by `fold` (sum
 * for counts such as queue depth, max for percentages — a sum of percentages means nothing).
 */
export function capAgentSeries(rows: readonly AgentSeries[], fold: 'sum' | 'max'): AgentSeries[] {
  const combine = (a: number, b: number) => (fold === 'sum' ? a + b : Math.max(a, b));
  // agents of a tenant in zero-telemetry mode never get a series of their own
  const hidden = new Map<string, number>();
  const visible: AgentSeries[] = [];
  for (const r of rows) {
    if (telemetryAllowed('agent_metrics', r.tenant_id)) visible.push(r);
    else hidden.set(r.tenant_id, combine(hidden.get(r.tenant_id) ?? 0, r.value));
  }
  const sorted = visible.sort((a, b) => b.value - a.value);
  const kept = options.enabled ? sorted.slice(0, options.maxAgents) : [];
  const folded = new Map<string, number>();
  for (const r of options.enabled ? sorted.slice(options.maxAgents) : sorted) folded.set(r.tenant_id, combine(folded.get(r.tenant_id) ?? 0, r.value));
  const label = options.enabled ? OTHER_AGENTS : ALL_AGENTS;
  return [
    ...kept,
    ...[...folded].map(([tenant_id, value]) => ({ tenant_id, agent_id: label, value })),
    ...[...hidden].map(([tenant_id, value]) => ({ tenant_id, agent_id: ZERO_TELEMETRY_LABEL, value })),
  ];
}
