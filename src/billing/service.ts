import { systemClock, type Clock } from '../clock/index.js';
import type { Principal } from '../auth/index.js';
import { TenantFlagCache, type Db, type Queryable, type Tx } from '../db/index.js';
import { logger } from '../telemetry/index.js';
import type { Notifier } from '../notify/index.js';
import type { SubmitHook, Task } from '../queue/index.js';
import { checkAgentConcurrency, checkSubmit } from './entitlements.js';
import { exportUsage, type ExportQuery } from './export.js';
import { deliverOverageNotices, detectOverage } from './overage.js';
import { usageReport, type UsageQuery, type UsageReport } from './report.js';

export interface BillingOptions {
  /** Every time decision (periods, cancellation ends, projections). Default: the system clock. */
  clock?: Clock;
  /** Where "overage started" notifications go. Without one they are only logged. */
  notifier?: Notifier;
  /** Plan of tenants that never subscribed (`FABRIC_BILLING_DEFAULT_PLAN`); unset = unmetered and unrestricted. */
  defaultPlan?: string | undefined;
}

/** Plans, subscriptions and billing as the rest of the fabric uses them, bound to a clock, a notifier and the default plan. */
export class BillingService {
  readonly clock: Clock;
  readonly defaultPlan: string | undefined;
  private readonly notifier: Notifier | undefined;

  constructor(options: BillingOptions) {
    this.clock = options.clock ?? systemClock;
    this.notifier = options.notifier;
    this.defaultPlan = options.defaultPlan;
  }

  /** Which tenants have a subscription (a tenant without one, and no default plan, is unrestricted). */
  private readonly subscribed = new TenantFlagCache('SELECT EXISTS (SELECT 1 FROM subscriptions WHERE tenant_id = $1) AS has');

  /**
   * The queue's onSubmit hook: refuses the whole submit with 403 subscription_inactive or
   * 403 ENTITLEMENT_INSUFFICIENT. (The billing subject is set by the database as the task
   * rows are written — migration 0011 — so it is there whoever inserts a task.) It applies only
   * when there is something to check — a default plan, or a tenant with a subscription (a new
   * subscription made by another process is seen within 5 s) — so other submits keep their
   * one-statement path.
   */
  readonly submitHook: SubmitHook = Object.assign(
    async (tx: Tx, actor: Principal, tasks: readonly Task[]) => {
      await checkSubmit(tx, actor.tenantId, tasks.map((t) => t.agent_id), this.clock.now(), this.defaultPlan);
    },
    { applies: (q: Queryable, actor: Principal) => this.defaultPlan !== undefined || this.subscribed.has(q, actor.tenantId) },
  );

  /** A subscription was created here: its checks apply from the next submit on. */
  subscriptionCreated(tenantId: string): void {
    this.subscribed.forget(tenantId);
  }

  /** Provisioning or changing an agent: its max_concurrency within the plan's cap. */
  checkAgent(q: Queryable, tenantId: string, maxConcurrency: number | undefined): Promise<void> {
    if (maxConcurrency === undefined) return Promise.resolve();
    return checkAgentConcurrency(q, tenantId, maxConcurrency, this.clock.now(), this.defaultPlan);
  }

  report(q: Queryable, tenantId: string, query: UsageQuery): Promise<UsageReport> {
    return usageReport(q, { ...query, tenantId, now: this.clock.now(), defaultPlan: this.defaultPlan });
  }

  export(q: Queryable, tenantId: string, query: ExportQuery) {
    return exportUsage(q, tenantId, query, this.clock.now(), this.defaultPlan);
  }

  /**
   * Notices overage that started (in `tenantId`, or every subscribed tenant — every tenant when
   * a default plan is set) and notifies each once per period and dimension. Run by a sweeper
   * every FABRIC_BILLING_OVERAGE_CHECK_SECONDS; usage writers may call it after a commit for
   * an immediate notice.
   */
  async checkOverage(db: Db, tenantId?: string): Promise<number> {
    const tenants = tenantId
      ? [tenantId]
      : (
          await db.query<{ id: string }>(
            this.defaultPlan ? 'SELECT id FROM tenants WHERE deleted_at IS NULL ORDER BY id' : 'SELECT tenant_id AS id FROM subscriptions ORDER BY tenant_id',
          )
        ).rows.map((r) => r.id);
    let created = 0;
    for (const t of tenants) created += await detectOverage(db, t, this.clock.now(), this.defaultPlan);
    if (this.notifier) await deliverOverageNotices(db, this.notifier);
    else if (created) logger().warn({ created }, 'overage started (no notifier configured)');
    return created;
  }
}
