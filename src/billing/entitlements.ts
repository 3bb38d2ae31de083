import type { Queryable } from '../db/index.js';
import { FabricError } from '../errors/index.js';
import type { PlanTerms } from './plans.js';
import { findSubscription, inactiveReason } from './subscriptions.js';
import { termsAt } from './terms.js';

/** Isolation levels that run in server-side sandboxes: they need `remote_execution`. */
export const REMOTE_ISOLATION = ['process', 'container'] as const;

export const ENTITLEMENT_INSUFFICIENT = 'ENTITLEMENT_INSUFFICIENT';

/** 403 ENTITLEMENT_INSUFFICIENT naming the entitlement and the plans that grant it (the upgrade path). */
async function insufficient(q: Queryable, terms: PlanTerms, entitlement: string, message: string, grantsSql: string, params: unknown[]): Promise<FabricError> {
  const r = await q.query<{ id: string }>(`SELECT id FROM billing_plans WHERE ${grantsSql} ORDER BY base_fee_micros, id`, params);
  const upgrade = r.rows.map((p) => p.id);
  return new FabricError(
    403,
    ENTITLEMENT_INSUFFICIENT,
    `${message} Plan "${terms.plan_id}" does not include it${upgrade.length ? `; plans that do: ${upgrade.join(', ')} (change with PATCH /api/subscription)` : ''}.`,
    { entitlement, plan_id: terms.plan_id, upgrade_plans: upgrade },
  );
}

/** 403 unless `maxConcurrency` is within the plan's `max_concurrency`. */
export async function checkConcurrency(q: Queryable, terms: PlanTerms | null, maxConcurrency: number, what: string): Promise<void> {
  const cap = terms?.entitlements.max_concurrency;
  if (!terms || cap === null || cap === undefined || maxConcurrency <= cap) return;
  throw await insufficient(
    q,
    terms,
    'max_concurrency',
    `${what} asks for max_concurrency ${maxConcurrency}, above the plan's cap of ${cap}; lower it to ${cap} or upgrade.`,
    `entitlements->'max_concurrency' = 'null'::jsonb OR (entitlements->>'max_concurrency')::int >= $1`,
    [maxConcurrency],
  );
}

interface TaskAgent {
  id: string;
  level: string;
  max_concurrency: number;
}

/**
 * What a submit must pass (inside the submit transaction): an active subscription (else
 * `403 subscription_inactive`), and the entitlements of its agents — `remote_execution` for
 * process/container isolation, `max_concurrency` within the cap (else `403 ENTITLEMENT_INSUFFICIENT`).
 * A tenant with no subscription and no default plan passes unrestricted.
 */
export async function checkSubmit(q: Queryable, tenantId: string, agentIds: readonly string[], now: Date, defaultPlan: string | undefined): Promise<void> {
  const sub = await findSubscription(q, tenantId);
  const reason = sub && inactiveReason(sub, now);
  if (reason) throw new FabricError(403, 'subscription_inactive', reason, { status: sub!.status });
  const terms = await termsAt(q, tenantId, now, defaultPlan);
  if (!terms) return;
  const r = await q.query<TaskAgent>(
    `SELECT id, config->'isolation'->>'level' AS level, max_concurrency FROM agents WHERE tenant_id = $1 AND id = ANY ($2::uuid[]) ORDER BY id`,
    [tenantId, [...new Set(agentIds)]],
  );
  for (const agent of r.rows) {
    if (!terms.entitlements.remote_execution && (REMOTE_ISOLATION as readonly string[]).includes(agent.level))
      throw await insufficient(
        q,
        terms,
        'remote_execution',
        `Agent ${agent.id} runs with isolation "${agent.level}" (a server sandbox), which needs the remote_execution entitlement; use isolation "none" or upgrade.`,
        `(entitlements->>'remote_execution')::boolean`,
        [],
      );
    await checkConcurrency(q, terms, agent.max_concurrency, `Agent ${agent.id}`);
  }
}

/** The entitlement check of provisioning or changing an agent (its max_concurrency). */
export async function checkAgentConcurrency(q: Queryable, tenantId: string, maxConcurrency: number, now: Date, defaultPlan: string | undefined): Promise<void> {
  await checkConcurrency(q, await termsAt(q, tenantId, now, defaultPlan), maxConcurrency, 'This agent');
}
