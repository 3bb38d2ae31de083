import { z } from 'zod';
import { MANAGERS, READERS } from '../../auth/index.js';
import type { BillingService } from '../../billing/index.js';
import { AgentQuota } from '../../budget/index.js';
import { withTransaction } from '../../db/index.js';
import { cancelAgentTasks } from '../../queue/index.js';
import {
  Agent,
  deleteAgent,
  getAgent,
  listAgents,
  ListAgentsQuery,
  provisionAgent,
  ProvisionAgentBody,
  UpdateAgentBody,
  updateAgent,
  type ProvisionOptions,
} from '../../tenancy/index.js';
import { requireRole, requireSelfOrRole } from '../auth.js';
import { errorResponses } from '../errors.js';
import type { App, AppDeps } from '../types.js';
import { createRoute } from './create.js';

const AgentParams = z.object({ id: z.uuid('agent ids are UUIDs').transform((s) => s.toLowerCase()) }).strict();
const AgentEnvelope = z.object({ agent: Agent });
const Provisioned = z.object({ agent: Agent, quota: AgentQuota });
const tags = ['agents'];
const security = [{ bearerAuth: [] }];

/** Agent provisioning and management (isolation-runtime-prd §3.3). */
export function agentRoutes(app: App, deps: AppDeps, provision: Partial<ProvisionOptions> | undefined, billing: BillingService): void {
  createRoute(app, deps, {
    url: '/api/agents/provision',
    tags,
    summary: 'Provision an agent with its quota, ledger entry and event in one transaction',
    body: ProvisionAgentBody,
    response: Provisioned,
    roles: MANAGERS,
    doing: 'provision agents',
    name: 'provision agent',
    create: async (tx, actor, body) => {
      await billing.checkAgent(tx, actor.tenantId, body.max_concurrency); // the plan's max_concurrency entitlement
      return provisionAgent(tx, actor, actor.tenantId, body, { quotaDefaults: deps.config.quotaDefaults, ...provision });
    },
  });

  app.get(
    '/api/agents',
    {
      schema: {
        tags,
        security,
        summary: "List the tenant's agents",
        querystring: ListAgentsQuery,
        response: { 200: z.object({ agents: z.array(Agent), next_cursor: z.string().nullable() }), ...errorResponses },
      },
    },
    async (req) => {
      const p = requireRole(req, READERS, 'list agents');
      return listAgents(deps.db, p.tenantId, { workspaceId: req.query.workspace_id, status: req.query.status, limit: req.query.limit, cursor: req.query.cursor });
    },
  );

  app.get(
    '/api/agents/:id',
    { schema: { tags, security, summary: 'Get an agent', params: AgentParams, response: { 200: AgentEnvelope, ...errorResponses } } },
    async (req) => {
      const p = requireSelfOrRole(req, req.params.id, READERS, 'read agents');
      return { agent: await getAgent(deps.db, p.tenantId, req.params.id) };
    },
  );

  app.patch(
    '/api/agents/:id',
    {
      schema: { tags, security, summary: "Change an agent's configuration or status", params: AgentParams, body: UpdateAgentBody, response: { 200: AgentEnvelope, ...errorResponses } },
    },
    async (req) => {
      const actor = requireRole(req, MANAGERS, 'change agents');
      const agent = await withTransaction(
        deps.db,
        async (tx) => {
          await billing.checkAgent(tx, actor.tenantId, req.body.max_concurrency); // the plan's max_concurrency entitlement
          return updateAgent(tx, actor, actor.tenantId, req.params.id, req.body);
        },
        { name: 'update agent' },
      );
      return { agent };
    },
  );

  app.delete(
    '/api/agents/:id',
    { schema: { tags, security, summary: 'Soft-delete an agent (audit-logged)', params: AgentParams, response: { 200: AgentEnvelope, ...errorResponses } } },
    async (req) => {
      const actor = requireRole(req, MANAGERS, 'delete agents');
      const agent = await withTransaction(
        deps.db,
        async (tx) => {
          const deleted = await deleteAgent(tx, actor, actor.tenantId, req.params.id);
          await cancelAgentTasks(tx, actor.tenantId, req.params.id); // its queued work must not wait forever
          return deleted;
        },
        { name: 'delete agent' },
      );
      return { agent };
    },
  );
}
