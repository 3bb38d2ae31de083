import type { Queryable } from '../db/index.js';
import type { CheckResult, PolicyEngine } from './engine.js';

/** The caller of a model call, as the gateway knows it. */
export interface ModelUseSubject {
  tenantId: string;
  agentId: string;
  taskId?: string | null | undefined;
  /** The token's role (agent for session and agent tokens). */
  role?: string | undefined;
}

/**
 * The gateway's door: may this agent use `model`? `model.use` on the model name, logged with
 * door `gateway`. `allowed: false` carries the sentence for the 403 (OpenAI error shape at the
 * gateway); require_approval opens (or finds) an approval request, and once approved the next
 * call passes once.
 */
export async function checkModelUse(engine: PolicyEngine, q: Queryable, s: ModelUseSubject, model: string): Promise<{ allowed: boolean; reason: string; result: CheckResult }> {
  const result = await engine.check(q, {
    tenantId: s.tenantId,
    door: 'gateway',
    actor: { sub: s.agentId, role: s.role ?? 'agent' },
    agentId: s.agentId,
    taskId: s.taskId ?? null,
    action: 'model.use',
    resource: model,
  });
  if (result.decision === 'allow') return { allowed: true, reason: result.reason, result };
  const how =
    result.decision === 'require_approval' && result.approval
      ? ` Approval request ${result.approval.id} is open; call again once it is approved (GET /api/approvals/${result.approval.id}).`
      : result.policy_id
        ? ` An admin can change policy ${result.policy_id} (PUT /api/policies/${result.policy_id}).`
        : '';
  return { allowed: false, reason: `model.use ${model} is refused by policy: ${result.reason}${how}`, result };
}
