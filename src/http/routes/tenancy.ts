import { z } from 'zod';
import { READERS } from '../../auth/index.js';
import { notFound } from '../../errors/index.js';
import {
  createTenant,
  CreateTenantBody,
  createUser,
  CreateUserBody,
  createWorkspace,
  CreateWorkspaceBody,
  findTenant,
  getUser,
  listTenants,
  listUsers,
  listWorkspaces,
  Tenant,
  User,
  Workspace,
} from '../../tenancy/index.js';
import { principalOf, requireRole } from '../auth.js';
import { errorResponses } from '../errors.js';
import { createOnce, IdempotencyHeaders } from '../idempotency.js';
import type { App, AppDeps } from '../types.js';

const security = [{ bearerAuth: [] }];
const TenantEnvelope = z.object({ tenant: Tenant });
const WorkspaceEnvelope = z.object({ workspace: Workspace });
const UserEnvelope = z.object({ user: User });

/** Tenants (platform_admin), workspaces and users of the caller's tenant. */
export function tenancyRoutes(app: App, deps: AppDeps): void {
  const ttl = deps.config.idempotencyTtlSeconds;

  app.get(
    '/api/tenants',
    { schema: { tags: ['tenants'], security, summary: 'List tenants (platform_admin)', response: { 200: z.object({ tenants: z.array(Tenant) }), ...errorResponses } } },
    async (req) => {
      requireRole(req, [], 'list tenants');
      return { tenants: await listTenants(deps.db) };
    },
  );

  app.post(
    '/api/tenants',
    {
      schema: {
        tags: ['tenants'],
        security,
        summary: 'Create a tenant with its default workspace (platform_admin)',
        headers: IdempotencyHeaders,
        body: CreateTenantBody,
        response: { 201: TenantEnvelope, 200: TenantEnvelope, ...errorResponses },
      },
    },
    async (req, reply) => {
      const actor = requireRole(req, [], 'create tenants');
      const { status, body } = await createOnce(req, deps.db, ttl, 'create tenant', async (tx) => ({
        status: 201,
        body: { tenant: await createTenant(tx, actor, req.body.id, req.body.name) },
      }));
      return reply.code(status).send(body);
    },
  );

  app.get(
    '/api/tenants/current',
    { schema: { tags: ['tenants'], security, summary: "The caller's tenant", response: { 200: TenantEnvelope, ...errorResponses } } },
    async (req) => {
      const p = principalOf(req);
      const tenant = await findTenant(deps.db, p.tenantId);
      if (!tenant) throw notFound('tenant', p.tenantId);
      return { tenant };
    },
  );

  app.get(
    '/api/workspaces',
    { schema: { tags: ['workspaces'], security, summary: "List the tenant's workspaces", response: { 200: z.object({ workspaces: z.array(Workspace) }), ...errorResponses } } },
    async (req) => {
      const p = requireRole(req, READERS, 'list workspaces');
      return { workspaces: await listWorkspaces(deps.db, p.tenantId) };
    },
  );

  app.post(
    '/api/workspaces',
    {
      schema: {
        tags: ['workspaces'],
        security,
        summary: 'Create a workspace (admin)',
        headers: IdempotencyHeaders,
        body: CreateWorkspaceBody,
        response: { 201: WorkspaceEnvelope, 200: WorkspaceEnvelope, ...errorResponses },
      },
    },
    async (req, reply) => {
      const actor = requireRole(req, ['admin'], 'create workspaces');
      const { status, body } = await createOnce(req, deps.db, ttl, 'create workspace', async (tx) => ({
        status: 201,
        body: { workspace: await createWorkspace(tx, actor, actor.tenantId, req.body.name) },
      }));
      return reply.code(status).send(body);
    },
  );

  app.get(
    '/api/users',
    { schema: { tags: ['users'], security, summary: "List the tenant's users (admin, operator)", response: { 200: z.object({ users: z.array(User) }), ...errorResponses } } },
    async (req) => {
      const p = requireRole(req, ['admin', 'operator'], 'list users');
      return { users: await listUsers(deps.db, p.tenantId) };
    },
  );

  app.get(
    '/api/users/:id',
    {
      schema: {
        tags: ['users'],
        security,
        summary: 'Get a user (admin, operator)',
        params: z.object({ id: z.uuid('user ids are UUIDs') }).strict(),
        response: { 200: UserEnvelope, ...errorResponses },
      },
    },
    async (req) => {
      const p = requireRole(req, ['admin', 'operator'], 'read users');
      return { user: await getUser(deps.db, p.tenantId, req.params.id) };
    },
  );

  app.post(
    '/api/users',
    {
      schema: { tags: ['users'], security, summary: 'Create a user with a role (admin)', headers: IdempotencyHeaders, body: CreateUserBody, response: { 201: UserEnvelope, 200: UserEnvelope, ...errorResponses } },
    },
    async (req, reply) => {
      const actor = requireRole(req, ['admin'], 'create users');
      const { status, body } = await createOnce(req, deps.db, ttl, 'create user', async (tx) => ({
        status: 201,
        body: { user: await createUser(tx, actor, actor.tenantId, req.body) },
      }));
      return reply.code(status).send(body);
    },
  );
}
