import { z } from 'zod';
import { TenantId } from '../auth/index.js';
import { QuotaLimitsInput } from '../budget/index.js';

const Name = z
  .string()
  .min(1)
  .max(100)
  .regex(/^[A-Za-z0-9][A-Za-z0-9 ._-]*$/, 'use letters, digits, space, dot, underscore and dash; start with a letter or digit');

/** IsolationConfig of agent-fabric.md. */
export const IsolationConfig = z
  .object({
    level: z.enum(['none', 'process', 'container']).default('process'),
    memory_mb: z.number().int().min(16).max(65_536).default(512),
    cpu_cores: z.number().min(0.05).max(64).default(1),
    filesystem_root: z.string().min(1).max(1024).nullable().default(null),
    network_egress: z.array(z.string().min(1).max(255)).max(256).default([]),
  })
  .strict();

/** BudgetConfig of agent-fabric.md (per-day limits; null = no daily limit). */
export const BudgetConfig = z
  .object({
    max_tokens_per_day: z.number().int().min(0).nullable().default(null),
    max_compute_seconds_per_day: z.number().int().min(0).nullable().default(null),
    max_cost_per_day_usd: z.number().min(0).nullable().default(null),
    alert_threshold_percent: z.number().min(0).max(100).default(80),
  })
  .strict();

/** The same fields with no defaults and all optional: a PATCH changes only what it names. */
function patchOf<S extends z.ZodRawShape>(schema: z.ZodObject<S>) {
  const shape = Object.fromEntries(
    Object.entries(schema.shape).map(([k, f]) => [k, f instanceof z.ZodDefault ? (f.unwrap() as z.ZodType) : (f as z.ZodType)]),
  );
  return z.object(shape).partial().strict();
}
export const IsolationPatch = patchOf(IsolationConfig);
export const BudgetPatch = patchOf(BudgetConfig);

/** What the agent runs; the execution issue defines how each field is used. */
export const Entrypoint = z
  .object({
    command: z.array(z.string().min(1).max(4096)).min(1).max(64).optional(),
    code_dir: z.string().min(1).max(1024).optional(),
    handler: z.string().min(1).max(1024).optional(),
    runtime: z
      .string()
      .regex(/^[a-z][a-z0-9_.-]{0,31}$/, 'a runtime is a lower-case name such as node, python or java')
      .optional()
      .describe("picks the default task timeout from the fabric's timeout profiles (FABRIC_TIMEOUT_PROFILES)"),
  })
  .strict()
  .refine((e) => e.command !== undefined || e.handler !== undefined, 'an entrypoint needs a command or a handler');

const ToolName = z.string().min(1).max(200);
const PolicyId = z.string().min(1).max(200);

/** The fields of AgentConfig (model, tools, isolation, budget, policies) plus what it runs. */
const AgentFields = {
  name: Name,
  description: z.string().max(2000).nullable(),
  model: z.string().min(1).max(200),
  models: z.array(z.string().min(1).max(200)).max(64).describe('further models the agent may call through the model gateway (/v1); its `model` always may'),
  tools: z.array(ToolName).max(256),
  isolation: IsolationConfig,
  budget: BudgetConfig,
  policies: z.array(PolicyId).max(256),
  entrypoint: Entrypoint.nullable(),
  max_queue_depth: z.number().int().min(1).max(100_000),
  max_concurrency: z.number().int().min(1).max(10_000),
};

export const ProvisionAgentBody = z
  .object({
    name: AgentFields.name,
    description: AgentFields.description.optional(),
    workspace_id: z.uuid().optional().describe('defaults to the tenant\'s "default" workspace'),
    owner_user_id: z.uuid().optional().describe('the user whose budget this agent spends against'),
    model: AgentFields.model,
    models: AgentFields.models.optional(),
    tools: AgentFields.tools.default([]),
    isolation: IsolationConfig.default(IsolationConfig.parse({})),
    budget: BudgetConfig.default(BudgetConfig.parse({})),
    policies: AgentFields.policies.default([]),
    entrypoint: AgentFields.entrypoint.optional(),
    max_queue_depth: AgentFields.max_queue_depth.default(100),
    max_concurrency: AgentFields.max_concurrency.default(1),
    quota: QuotaLimitsInput.optional(),
  })
  .strict();
export type ProvisionAgentBody = z.infer<typeof ProvisionAgentBody>;

export const UpdateAgentBody = z
  .object({
    ...AgentFields,
    isolation: IsolationPatch.describe('only the fields sent change'),
    budget: BudgetPatch.describe('only the fields sent change'),
    status: z.enum(['active', 'paused']),
  })
  .partial()
  .strict()
  .refine((b) => Object.keys(b).length > 0, 'send at least one field to change');
export type UpdateAgentBody = z.infer<typeof UpdateAgentBody>;

export const Agent = z.object({
  id: z.uuid(),
  tenant_id: z.string(),
  workspace_id: z.uuid(),
  owner_user_id: z.uuid().nullable(),
  name: z.string(),
  description: z.string().nullable(),
  model: z.string(),
  models: z.array(z.string()).optional(),
  tools: z.array(z.string()),
  isolation: IsolationConfig,
  budget: BudgetConfig,
  policies: z.array(z.string()),
  entrypoint: z.record(z.string(), z.unknown()).nullable(),
  max_queue_depth: z.number().int(),
  max_concurrency: z.number().int(),
  status: z.enum(['active', 'paused', 'deleted']),
  created_at: z.string(),
  updated_at: z.string(),
  deleted_at: z.string().nullable(),
});
export type Agent = z.infer<typeof Agent>;

export const ListAgentsQuery = z
  .object({
    workspace_id: z.uuid().optional(),
    status: z.enum(['active', 'paused']).optional(),
    limit: z.coerce.number().int().min(1).max(500).default(100),
    cursor: z.string().max(200).optional(),
  })
  .strict();

export const Tenant = z.object({ id: z.string(), name: z.string(), created_at: z.string() });
export const CreateTenantBody = z.object({ id: TenantId, name: z.string().min(1).max(200) }).strict();

/** Who pays for a workspace's tasks (managed-execution-prd V2-FR-BIL-007): its organization, or the user of a personal workspace. */
export const BillingSubject = z.enum(['USER', 'ORG']);
const WorkspaceBillingSubject = BillingSubject.describe("who pays for the workspace's tasks; each task keeps the value it had at submission");
export const Workspace = z.object({ id: z.uuid(), tenant_id: z.string(), name: z.string(), billing_subject: BillingSubject, created_at: z.string() });
export const CreateWorkspaceBody = z.object({ name: Name, billing_subject: WorkspaceBillingSubject.default('ORG') }).strict();
export const UpdateWorkspaceBody = z.object({ billing_subject: WorkspaceBillingSubject }).strict();

export const UserRole = z.enum(['admin', 'operator', 'member', 'viewer']);
export const User = z.object({
  id: z.uuid(),
  tenant_id: z.string(),
  email: z.string(),
  name: z.string().nullable(),
  role: UserRole,
  created_at: z.string(),
});
export const CreateUserBody = z
  .object({ email: z.email().max(320), name: z.string().min(1).max(200).optional(), role: UserRole })
  .strict();
