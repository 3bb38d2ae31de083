import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { compilePolicy, evaluate, normalizeResource, sortPolicies, type AgentAttrs, type PolicyRecord, type PolicyRule } from '../src/policy/index.js';
import { ENGINE } from './support/engine.js';

const WS = '11111111-1111-4111-8111-111111111111';
const OTHER_WS = '22222222-2222-4222-8222-222222222222';
const AGENT = '33333333-3333-4333-8333-333333333333';
const OTHER_AGENT = '44444444-4444-4444-8444-444444444444';

const agent: AgentAttrs = { id: AGENT, name: 'lead-bot', workspace_id: WS, model: 'gpt-4o-mini', status: 'active', isolation_level: 'container', owner_user_id: null, tools: ['search', 'crm.update'], policies: ['listed-policy'] };

type Scope = Pick<PolicyRecord, 'scope_type' | 'scope_id'>;
const T: Scope = { scope_type: 'tenant', scope_id: null };
const W: Scope = { scope_type: 'workspace', scope_id: WS };
const W2: Scope = { scope_type: 'workspace', scope_id: OTHER_WS };
const R: Scope = { scope_type: 'role', scope_id: 'agent' };
const ROP: Scope = { scope_type: 'role', scope_id: 'operator' };
const A: Scope = { scope_type: 'agent', scope_id: AGENT };
const A2: Scope = { scope_type: 'agent', scope_id: OTHER_AGENT };
const LISTED: Scope = { scope_type: 'agent', scope_id: null };

interface P {
  scope: Scope;
  rules: PolicyRule[];
  priority?: number;
  enabled?: boolean;
  name?: string;
}
const rule = (action_pattern: string, effect: PolicyRule['effect'], conditions: PolicyRule['conditions'] = {}, priority?: number): PolicyRule => ({ action_pattern, effect, conditions, ...(priority === undefined ? {} : { priority }) });

interface Case {
  name: string;
  policies: P[];
  action: string;
  resource?: string;
  context?: Record<string, unknown>;
  role?: string;
  now?: string;
  noAgent?: boolean;
  want: 'allow' | 'deny' | 'require_approval';
  /** which policy (index) and rule decided; null: none (default allow) */
  by?: [number, number] | null;
}

const cases: Case[] = [
  // defaults and action globs
  { name: 'no policies: allow by default', policies: [], action: 'tool.call', want: 'allow', by: null },
  { name: 'rules for other actions: allow by default', policies: [{ scope: T, rules: [rule('fs.write', 'deny')] }], action: 'tool.call', want: 'allow', by: null },
  { name: 'exact action deny', policies: [{ scope: T, rules: [rule('tool.call', 'deny')] }], action: 'tool.call', want: 'deny', by: [0, 0] },
  { name: 'glob action deny (tool.*)', policies: [{ scope: T, rules: [rule('tool.*', 'deny')] }], action: 'tool.call', want: 'deny', by: [0, 0] },
  { name: 'glob * matches every action', policies: [{ scope: T, rules: [rule('*', 'require_approval')] }], action: 'shell.exec', want: 'require_approval', by: [0, 0] },
  { name: 'glob ? matches one character', policies: [{ scope: T, rules: [rule('fs.writ?', 'deny')] }], action: 'fs.write', want: 'deny', by: [0, 0] },
  { name: 'glob does not match a prefix only', policies: [{ scope: T, rules: [rule('tool', 'deny')] }], action: 'tool.call', want: 'allow', by: null },
  { name: 'disabled policy takes no part', policies: [{ scope: T, rules: [rule('*', 'deny')], enabled: false }], action: 'tool.call', want: 'allow', by: null },
  // within one scope
  { name: 'same scope, same priority: deny beats allow', policies: [{ scope: T, rules: [rule('tool.call', 'allow'), rule('tool.call', 'deny')] }], action: 'tool.call', want: 'deny', by: [0, 1] },
  { name: 'same scope, same priority: require_approval beats allow', policies: [{ scope: T, rules: [rule('tool.call', 'allow'), rule('tool.call', 'require_approval')] }], action: 'tool.call', want: 'require_approval', by: [0, 1] },
  { name: 'same scope: higher rule priority wins over stricter effect', policies: [{ scope: T, rules: [rule('fs.write', 'allow', { resource: '/workspace/*' }, 10), rule('fs.write', 'deny')] }], action: 'fs.write', resource: '/workspace/out/a.txt', want: 'allow', by: [0, 0] },
  { name: 'allow-list in one scope: outside the list is denied', policies: [{ scope: T, rules: [rule('fs.write', 'allow', { resource: '/workspace/*' }, 10), rule('fs.write', 'deny')] }], action: 'fs.write', resource: '/etc/passwd', want: 'deny', by: [0, 1] },
  { name: 'path normalisation: .. cannot escape an allow-list', policies: [{ scope: T, rules: [rule('fs.write', 'allow', { resource: '/workspace/*' }, 10), rule('fs.write', 'deny')] }], action: 'fs.write', resource: '/workspace/../etc/passwd', want: 'deny', by: [0, 1] },
  { name: 'same scope: higher policy priority wins', policies: [{ scope: T, priority: 1, rules: [rule('tool.call', 'deny')] }, { scope: T, priority: 5, rules: [rule('tool.call', 'allow')] }], action: 'tool.call', want: 'allow', by: [1, 0] },
  { name: 'same scope, tie on everything: the stricter of two policies', policies: [{ scope: T, rules: [rule('tool.call', 'allow')] }, { scope: T, rules: [rule('tool.call', 'require_approval')] }], action: 'tool.call', want: 'require_approval', by: [1, 0] },
  // across scopes: deny is final
  { name: 'tenant deny cannot be overridden by agent allow', policies: [{ scope: T, rules: [rule('model.use', 'deny', { resource: 'gpt-4*' })] }, { scope: A, rules: [rule('model.use', 'allow', {}, 1000)] }], action: 'model.use', resource: 'gpt-4o', want: 'deny', by: [0, 0] },
  { name: 'tenant deny cannot be overridden by workspace allow', policies: [{ scope: T, rules: [rule('shell.exec', 'deny', { resource: 'rm *' })] }, { scope: W, rules: [rule('shell.exec', 'allow')] }], action: 'shell.exec', resource: 'rm -rf /', want: 'deny', by: [0, 0] },
  { name: 'workspace deny cannot be overridden by agent allow', policies: [{ scope: W, rules: [rule('net.connect', 'deny', { resource: '*.evil.com' })] }, { scope: A, rules: [rule('net.connect', 'allow')] }], action: 'net.connect', resource: 'x.evil.com', want: 'deny', by: [0, 0] },
  { name: 'role deny cannot be overridden by agent allow', policies: [{ scope: R, rules: [rule('tool.call', 'deny', { resource: 'deploy' })] }, { scope: A, rules: [rule('tool.call', 'allow')] }], action: 'tool.call', resource: 'deploy', want: 'deny', by: [0, 0] },
  { name: 'two denies: the least specific one is reported', policies: [{ scope: A, rules: [rule('tool.call', 'deny')] }, { scope: T, rules: [rule('tool.call', 'deny')] }], action: 'tool.call', want: 'deny', by: [1, 0] },
  { name: 'agent deny refines tenant allow', policies: [{ scope: T, rules: [rule('model.use', 'allow')] }, { scope: A, rules: [rule('model.use', 'deny', { resource: 'o1*' })] }], action: 'model.use', resource: 'o1-preview', want: 'deny', by: [1, 0] },
  { name: 'tenant low-priority default deny still beats a workspace allow', policies: [{ scope: T, priority: -100, rules: [rule('net.connect', 'deny')] }, { scope: W, rules: [rule('net.connect', 'allow', { resource: 'api.example.com' })] }], action: 'net.connect', resource: 'api.example.com', want: 'deny', by: [0, 0] },
  // across scopes: the most specific decides otherwise
  { name: 'agent allow relaxes tenant require_approval', policies: [{ scope: T, rules: [rule('tool.call', 'require_approval')] }, { scope: A, rules: [rule('tool.call', 'allow', { resource: 'search' })] }], action: 'tool.call', resource: 'search', want: 'allow', by: [1, 0] },
  { name: 'agent require_approval tightens workspace allow', policies: [{ scope: W, rules: [rule('tool.call', 'allow')] }, { scope: A, rules: [rule('tool.call', 'require_approval')] }], action: 'tool.call', want: 'require_approval', by: [1, 0] },
  { name: 'workspace allow relaxes tenant require_approval', policies: [{ scope: T, rules: [rule('task.submit', 'require_approval')] }, { scope: W, rules: [rule('task.submit', 'allow')] }], action: 'task.submit', want: 'allow', by: [1, 0] },
  { name: 'role require_approval refines workspace allow', policies: [{ scope: W, rules: [rule('tool.call', 'allow')] }, { scope: R, rules: [rule('tool.call', 'require_approval')] }], action: 'tool.call', want: 'require_approval', by: [1, 0] },
  { name: 'agent scope is more specific than role scope', policies: [{ scope: R, rules: [rule('tool.call', 'require_approval')] }, { scope: A, rules: [rule('tool.call', 'allow')] }], action: 'tool.call', want: 'allow', by: [1, 0] },
  { name: 'priority does not cross scopes: a high-priority tenant allow loses to an agent approval', policies: [{ scope: T, priority: 1000, rules: [rule('tool.call', 'allow')] }, { scope: A, priority: -5, rules: [rule('tool.call', 'require_approval')] }], action: 'tool.call', want: 'require_approval', by: [1, 0] },
  { name: 'a more specific scope without a matching rule leaves the decision above', policies: [{ scope: T, rules: [rule('tool.call', 'require_approval')] }, { scope: A, rules: [rule('fs.write', 'allow')] }], action: 'tool.call', want: 'require_approval', by: [0, 0] },
  // which policies apply
  { name: "another workspace's policy does not apply", policies: [{ scope: W2, rules: [rule('*', 'deny')] }], action: 'tool.call', want: 'allow', by: null },
  { name: "another agent's policy does not apply", policies: [{ scope: A2, rules: [rule('*', 'deny')] }], action: 'tool.call', want: 'allow', by: null },
  { name: "another role's policy does not apply", policies: [{ scope: ROP, rules: [rule('*', 'deny')] }], action: 'tool.call', want: 'allow', by: null },
  { name: "the caller's role policy applies (operator submitting)", policies: [{ scope: ROP, rules: [rule('task.submit', 'deny')] }], action: 'task.submit', role: 'operator', want: 'deny', by: [0, 0] },
  { name: 'an agent policy listed in the agent config applies at agent scope', policies: [{ scope: T, rules: [rule('tool.call', 'require_approval')] }, { scope: LISTED, name: 'listed-policy', rules: [rule('tool.call', 'allow')] }], action: 'tool.call', want: 'allow', by: [1, 0] },
  { name: 'an unlisted agent policy does not apply', policies: [{ scope: LISTED, name: 'not-listed', rules: [rule('*', 'deny')] }], action: 'tool.call', want: 'allow', by: null },
  { name: 'workspace and agent policies do not apply without an agent', noAgent: true, policies: [{ scope: W, rules: [rule('*', 'deny')] }, { scope: A, rules: [rule('*', 'deny')] }], action: 'task.submit', want: 'allow', by: null },
  // conditions
  { name: 'resource list: any glob matches', policies: [{ scope: T, rules: [rule('shell.exec', 'deny', { resource: ['rm *', 'curl *'] })] }], action: 'shell.exec', resource: 'curl http://x', want: 'deny', by: [0, 0] },
  { name: 'shell command whitespace is normalised', policies: [{ scope: T, rules: [rule('shell.exec', 'deny', { resource: 'rm -rf *' })] }], action: 'shell.exec', resource: '  rm   -rf   /tmp ', want: 'deny', by: [0, 0] },
  { name: 'resource_not: a URL allow-list written as one deny', policies: [{ scope: T, rules: [rule('net.connect', 'deny', { resource_not: ['api.openai.com', '*.github.com'] })] }], action: 'net.connect', resource: 'API.GitHub.com.', want: 'allow', by: null },
  { name: 'resource_not: a host off the list is denied', policies: [{ scope: T, rules: [rule('net.connect', 'deny', { resource_not: ['api.openai.com', '*.github.com'] })] }], action: 'net.connect', resource: 'pastebin.com', want: 'deny', by: [0, 0] },
  { name: 'agent attribute condition (model glob)', policies: [{ scope: T, rules: [rule('*', 'deny', { agent: { model: 'gpt-4o*' } })] }], action: 'tool.call', want: 'deny', by: [0, 0] },
  { name: 'agent attribute condition (tool) does not hold', policies: [{ scope: T, rules: [rule('*', 'deny', { agent: { tool: 'shell' } })] }], action: 'tool.call', want: 'allow', by: null },
  { name: 'agent attribute condition (isolation level) holds', policies: [{ scope: T, rules: [rule('net.connect', 'deny', { agent: { isolation_level: 'process' } }), rule('net.connect', 'require_approval', { agent: { isolation_level: 'container' } })] }], action: 'net.connect', resource: 'a.com', want: 'require_approval', by: [0, 1] },
  { name: 'amount above a threshold needs approval', policies: [{ scope: T, rules: [rule('tool.call', 'require_approval', { resource: 'payments.*', amount: { gt: 100 } })] }], action: 'tool.call', resource: 'payments.refund', context: { amount: 250 }, want: 'require_approval', by: [0, 0] },
  { name: 'amount below the threshold passes', policies: [{ scope: T, rules: [rule('tool.call', 'require_approval', { resource: 'payments.*', amount: { gt: 100 } })] }], action: 'tool.call', resource: 'payments.refund', context: { amount: 20 }, want: 'allow', by: null },
  { name: 'amount condition without an amount does not match', policies: [{ scope: T, rules: [rule('tool.call', 'deny', { amount: { gte: 0 } })] }], action: 'tool.call', want: 'allow', by: null },
  { name: 'context condition (equality, glob)', policies: [{ scope: T, rules: [rule('tool.call', 'deny', { context: { env: 'prod*' } })] }], action: 'tool.call', context: { env: 'production' }, want: 'deny', by: [0, 0] },
  { name: 'context condition with numbers', policies: [{ scope: T, rules: [rule('net.connect', 'deny', { context: { port: [22, 3389] } })] }], action: 'net.connect', resource: 'a.com', context: { port: 22 }, want: 'deny', by: [0, 0] },
  { name: 'time window: inside office hours allows', policies: [{ scope: T, rules: [rule('task.submit', 'allow', { time: { days: ['mon', 'tue', 'wed', 'thu', 'fri'], from: '09:00', to: '17:00' } }, 1), rule('task.submit', 'require_approval')] }], action: 'task.submit', now: '2026-03-04T10:00:00Z', want: 'allow', by: [0, 0] },
  { name: 'time window: at night needs approval', policies: [{ scope: T, rules: [rule('task.submit', 'allow', { time: { days: ['mon', 'tue', 'wed', 'thu', 'fri'], from: '09:00', to: '17:00' } }, 1), rule('task.submit', 'require_approval')] }], action: 'task.submit', now: '2026-03-04T22:00:00Z', want: 'require_approval', by: [0, 1] },
  { name: 'time window in a time zone, wrapping midnight', policies: [{ scope: T, rules: [rule('*', 'deny', { time: { from: '22:00', to: '06:00', tz: 'Asia/Tokyo' } })] }], action: 'tool.call', now: '2026-03-04T14:00:00Z', want: 'deny', by: [0, 0] },
  { name: 'role condition on a tenant rule', policies: [{ scope: T, rules: [rule('task.submit', 'deny', { role: ['viewer', 'member'] })] }], action: 'task.submit', role: 'member', want: 'deny', by: [0, 0] },
];

describe(`policy precedence and inheritance, table-driven (${ENGINE})`, () => {
  it(`has at least 40 cases (${cases.length})`, () => assert.ok(cases.length >= 40));
  for (const c of cases) {
    it(c.name, () => {
      const compiled = sortPolicies(
        c.policies.map((p, i) => {
          const record = { id: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`, name: p.name ?? `p${i}`, ...p.scope, priority: p.priority ?? 0, version: 1, enabled: p.enabled ?? true, rules: p.rules, created_at: `2026-01-01T00:00:0${i}Z` };
          return { ...compilePolicy(record), record };
        }),
      );
      const resource = normalizeResource(c.action, c.resource ?? '');
      const v = evaluate(compiled, { action: c.action, resource, context: c.context ?? {}, agent: c.noAgent ? undefined : agent, role: c.role ?? 'agent', now: new Date(c.now ?? '2026-03-04T12:00:00Z') });
      assert.equal(v.decision, c.want, v.reason);
      if (c.by === null) assert.equal(v.rule, undefined, 'no rule decided');
      else if (c.by) {
        assert.equal(v.rule?.policyName, c.policies[c.by[0]]!.name ?? `p${c.by[0]}`, v.reason);
        assert.equal(v.rule?.index, c.by[1], v.reason);
      }
      assert.ok(v.reason.length > 10);
    });
  }
});
