import type { Principal } from '../auth/index.js';
import { systemClock, type Clock } from '../clock/index.js';
import { TenantFlagCache, type Queryable } from '../db/index.js';
import type { SubmitHook } from '../queue/index.js';
import { reserve } from './reserve.js';

export interface BudgetHookOptions {
  clock?: Clock;
  /** How long a task's reservation lives before the sweeper releases it. Default 24 h. */
  reservationTtlSeconds?: number;
  /** How long a process trusts "this tenant has no budgets" (budgets made elsewhere are seen this late). Default 5 s. */
  budgetsCacheMs?: number;
}

const BUDGETS_EXIST = 'SELECT EXISTS (SELECT 1 FROM budgets WHERE tenant_id = $1) AS has';

/** One cache per process, shared by the hook and the budget routes (which forget on change). */
export const tenantBudgets = new TenantFlagCache(BUDGETS_EXIST);

/**
 * The pre-execution check (FR-15) as an onSubmit hook: in the submit transaction, every task
 * with `estimated_tokens` reserves them against its agent's quota and every budget above it;
 * when the tenant has budgets, tasks without an estimate are checked too (refused once a
 * `block` limit is exhausted). A `block` entity past its limit → 429 quota_exceeded and the
 * whole submit rolls back; `alert_only` and `allow` accept and record the overage (alerts go
 * through the budget_alerts outbox). Submits it does not apply to keep their one-statement,
 * transaction-free path.
 */
export function budgetSubmitHook(options: BudgetHookOptions = {}): SubmitHook {
  const clock = options.clock ?? systemClock;
  const ttlMs = (options.reservationTtlSeconds ?? 86_400) * 1000;
  const cache = options.budgetsCacheMs === undefined ? tenantBudgets : new TenantFlagCache(BUDGETS_EXIST, options.budgetsCacheMs);
  // inside the submit transaction the check must use it (PGlite has one connection)
  const needed = async (q: Queryable, actor: Principal, inputs: readonly { estimated_tokens?: number | null }[]) =>
    inputs.some((t) => t.estimated_tokens !== undefined && t.estimated_tokens !== null) || (await cache.has(q, actor.tenantId));
  const hook: SubmitHook = async (tx, actor, tasks) => {
    if (!(await needed(tx, actor, tasks))) return;
    await reserve(
      tx,
      actor.tenantId,
      tasks
        .filter((t) => t.status !== 'failed') // failed at once on a failed dependency: it will never run
        .map((t) => ({ agentId: t.agent_id, taskId: t.id, key: `task:${t.id}`, tokens: t.estimated_tokens ?? 0 })),
      new Date(clock.now().getTime() + ttlMs),
    );
  };
  hook.applies = (q, actor, inputs) => needed(q, actor, inputs);
  return hook;
}
