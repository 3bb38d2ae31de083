import { z } from 'zod';
import { READERS, type Role } from '../../auth/index.js';
import { withTransaction } from '../../db/index.js';
import {
  CheckBody,
  CreatePolicyBody,
  createPolicy,
  DECISIONS,
  deletePolicy,
  getPolicy,
  listPolicies,
  Policy,
  queryDecisions,
  SCOPE_TYPES,
  UpdatePolicyBody,
  updatePolicy,
  type PolicyEngine,
} from '../../policy/index.js';
import { Uuid } from '../../queue/index.js';
import { principalOf, requireRole, requireSelfOrRole } from '../auth.js';
import { errorResponses } from '../errors.js';
import type { App, AppDeps } from '../types.js';
import { createRoute } from './create.js';
import { ApprovalOut } from './approvals.js';

const tags = ['policies'];
const security = [{ bearerAuth: [] }];
const ADMIN: readonly Role[] = ['admin'];
const Params = z.object({ id: Uuid('policy ids are UUIDs') }).strict();
const PolicyEnvelope = z.object({ policy: Policy });

const CheckResultOut = z.object({
  decision: z.enum(DECISIONS),
  policy_id: z.string().nullable(),
  policy_version: z.number().int().nullable(),
  rule: z.object({ index: z.number().int(), action_pattern: z.string(), effect: z.enum(DECISIONS), scope: z.string() }).nullable(),
  reason: z.string(),
  approval: ApprovalOut.optional(),
});

const DecisionsQuery = z
  .object({
    agent_id: z.uuid().optional(),
    decision: z.enum(DECISIONS).optional(),
    action: z.string().max(200).optional(),
    since: z.string().max(64).optional().describe('ISO 8601 time; decisions at or after it'),
    limit: z.coerce.number().int().min(1).max(1000).default(100),
    cursor: z.string().max(40).optional(),
  })
  .strict();

const DecisionOut = z.object({
  id: z.string(),
  decided_at: z.string(),
  door: z.string(),
  agent_id: z.string().nullable(),
  task_id: z.string().nullable(),
  actor_sub: z.string().nullable(),
  actor_role: z.string().nullable(),
  action: z.string(),
  resource: z.string(),
  context: z.record(z.string(), z.unknown()),
  decision: z.enum(DECISIONS),
  policy_id: z.string().nullable(),
  policy_version: z.number().int().nullable(),
  rule: z.number().int().nullable(),
  scope_level: z.string().nullable(),
  reason: z.string(),
  latency_ms: z.number(),
  approval_id: z.string().nullable(),
});

/** Policies (admin CRUD, live), the check agents ask, and the decision log. */
export function policyRoutes(app: App, deps: AppDeps, engine: PolicyEngine): void {
  createRoute(app, deps, {
    url: '/api/policies',
    tags,
    summary: 'Create a policy for the tenant, a workspace, a role or an agent (admin); in force everywhere within a second',
    body: CreatePolicyBody,
    response: PolicyEnvelope,
    roles: ADMIN,
    doing: 'create policies',
    name: 'create policy',
    create: async (tx, actor, body) => ({ policy: await createPolicy(tx, actor, actor.tenantId, body) }),
    // in force in this process (open egress sessions too) before the 201; the others hear the NOTIFY
    afterCommit: () => engine.changed(),
  });

  app.get(
    '/api/policies',
    {
      schema: {
        tags,
        security,
        summary: "The tenant's policies",
        querystring: z.object({ scope_type: z.enum(SCOPE_TYPES).optional(), scope_id: z.string().max(200).optional() }).strict(),
        response: { 200: z.object({ policies: z.array(Policy) }), ...errorResponses },
      },
    },
    async (req) => {
      const p = requireRole(req, READERS, 'read policies');
      return { policies: await listPolicies(deps.db, p.tenantId, { scopeType: req.query.scope_type, scopeId: req.query.scope_id }) };
    },
  );

  app.get(
    '/api/policies/:id',
    { schema: { tags, security, summary: 'A policy with its version', params: Params, response: { 200: PolicyEnvelope, ...errorResponses } } },
    async (req) => {
      const p = requireRole(req, READERS, 'read policies');
      return { policy: await getPolicy(deps.db, p.tenantId, req.params.id) };
    },
  );

  app.put(
    '/api/policies/:id',
    {
      schema: {
        tags,
        security,
        summary: 'Change a policy (admin): a new version, in force on every API and worker process within a second; audited',
        params: Params,
        body: UpdatePolicyBody,
        response: { 200: PolicyEnvelope, ...errorResponses },
      },
    },
    async (req) => {
      const actor = requireRole(req, ADMIN, 'change policies');
      const policy = await withTransaction(deps.db, (tx) => updatePolicy(tx, actor, actor.tenantId, req.params.id, req.body), { name: 'update policy' });
      await engine.changed();
      return { policy };
    },
  );

  app.delete(
    '/api/policies/:id',
    { schema: { tags, security, summary: 'Delete a policy (admin); audited', params: Params, response: { 200: PolicyEnvelope, ...errorResponses } } },
    async (req) => {
      const actor = requireRole(req, ADMIN, 'delete policies');
      const policy = await withTransaction(deps.db, (tx) => deletePolicy(tx, actor, actor.tenantId, req.params.id), { name: 'delete policy' });
      await engine.changed();
      return { policy };
    },
  );

  app.post(
    '/api/policy/check',
    {
      schema: {
        tags,
        security,
        summary: 'May I? An agent asks about its own action (people: for an agent_id). require_approval opens an approval request to wait for',
        body: CheckBody,
        response: { 200: CheckResultOut, ...errorResponses },
      },
    },
    async (req) => {
      const p = principalOf(req);
      const b = req.body;
      const agentId = p.role === 'agent' ? p.sub : b.agent_id;
      if (p.role === 'agent' && b.agent_id) requireSelfOrRole(req, b.agent_id, [], 'check policies');
      else if (p.role !== 'agent') requireRole(req, ['admin', 'operator'], 'check policies');
      return engine.check(
        deps.db,
        { tenantId: p.tenantId, door: 'api', actor: p, agentId, taskId: b.task_id, action: b.action, resource: b.resource, context: b.context },
        { dryRun: b.dry_run },
      );
    },
  );

  app.get(
    '/api/policy/decisions',
    {
      schema: {
        tags,
        security,
        summary: 'The decision log, newest first (an agent: its own)',
        querystring: DecisionsQuery,
        response: { 200: z.object({ decisions: z.array(DecisionOut), next_cursor: z.string().nullable() }), ...errorResponses },
      },
    },
    async (req) => {
      const p = principalOf(req);
      const q = req.query;
      if (p.role !== 'agent') requireRole(req, READERS, 'read the decision log');
      await engine.log.flush(); // this process's decisions so far are in
      return queryDecisions(deps.db, p.tenantId, { agentId: p.role === 'agent' ? p.sub : q.agent_id, decision: q.decision, action: q.action, since: q.since, before: q.cursor, limit: q.limit });
    },
  );
}
