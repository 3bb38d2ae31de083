import { z } from 'zod';

/** The actions the fabric's own doors ask about; agents may name others (e.g. `crm.update`) in /api/policy/check. */
export const DOOR_ACTIONS = ['model.use', 'net.connect', 'fs.write', 'shell.exec', 'tool.call', 'task.submit'] as const;

export const EFFECTS = ['allow', 'deny', 'require_approval'] as const;
export const Effect = z.enum(EFFECTS);
export type Effect = z.infer<typeof Effect>;

export const SCOPE_TYPES = ['tenant', 'workspace', 'role', 'agent'] as const;
export const ScopeType = z.enum(SCOPE_TYPES);
export type ScopeType = z.infer<typeof ScopeType>;

const Glob = z.string().min(1).max(500);
const Globs = z.union([Glob, z.array(Glob).min(1).max(200)]);
const Scalar = z.union([z.string().max(500), z.number(), z.boolean()]);
const HHMM = z.string().regex(/^([01]\d|2[0-3]):[0-5]\d$/, 'use HH:MM (24 h)');
const Day = z.enum(['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun']);

/** When a rule applies beyond its action: every condition given must hold. */
export const Conditions = z
  .object({
    resource: Globs.optional().describe('the resource matches one of these globs (* any run of characters, ? one character)'),
    resource_not: Globs.optional().describe('the resource matches none of these globs (an allow-list written as a deny)'),
    agent: z
      .object({
        id: Globs.optional(),
        name: Globs.optional(),
        workspace_id: Globs.optional(),
        model: Globs.optional(),
        status: Globs.optional(),
        isolation_level: Globs.optional(),
        owner_user_id: Globs.optional(),
        tool: Globs.optional().describe("one of the agent's tools matches"),
      })
      .strict()
      .optional()
      .describe("attributes of the agent the check is about (its AgentConfig)"),
    role: z.union([z.string(), z.array(z.string()).min(1)]).optional().describe("the caller's role (agent for an agent's own checks)"),
    context: z.record(z.string(), z.union([Scalar, z.array(Scalar).min(1).max(200)])).optional().describe('context fields equal to (strings: match a glob of) one of the values'),
    amount: z
      .object({ gt: z.number().optional(), gte: z.number().optional(), lt: z.number().optional(), lte: z.number().optional() })
      .strict()
      .optional()
      .describe('bounds on context.amount (a number); a check without one does not match'),
    time: z
      .object({ days: z.array(Day).min(1).optional(), from: HHMM.optional(), to: HHMM.optional(), tz: z.string().min(1).max(64).optional().describe('IANA zone, default UTC') })
      .strict()
      .optional()
      .describe('weekdays and a time window [from, to) in tz; to < from wraps past midnight'),
  })
  .strict();
export type Conditions = z.infer<typeof Conditions>;

export const Approvers = z
  .object({
    users: z.array(z.string().min(1).max(200)).max(100).default([]).describe('token subjects (user ids) who may decide'),
    roles: z.array(z.enum(['admin', 'operator', 'member', 'viewer', 'platform_admin'])).max(5).default([]).describe('roles whose holders may decide'),
  })
  .strict();
export type Approvers = z.infer<typeof Approvers>;

/** PolicyRule of agent-fabric.md, plus an optional rule priority, a reason, and who approves. */
export const PolicyRule = z
  .object({
    action_pattern: Glob.describe('glob over action names, e.g. tool.call, fs.*, *'),
    effect: Effect,
    conditions: Conditions.default({}),
    priority: z.number().int().min(-1_000_000).max(1_000_000).optional().describe("orders rules within a scope; default the policy's priority"),
    reason: z.string().max(1000).optional().describe('said to the caller when this rule decides'),
    approvers: Approvers.optional().describe('require_approval: who may decide (default: role admin)'),
    approval_expires_seconds: z.number().int().min(1).max(30 * 86_400).optional().describe('require_approval: how long a request waits before it is denied'),
  })
  .strict();
export type PolicyRule = z.infer<typeof PolicyRule>;

export const Scope = z
  .object({
    type: ScopeType,
    id: z.string().min(1).max(200).nullable().optional().describe('workspace id, role name or agent id; none for tenant, and none for an agent policy that agents list in their config `policies`'),
  })
  .strict();
export type Scope = z.infer<typeof Scope>;

export const CreatePolicyBody = z
  .object({
    name: z.string().min(1).max(200),
    description: z.string().max(2000).optional(),
    scope: Scope.default({ type: 'tenant' }),
    priority: z.number().int().min(-1_000_000).max(1_000_000).default(0),
    rules: z.array(PolicyRule).max(500),
    enabled: z.boolean().default(true),
  })
  .strict();
export type CreatePolicyBody = z.infer<typeof CreatePolicyBody>;

export const UpdatePolicyBody = z
  .object({
    name: z.string().min(1).max(200).optional(),
    description: z.string().max(2000).nullable().optional(),
    scope: Scope.optional(),
    priority: z.number().int().min(-1_000_000).max(1_000_000).optional(),
    rules: z.array(PolicyRule).max(500).optional(),
    enabled: z.boolean().optional(),
    version: z.number().int().min(1).optional().describe('the version you read; a newer one → 409 policy_version_conflict'),
  })
  .strict();
export type UpdatePolicyBody = z.infer<typeof UpdatePolicyBody>;

export const Policy = z.object({
  id: z.uuid(),
  tenant_id: z.string(),
  name: z.string(),
  description: z.string().nullable(),
  scope: z.object({ type: ScopeType, id: z.string().nullable() }),
  priority: z.number().int(),
  rules: z.array(PolicyRule),
  enabled: z.boolean(),
  version: z.number().int(),
  created_by: z.string(),
  updated_by: z.string(),
  created_at: z.string(),
  updated_at: z.string(),
});
export type Policy = z.infer<typeof Policy>;

export const CheckBody = z
  .object({
    action: z.string().min(1).max(200),
    resource: z.string().max(4000).default(''),
    context: z.record(z.string(), z.unknown()).default({}),
    agent_id: z.uuid().optional().describe('people only: the agent to check for (an agent always checks for itself)'),
    task_id: z.uuid().optional().describe('the task the action is part of (recorded with the decision and any approval)'),
    dry_run: z.boolean().default(false).describe('evaluate and log only: no approval is requested or used'),
  })
  .strict();
export type CheckBody = z.infer<typeof CheckBody>;

export const DECISIONS = EFFECTS;
export type Decision = Effect;
