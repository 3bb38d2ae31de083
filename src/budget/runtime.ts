import { systemClock, type Clock } from '../clock/index.js';
import type { Db } from '../db/index.js';
import type { Notifier } from '../notify/index.js';
import { logger } from '../telemetry/index.js';
import { dispatchBudgetAlerts } from './alerts.js';
import { refreshUsageRatios } from './metrics.js';
import { resetPeriods } from './periods.js';
import { sweepReservations } from './reserve.js';

/** NOTIFY channel of `fabric_budget_alerts` (migration 0010): alerts wait in the outbox. */
export const ALERTS_CHANNEL = 'fabric_budget_alerts';

export interface BudgetRuntimeOptions {
  db: Db;
  notifier: Notifier;
  clock?: Clock;
  /** How often periods are reset, expired reservations released, alerts delivered and gauges refreshed. Default 10 s. */
  sweepSeconds?: number;
}

export interface BudgetRuntime {
  /** One pass of all the chores (tests call it after moving their clock). */
  tick(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * The budgets' in-process scheduler (no pg_cron): period resets at the tenant's midnight,
 * the reservation sweeper, alert delivery (woken by NOTIFY as soon as one is due) and the
 * usage-ratio gauge. Safe in every process at once: each chore is a conditional UPDATE or
 * SKIP LOCKED.
 */
export async function startBudgetRuntime(o: BudgetRuntimeOptions): Promise<BudgetRuntime> {
  const clock = o.clock ?? systemClock;
  let gaugesSince = new Date(0);
  let running: Promise<void> | undefined;
  const dispatch = () => dispatchBudgetAlerts(o.db, o.notifier).catch((err: unknown) => logger().warn({ err }, 'budget alert delivery failed'));
  const once = async () => {
    const now = clock.now();
    const reset = await resetPeriods(o.db, now);
    if (reset.agents || reset.budgets) logger().info(reset, 'budget periods reset');
    const released = await sweepReservations(o.db, now);
    if (released) logger().info({ released }, 'budget reservations released by the sweeper');
    await dispatch();
    const since = new Date();
    await refreshUsageRatios(o.db, gaugesSince);
    gaugesSince = new Date(since.getTime() - 1000);
  };
  const tick = () => (running ??= once().finally(() => (running = undefined)));
  const unlisten = await o.db.listen(ALERTS_CHANNEL, () => void dispatch(), (live) => live && void dispatch());
  const timer = setInterval(() => void tick().catch((err: unknown) => logger().warn({ err }, 'budget sweep failed')), (o.sweepSeconds ?? 10) * 1000);
  timer.unref();
  return {
    tick,
    async stop() {
      clearInterval(timer);
      await running?.catch(() => {});
      await unlisten();
    },
  };
}
