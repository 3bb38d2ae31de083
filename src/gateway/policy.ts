import type { Queryable } from '../db/index.js';
import { checkModelUse, type PolicyEngine } from '../policy/index.js';

/**
 * Which models an agent may call: its AgentConfig (`model` and the optional `models` list), then
 * the tenant's `model.use` policies (the policy engine's door, logged with door `gateway`). It
 * gets the caller (agent, task, tenant…) and the model, and says yes or why not.
 */
export interface ModelPolicySubject {
  tenantId: string;
  agentId: string;
  taskId: string;
  /** The agent's configured `model` and `models`. */
  configured: readonly string[];
}

export interface ModelPolicy {
  /** null: allowed; otherwise the sentence that says why not and what to do. */
  check(subject: ModelPolicySubject, model: string): string | null | Promise<string | null>;
  /** The subset of `models` the subject may use (GET /v1/models). */
  allowed(subject: ModelPolicySubject, models: readonly string[]): string[];
}

/** The allow-list of the agent's own config. */
export const agentConfigPolicy: ModelPolicy = {
  check(subject, model) {
    return subject.configured.includes(model)
      ? null
      : `Agent ${subject.agentId} may use ${subject.configured.join(', ')}, not ${model}; an operator can add it to the agent's models (PATCH /api/agents/:id {"models": [...]}).`;
  },
  allowed(subject, models) {
    return models.filter((m) => subject.configured.includes(m));
  },
};

/**
 * The agent's own allow-list first, then `model.use` through the policy engine: a deny or an
 * unapproved require_approval refuses the call (403 model_not_allowed with the policy's reason;
 * an approval request is opened, and once approved the next call passes once). GET /v1/models
 * lists the agent's configured models; a policy may still refuse one of them when it is called.
 */
export function policyEngineModelPolicy(engine: PolicyEngine, db: Queryable): ModelPolicy {
  return {
    async check(subject, model) {
      const own = agentConfigPolicy.check(subject, model);
      if (own) return own;
      const r = await checkModelUse(engine, db, { tenantId: subject.tenantId, agentId: subject.agentId, taskId: subject.taskId }, model);
      return r.allowed ? null : r.reason;
    },
    allowed: (subject, models) => agentConfigPolicy.allowed(subject, models),
  };
}
