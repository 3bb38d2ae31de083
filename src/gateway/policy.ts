/**
 * Which models an agent may call. Today: its AgentConfig — `model` and the optional `models`
 * list. The policy engine replaces this with `model.use` checks behind the same interface: it
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
  check(subject: ModelPolicySubject, model: string): string | null;
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
