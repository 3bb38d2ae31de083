import type { Principal } from '../auth/index.js';
import type { Queryable } from '../db/index.js';
import { FabricError } from '../errors/index.js';
import type { SubmitHook } from '../queue/index.js';
import type { CheckResult, PolicyEngine } from './engine.js';

/** The 403 of a refused submit: `policy_violation` (deny) or `approval_required` (with the request to wait for). */
export function policyRefusal(action: string, resource: string, r: CheckResult): FabricError {
  const details = { action, resource, decision: r.decision, policy_id: r.policy_id, rule: r.rule, reason: r.reason, ...(r.approval ? { approval_id: r.approval.id } : {}) };
  if (r.decision === 'require_approval') {
    const how = r.approval
      ? `Approval request ${r.approval.id} is open for its approvers; submit again once it is approved (GET /api/approvals/${r.approval.id}).`
      : 'An approval request was opened for its approvers (GET /api/approvals?status=pending); submit again once it is approved.';
    return new FabricError(403, 'approval_required', `${action} ${resource} needs an approval: ${r.reason} ${how}`, details);
  }
  return new FabricError(403, 'policy_violation', `${action} ${resource} is refused by policy: ${r.reason} Ask an admin to change the policy (PUT /api/policies/${r.policy_id}) if this is wrong.`, details);
}

/**
 * `task.submit` at the queue's door: each task is checked as the action task.submit on its
 * type, for its agent, by the submitting caller. In `applies` (before any transaction) when the
 * scheduler asks — a refusal is thrown from there and nothing is written; it returns false, so
 * a submit the policies allow keeps its transaction-free path. In a caller's transaction (an
 * idempotent submit), the hook itself checks.
 */
export function policySubmitHook(engine: PolicyEngine): SubmitHook {
  // submits whose applies already checked them (the hook runs for them only because another hook applies)
  // (keyed by the request's principal object, matched on the tasks' agents and types)
  const checked = new WeakMap<Principal, readonly { agent_id: string; type: string }[]>();
  const same = (a: readonly { agent_id: string; type: string }[], b: readonly { agent_id: string; type: string }[]) =>
    a.length === b.length && a.every((x, i) => x.agent_id.toLowerCase() === b[i]!.agent_id.toLowerCase() && x.type === b[i]!.type);
  const checkAll = async (q: Queryable, actor: Principal, tasks: readonly { agent_id: string; type: string; priority?: string | undefined; id?: string }[], inTx: boolean) => {
    if (!(await engine.hasRulesFor(q, actor.tenantId, 'task.submit'))) return;
    for (const t of tasks) {
      const r = await engine.check(
        q,
        { tenantId: actor.tenantId, door: 'task.submit', actor, agentId: t.agent_id, taskId: t.id ?? null, action: 'task.submit', resource: t.type, context: { priority: t.priority ?? 'normal' } },
        { deferOpen: inTx },
      );
      if (r.decision !== 'allow') throw policyRefusal('task.submit', t.type, r);
    }
  };
  const hook: SubmitHook = Object.assign(
    async (tx: Parameters<SubmitHook>[0], actor: Principal, tasks: Parameters<SubmitHook>[2]) => {
      const before = checked.get(actor);
      checked.delete(actor);
      if (before && same(before, tasks)) return;
      await checkAll(tx, actor, tasks, true);
    },
    {
      applies: async (q: Queryable, actor: Principal, inputs: Parameters<NonNullable<SubmitHook['applies']>>[2]) => {
        await checkAll(q, actor, inputs, false);
        checked.set(actor, inputs);
        return false;
      },
    },
  );
  return hook;
}
