import { z } from 'zod';
import { READERS } from '../../auth/index.js';
import { Budget, CreateBudgetBody, createBudget, deleteBudget, getBudget, listBudgets, setTenantTimeZone, tenantBudgets, UpdateBudgetBody, updateBudget } from '../../budget/index.js';
import { systemClock, type Clock } from '../../clock/index.js';
import { withTransaction } from '../../db/index.js';
import { Uuid } from '../../queue/index.js';
import { requireRole } from '../auth.js';
import { errorResponses } from '../errors.js';
import type { App, AppDeps } from '../types.js';

const tags = ['budgets'];
const security = [{ bearerAuth: [] }];
const Params = z.object({ id: Uuid('budget ids are UUIDs') }).strict();
const BudgetEnvelope = z.object({ budget: Budget });
const TimeZoneBody = z.object({ time_zone: z.string().min(1).max(64).describe('IANA name, e.g. UTC or Europe/Berlin') }).strict();
const ADMIN = ['admin'] as const;

/** Budgets above the agent (user, workspace, tenant; BudgetConfig of agent-fabric.md) and the tenant's budget time zone. */
export function budgetRoutes(app: App, deps: AppDeps, clock: Clock = systemClock): void {
  const write = <T>(name: string, tenantId: string, fn: Parameters<typeof withTransaction<T>>[1]) =>
    withTransaction(deps.db, fn, { name }).finally(() => tenantBudgets.forget(tenantId));

  app.post(
    '/api/budgets',
    { schema: { tags, security, summary: 'Create a per-day budget for the tenant, a workspace or a user (admin)', body: CreateBudgetBody, response: { 201: BudgetEnvelope, ...errorResponses } } },
    async (req, reply) => {
      const actor = requireRole(req, ADMIN, 'create budgets');
      const budget = await write('create budget', actor.tenantId, (tx) => createBudget(tx, actor, actor.tenantId, req.body, clock.now()));
      return reply.code(201).send({ budget });
    },
  );

  app.get(
    '/api/budgets',
    { schema: { tags, security, summary: "The tenant's budgets with their use today", response: { 200: z.object({ budgets: z.array(Budget) }), ...errorResponses } } },
    async (req) => {
      const p = requireRole(req, READERS, 'read budgets');
      return { budgets: await listBudgets(deps.db, p.tenantId) };
    },
  );

  app.get(
    '/api/budgets/:id',
    { schema: { tags, security, summary: 'A budget with its use today', params: Params, response: { 200: BudgetEnvelope, ...errorResponses } } },
    async (req) => {
      const p = requireRole(req, READERS, 'read budgets');
      return { budget: await getBudget(deps.db, p.tenantId, req.params.id) };
    },
  );

  app.put(
    '/api/budgets/:id',
    { schema: { tags, security, summary: "Change any subset of a budget's limits and policies (admin)", params: Params, body: UpdateBudgetBody, response: { 200: BudgetEnvelope, ...errorResponses } } },
    async (req) => {
      const actor = requireRole(req, ADMIN, 'change budgets');
      return { budget: await write('update budget', actor.tenantId, (tx) => updateBudget(tx, actor, actor.tenantId, req.params.id, req.body)) };
    },
  );

  app.delete(
    '/api/budgets/:id',
    { schema: { tags, security, summary: 'Delete a budget (admin)', params: Params, response: { 200: BudgetEnvelope, ...errorResponses } } },
    async (req) => {
      const actor = requireRole(req, ADMIN, 'delete budgets');
      return { budget: await write('delete budget', actor.tenantId, (tx) => deleteBudget(tx, actor, actor.tenantId, req.params.id)) };
    },
  );

  app.put(
    '/api/budget-settings',
    {
      schema: {
        tags,
        security,
        summary: "Set the tenant's time zone: quotas reset on the 1st and budgets every day at 00:00 there (admin)",
        body: TimeZoneBody,
        response: { 200: TimeZoneBody, ...errorResponses },
      },
    },
    async (req) => {
      const actor = requireRole(req, ADMIN, 'change budget settings');
      return { time_zone: await withTransaction(deps.db, (tx) => setTenantTimeZone(tx, actor, actor.tenantId, req.body.time_zone), { name: 'set time zone' }) };
    },
  );
}
