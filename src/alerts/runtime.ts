import { randomUUID } from 'node:crypto';
import type { AlertsConfig } from '../config/index.js';
import type { Db, Queryable } from '../db/index.js';
import type { Notifier } from '../notify/index.js';
import { CounterWindows, logger, sumCounts, type WindowStats } from '../telemetry/index.js';
import { trackRollbackRate } from './gauges.js';
import { firingMessage, resolvedMessage, summarize } from './messages.js';
import { findBreaches, resolveRules, type AlertRule, type FleetCounts } from './rules.js';
import { readTableSignals } from './signals.js';
import { fireAlert, heldAlerts, keyOf, releaseAlert, touchAlerts, type AlertRow } from './store.js';

export interface AlertRuntimeOptions {
  db: Db;
  notifier: Notifier;
  config: AlertsConfig;
  /** Names this process's row of alert_process_stats. Default a random UUID. */
  processId?: string;
  /** Evaluate on a timer (default true); tests call tick() instead. */
  schedule?: boolean;
}

/** What one evaluation did. */
export interface Evaluation {
  fired: AlertRow[];
  resolved: AlertRow[];
}

export interface AlertRuntime {
  /** One evaluation now (the timer calls it every FABRIC_ALERT_EVAL_SECONDS). */
  tick(): Promise<Evaluation>;
  stop(): Promise<void>;
}

/** Publishes this process's window counts and reads the fleet's (every process that reported lately). */
async function exchangeStats(q: Queryable, processId: string, mine: WindowStats, freshSeconds: number): Promise<FleetCounts> {
  await q.query(
    `INSERT INTO alert_process_stats (process_id, stats) VALUES ($1, $2)
     ON CONFLICT (process_id) DO UPDATE SET stats = excluded.stats, updated_at = now()`,
    [processId, JSON.stringify(mine)],
  );
  // a process that stopped reporting an hour ago is gone; its row only costs reads
  await q.query(`DELETE FROM alert_process_stats WHERE updated_at < now() - interval '1 hour'`);
  const r = await q.query<{ stats: WindowStats }>(`SELECT stats FROM alert_process_stats WHERE updated_at > now() - make_interval(secs => $1)`, [freshSeconds]);
  const all = r.rows.map((x) => (typeof x.stats === 'string' ? (JSON.parse(x.stats) as WindowStats) : x.stats));
  return { window: sumCounts(all.map((s) => s.window)), baseline: sumCounts(all.map((s) => s.baseline)) };
}

/** Sends a notification; a failing notifier must not stop the evaluation. */
async function safeSend(notifier: Notifier, message: Parameters<Notifier['send']>[0]): Promise<void> {
  await notifier.send(message).catch((err: unknown) => logger().warn({ err }, 'alert notification failed'));
}

/**
 * Fires, refreshes and resolves alerts for the breaches found now. Safe in every process at
 * once: a firing is an INSERT … ON CONFLICT DO NOTHING on the held-row index and a resolution
 * an UPDATE … WHERE held, so exactly one process gets each row back and notifies.
 */
export async function applyBreaches(db: Queryable, notifier: Notifier, rules: readonly AlertRule[], breaches: ReturnType<typeof findBreaches>): Promise<Evaluation> {
  const byName = new Map(rules.map((r) => [r.name, r]));
  const held = new Map((await heldAlerts(db)).map((a) => [keyOf(a), a]));
  const result: Evaluation = { fired: [], resolved: [] };
  const seen: { id: string; value: number }[] = [];
  const breached = new Set<string>();
  for (const b of breaches) {
    const key = keyOf({ rule: b.rule, tenantId: b.tenantId, subject: b.subject });
    breached.add(key);
    const existing = held.get(key);
    if (existing) {
      if (existing.state === 'firing') seen.push({ id: existing.id, value: b.value });
      continue;
    }
    const rule = byName.get(b.rule)!;
    const row = await fireAlert(db, rule, b, summarize(rule, b));
    if (!row) continue; // another process fired it first
    result.fired.push(row);
    logger().warn({ alert_id: row.id, rule: row.rule, subject: row.subject, value: row.value, threshold: row.threshold, tenant_id: row.tenant_id }, `alert firing: ${row.summary}`);
    await safeSend(notifier, firingMessage(row));
  }
  await touchAlerts(db, seen);
  for (const [key, a] of held) {
    if (breached.has(key)) continue;
    const row = await releaseAlert(db, a.id);
    if (!row || row.resolved_by) continue; // another process released it, or an operator had resolved it already
    result.resolved.push(row);
    logger().info({ alert_id: row.id, rule: row.rule, subject: row.subject, tenant_id: row.tenant_id }, `alert resolved: ${row.rule} for ${row.subject}`);
    await safeSend(notifier, resolvedMessage(row));
  }
  return result;
}

/**
 * The alert rules' in-process scheduler: every FABRIC_ALERT_EVAL_SECONDS it samples this
 * process's counters, exchanges window counts with the other processes through
 * alert_process_stats, reads the table signals and applies the breaches. Run it in every
 * process; the database keeps them from notifying twice.
 */
export function startAlertRuntime(o: AlertRuntimeOptions): AlertRuntime {
  const { config } = o;
  const rules = resolveRules(config.rules);
  const processId = o.processId ?? randomUUID();
  const windows = new CounterWindows(config.windowSeconds * 1000, config.baselineSeconds * 1000);
  trackRollbackRate(windows);
  // a process counts as alive while its last report is younger than three evaluations
  const freshSeconds = Math.max(10, config.evalSeconds * 3);
  let running: Promise<Evaluation> | undefined;
  const once = async (): Promise<Evaluation> => {
    await windows.sample();
    const fleet = await exchangeStats(o.db, processId, windows.stats(), freshSeconds);
    const signals = await readTableSignals(o.db);
    return applyBreaches(o.db, o.notifier, rules, findBreaches(rules, signals, fleet));
  };
  const tick = () => (running ??= once().finally(() => (running = undefined)));
  void windows.sample(); // the baseline starts now, not at the first evaluation
  const timer =
    o.schedule === false ? undefined : setInterval(() => void tick().catch((err: unknown) => logger().warn({ err }, 'alert evaluation failed')), config.evalSeconds * 1000);
  timer?.unref();
  return {
    tick,
    async stop() {
      if (timer) clearInterval(timer);
      await running?.catch(() => {});
      trackRollbackRate(undefined);
      await o.db.query(`DELETE FROM alert_process_stats WHERE process_id = $1`, [processId]).catch(() => {});
    },
  };
}
