import { ALERT_RULE_NAMES, type AlertRuleName, type AlertRuleOverride } from '../config/index.js';
import { EMBED_LATENCY_BUCKETS, histogramQuantile, type WindowCounts } from '../telemetry/index.js';
import type { TableSignals } from './signals.js';

export type Severity = 'info' | 'warning' | 'critical';

/** One rule with its effective settings (defaults, then FABRIC_ALERT_RULES). */
export interface AlertRule {
  name: AlertRuleName;
  enabled: boolean;
  threshold: number;
  severity: Severity;
  /** Rate rules: fewest events in the window before they judge at all. */
  minEvents: number;
  /** error_rate_anomaly: the window's error rate must be this many times its baseline. */
  factor: number;
  /** What the value means, in words, for messages. */
  describe(value: number, threshold: number): string;
}

const pct = (v: number) => `${Math.round(v * 100) / 100} %`;

/** The defaults: the monitoring table of isolation-runtime-prd §9 and FR-TEL-6. */
const DEFAULTS: Record<AlertRuleName, Omit<AlertRule, 'name' | 'enabled'>> = {
  quota_tokens_pct: { threshold: 80, severity: 'warning', minEvents: 1, factor: 1, describe: (v, t) => `has used ${pct(v)} of its monthly token limit (alert above ${t} %)` },
  queue_depth: { threshold: 75, severity: 'warning', minEvents: 1, factor: 1, describe: (v, t) => `has ${v} tasks waiting in its queue (alert above ${t})` },
  tasks_dead_lettered: { threshold: 0, severity: 'critical', minEvents: 1, factor: 1, describe: (v) => `has ${v} task(s) in the dead letters: list them with GET /api/dead-letters and re-drive with POST /api/tasks/:id/retry` },
  transactions_rollback_rate: { threshold: 1, severity: 'critical', minEvents: 100, factor: 1, describe: (v, t) => `rolled back ${pct(v)} of its database transactions over the alert window (alert above ${t} %); the log has each rollback with its stack` },
  files_storage_pct: { threshold: 90, severity: 'warning', minEvents: 1, factor: 1, describe: (v, t) => `keeps files filling ${pct(v)} of its storage limit (alert above ${t} %)` },
  memory_embed_latency_p99: { threshold: 0.5, severity: 'warning', minEvents: 20, factor: 1, describe: (v, t) => `waited ${Math.round(v * 1000)} ms at p99 for its embedding provider over the alert window (alert above ${t * 1000} ms): investigate the provider` },
  error_rate_anomaly: { threshold: 5, severity: 'critical', minEvents: 50, factor: 3, describe: (v, t) => `answered ${pct(v)} of requests and task attempts with an error over the alert window, above ${pct(t)} (its trailing baseline × factor, and at least the rule's threshold)` },
};

/** The rules in force: defaults overridden by FABRIC_ALERT_RULES. */
export function resolveRules(overrides: Partial<Record<AlertRuleName, AlertRuleOverride>> = {}): AlertRule[] {
  return ALERT_RULE_NAMES.map((name) => {
    const d = DEFAULTS[name];
    const o = overrides[name] ?? {};
    return { name, ...d, enabled: o.enabled ?? true, threshold: o.threshold ?? d.threshold, severity: o.severity ?? d.severity, minEvents: o.min_events ?? d.minEvents, factor: o.factor ?? d.factor };
  });
}

/** A rule's condition holding for one subject: an agent, a tenant, or the fleet. */
export interface Breach {
  rule: AlertRuleName;
  tenantId: string | null;
  subject: string;
  agentId: string | null;
  value: number;
  threshold: number;
}

/** The fleet's counters over the window and the baseline (summed over every process's report). */
export interface FleetCounts {
  window: WindowCounts;
  baseline: WindowCounts;
}

const FLEET = 'fleet';
const errorRate = (c: WindowCounts) => {
  const events = c.http_total + c.task_total;
  return { events, pct: events > 0 ? ((c.http_5xx + c.task_failed) * 100) / events : 0 };
};

/** Every breach of the enabled rules, from the table signals and the fleet's counters. */
export function findBreaches(rules: readonly AlertRule[], s: TableSignals, fleet: FleetCounts): Breach[] {
  const out: Breach[] = [];
  const over = (rule: AlertRule, tenantId: string | null, subject: string, agentId: string | null, value: number, threshold = rule.threshold) => {
    if (value > threshold) out.push({ rule: rule.name, tenantId, subject, agentId, value, threshold });
  };
  for (const rule of rules.filter((r) => r.enabled)) {
    switch (rule.name) {
      case 'quota_tokens_pct':
        for (const q of s.quotas) over(rule, q.tenant_id, q.agent_id, q.agent_id, q.tokens_pct);
        break;
      case 'files_storage_pct':
        for (const q of s.quotas) over(rule, q.tenant_id, q.agent_id, q.agent_id, q.storage_pct);
        break;
      case 'queue_depth':
        for (const q of s.queues) over(rule, q.tenant_id, q.agent_id, q.agent_id, q.depth);
        break;
      case 'tasks_dead_lettered':
        for (const d of s.deadLetters) over(rule, d.tenant_id, d.tenant_id, null, d.dead_lettered);
        break;
      case 'transactions_rollback_rate': {
        const w = fleet.window;
        const total = w.tx_commit + w.tx_rollback;
        if (total >= rule.minEvents) over(rule, null, FLEET, null, (w.tx_rollback * 100) / total);
        break;
      }
      case 'memory_embed_latency_p99': {
        const buckets = fleet.window.embed_buckets;
        if ((buckets[buckets.length - 1] ?? 0) >= rule.minEvents) over(rule, null, FLEET, null, histogramQuantile(0.99, EMBED_LATENCY_BUCKETS, buckets));
        break;
      }
      case 'error_rate_anomaly': {
        const now = errorRate(fleet.window);
        const before = errorRate(fleet.baseline);
        if (now.events >= rule.minEvents) over(rule, null, FLEET, null, now.pct, Math.max(rule.threshold, before.pct * rule.factor));
        break;
      }
    }
  }
  return out;
}
