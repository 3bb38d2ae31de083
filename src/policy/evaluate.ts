import type { CheckInput, CompiledPolicy, CompiledRule, PolicyRecord } from './compile.js';
import type { Effect } from './schemas.js';

/** Scopes from the least to the most specific. */
export const LEVELS = ['tenant', 'workspace', 'role', 'agent'] as const;
export type Level = (typeof LEVELS)[number];

/** What a check comes to: the decision, the rule that made it (none: no rule matched) and why. */
export interface Verdict {
  decision: Effect;
  rule: CompiledRule | undefined;
  level: Level | undefined;
  reason: string;
}

const STRICTNESS: Record<Effect, number> = { deny: 2, require_approval: 1, allow: 0 };

/** The scope level at which `p` applies to this check, or undefined when it does not apply. */
export function levelOf(p: PolicyRecord, input: CheckInput): number | undefined {
  const agent = input.agent;
  switch (p.scope_type) {
    case 'tenant':
      return 0;
    case 'workspace':
      return agent && p.scope_id !== null && p.scope_id.toLowerCase() === agent.workspace_id.toLowerCase() ? 1 : undefined;
    case 'role':
      return p.scope_id === input.role ? 2 : undefined;
    case 'agent':
      if (!agent) return undefined;
      if (p.scope_id !== null) return p.scope_id.toLowerCase() === agent.id.toLowerCase() ? 3 : undefined;
      return agent.policies.includes(p.id) || agent.policies.includes(p.name) ? 3 : undefined;
  }
}

/** Within one scope: the higher priority wins; at equal priority the stricter effect; then the earlier policy and rule. */
function better(a: CompiledRule, b: CompiledRule): boolean {
  if (a.priority !== b.priority) return a.priority > b.priority;
  return STRICTNESS[a.effect] > STRICTNESS[b.effect];
}

function describe(r: CompiledRule, level: Level): string {
  return `rule ${r.index} (${r.effect} ${r.rule.action_pattern}) of policy "${r.policyName}" at ${level} scope`;
}

/**
 * The precedence rules (README "Policies and approvals"):
 * 1. A policy applies at its scope's level: tenant < workspace (the agent's) < role (the
 *    caller's) < agent (named by id, or listing the policy in its config `policies`).
 * 2. Within a level, the matching rule with the highest priority wins (rule priority, else its
 *    policy's); at equal priority deny beats require_approval beats allow; then the earlier
 *    policy (higher policy priority, older) and the earlier rule.
 * 3. Across levels, a deny at any level is final: the least specific deny decides, and no more
 *    specific scope can override it.
 * 4. Otherwise the most specific level with a matching rule decides: it refines the levels
 *    above (an agent's allow relaxes a tenant's require_approval; its require_approval tightens
 *    a workspace's allow).
 * 5. No matching rule anywhere: allow (the fabric is open until a policy says otherwise).
 * Disabled policies take no part.
 */
export function evaluate(policies: readonly CompiledPolicy[], input: CheckInput): Verdict {
  const winners: (CompiledRule | undefined)[] = [undefined, undefined, undefined, undefined];
  for (const p of policies) {
    if (!p.record.enabled) continue;
    let level: number | undefined | null = null; // computed once per policy, only when a rule's action matches
    for (const r of p.rules) {
      if (!r.action(input.action)) continue;
      if (level === null) level = levelOf(p.record, input);
      if (level === undefined) break;
      if (!r.when(input)) continue;
      const w = winners[level];
      if (!w || better(r, w)) winners[level] = r;
    }
  }
  for (let l = 0; l < LEVELS.length; l++) {
    const w = winners[l];
    if (w?.effect === 'deny') {
      const level = LEVELS[l]!;
      const below = l < LEVELS.length - 1 ? '; an explicit deny here cannot be overridden by a more specific scope' : '';
      return { decision: 'deny', rule: w, level, reason: w.rule.reason ?? `Denied by ${describe(w, level)}${below}.` };
    }
  }
  for (let l = LEVELS.length - 1; l >= 0; l--) {
    const w = winners[l];
    if (!w) continue;
    const level = LEVELS[l]!;
    const verb = w.effect === 'allow' ? 'Allowed' : 'Needs approval under';
    return { decision: w.effect, rule: w, level, reason: w.rule.reason ?? `${verb} ${describe(w, level)}.` };
  }
  return { decision: 'allow', rule: undefined, level: undefined, reason: 'No policy rule matches; allowed by default.' };
}

/** Orders policies for evaluation: higher priority first, then older, then by id (ties between rules go to the earlier one). */
export function sortPolicies<T extends { record: PolicyRecord & { created_at?: string } }>(list: T[]): T[] {
  return list.sort((a, b) => b.record.priority - a.record.priority || (a.record.created_at ?? '').localeCompare(b.record.created_at ?? '') || a.record.id.localeCompare(b.record.id));
}
