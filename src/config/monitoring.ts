import { z } from 'zod';

/** The alert rules (README "Alert rules"); names follow the monitoring table of isolation-runtime-prd §9. */
export const ALERT_RULE_NAMES = [
  'quota_tokens_pct',
  'queue_depth',
  'tasks_dead_lettered',
  'transactions_rollback_rate',
  'files_storage_pct',
  'memory_embed_latency_p99',
  'error_rate_anomaly',
] as const;
export type AlertRuleName = (typeof ALERT_RULE_NAMES)[number];

/** What FABRIC_ALERT_RULES may change about one rule; anything left out keeps its default. */
export interface AlertRuleOverride {
  enabled?: boolean | undefined;
  /** Fires when the value is above this (units per rule: %, tasks, seconds). */
  threshold?: number | undefined;
  severity?: 'info' | 'warning' | 'critical' | undefined;
  /** Rate rules: fewest events in the window before the rule judges at all. */
  min_events?: number | undefined;
  /** error_rate_anomaly: how many times its baseline the error rate must be. */
  factor?: number | undefined;
}

/** Alert evaluation (README "Alert rules"). */
export interface AlertsConfig {
  /** Seconds between evaluations in each process. `FABRIC_ALERT_EVAL_SECONDS`, default 30. */
  evalSeconds: number;
  /** The window rate rules look at. `FABRIC_ALERT_WINDOW_SECONDS`, default 300. */
  windowSeconds: number;
  /** The trailing baseline error_rate_anomaly compares with. `FABRIC_ALERT_BASELINE_SECONDS`, default 3600. */
  baselineSeconds: number;
  /** Per-rule overrides. `FABRIC_ALERT_RULES`: JSON, e.g. {"queue_depth": {"threshold": 50}, "files_storage_pct": {"enabled": false}}. */
  rules: Partial<Record<AlertRuleName, AlertRuleOverride>>;
}

/** Prometheus metrics (README "Metrics"). */
export interface MetricsConfig {
  /** Per-agent series at all. `FABRIC_METRICS_AGENT_LABELS` on | off, default on. */
  agentLabels: boolean;
  /** Most agent ids with their own series per metric; the rest are agent_id="_other". `FABRIC_METRICS_MAX_AGENT_LABELS`, default 200. */
  maxAgentLabels: number;
  /** How long gauges read from tables reuse one read. `FABRIC_METRICS_CACHE_MS`, default 5000. */
  cacheMs: number;
}

const Override = z
  .object({
    enabled: z.boolean().optional(),
    threshold: z.number().min(0).optional(),
    severity: z.enum(['info', 'warning', 'critical']).optional(),
    min_events: z.number().int().min(1).optional(),
    factor: z.number().min(1).optional(),
  })
  .strict();
const RulesJson = z.partialRecord(z.enum(ALERT_RULE_NAMES), Override);

function parseRules(raw: string, ctx: z.RefinementCtx): AlertsConfig['rules'] {
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: `not JSON (${(err as Error).message})` });
    return {};
  }
  const parsed = RulesJson.safeParse(json);
  if (!parsed.success) {
    for (const i of parsed.error.issues) ctx.addIssue({ code: 'custom', message: `${i.path.join('.') || '(top)'}: ${i.message} (rules: ${ALERT_RULE_NAMES.join(', ')})` });
    return {};
  }
  return parsed.data;
}

const int = (min: number) => z.coerce.number().int().min(min);

/** The environment variables of alerts and metrics (spread into the config schema). */
export const monitoringEnv = {
  FABRIC_ALERT_RULES: z
    .string()
    .default('{}')
    .transform((v, ctx) => parseRules(v, ctx)),
  FABRIC_ALERT_EVAL_SECONDS: int(1).max(3600).default(30),
  FABRIC_ALERT_WINDOW_SECONDS: int(10).max(86_400).default(300),
  FABRIC_ALERT_BASELINE_SECONDS: int(60).max(7 * 86_400).default(3600),
  FABRIC_METRICS_AGENT_LABELS: z.enum(['on', 'off']).default('on'),
  FABRIC_METRICS_MAX_AGENT_LABELS: int(1).max(100_000).default(200),
  FABRIC_METRICS_CACHE_MS: int(0).max(600_000).default(5000),
};

type MonitoringEnv = { [K in keyof typeof monitoringEnv]: z.output<(typeof monitoringEnv)[K]> };

export function alertsConfigFrom(e: MonitoringEnv): AlertsConfig {
  return { evalSeconds: e.FABRIC_ALERT_EVAL_SECONDS, windowSeconds: e.FABRIC_ALERT_WINDOW_SECONDS, baselineSeconds: e.FABRIC_ALERT_BASELINE_SECONDS, rules: e.FABRIC_ALERT_RULES };
}

export function metricsConfigFrom(e: MonitoringEnv): MetricsConfig {
  return { agentLabels: e.FABRIC_METRICS_AGENT_LABELS === 'on', maxAgentLabels: e.FABRIC_METRICS_MAX_AGENT_LABELS, cacheMs: e.FABRIC_METRICS_CACHE_MS };
}
