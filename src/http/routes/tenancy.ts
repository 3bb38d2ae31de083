import { z } from 'zod';
import { READERS } from '../../auth/index.js';
import { withTransaction } from '../../db/index.js';
import { notFound } from '../../errors/index.js';
import {
  createTenant,
  CreateTenantBody,
  createUser,
  CreateUserBody,
  createWorkspace,
  CreateWorkspaceBody,
  UpdateWorkspaceBody,
  updateWorkspace,
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
import type { App, AppDeps } from '../types.js';
import { createRoute } from './create.js';

const security = [{ bearerAuth: [] }];
const TenantEnvelope = z.object({ tenant: Tenant });
const WorkspaceEnvelope = z.object({ workspace: Workspace });
const UserEnvelope = z.object({ user: User });

/** Tenants (platform_admin), workspaces and users of the caller's tenant. */
export function tenancyRoutes(app: App, deps: AppDeps): void {
  app.get(
    '/api/tenants',
    { schema: { tags: ['tenants'], security, summary: 'List tenants (platform_admin)', response: { 200: z.object({ tenants: z.array(Tenant) }), ...errorResponses } } },
    async (req) => {
      requireRole(req, [], 'list tenants');
      return { tenants: await listTenants(deps.db) };
    },
  );

  createRoute(app, deps, {
    url: '/api/tenants',
    tags: ['tenants'],
    summary: 'Create a tenant with its default workspace (platform_admin)',
    body: CreateTenantBody,
    response: TenantEnvelope,
    roles: [],
    doing: 'create tenants',
    name: 'create tenant',
    create: async (tx, actor, body) => ({ tenant: await createTenant(tx, actor, body.id, body.name) }),
  });


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

  createRoute(app, deps, {
    url: '/api/workspaces',
    tags: ['workspaces'],
    summary: 'Create a workspace (admin)',
    body: CreateWorkspaceBody,
    response: WorkspaceEnvelope,
    roles: ['admin'],
    doing: 'create workspaces',
    name: 'create workspace',
    create: async (tx, actor, body) => ({ workspace: await createWorkspace(tx, actor, actor.tenantId, body) }),
  });

  app.patch(
    '/api/workspaces/:id',
    {
      schema: {
        tags: ['workspaces'],
        security,
        summary: "Change a workspace's billing subject, USER or ORG (admin); tasks already submitted keep theirs",
        params: z.object({ id: z.uuid('workspace ids are UUIDs') }).strict(),
        body: UpdateWorkspaceBody,
        response: { 200: WorkspaceEnvelope, ...errorResponses },
      },
    },
    async (req) => {
      const actor = requireRole(req, ['admin'], 'change workspaces');
      return { workspace: await withTransaction(deps.db, (tx) => updateWorkspace(tx, actor, actor.tenantId, req.params.id, req.body), { name: 'update workspace' }) };
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

  createRoute(app, deps, {
    url: '/api/users',
    tags: ['users'],
    summary: 'Create a user with a role (admin)',
    body: CreateUserBody,
    response: UserEnvelope,
    roles: ['admin'],
    doing: 'create users',
    name: 'create user',
    create: async (tx, actor, body) => ({ user: await createUser(tx, actor, actor.tenantId, body) }),
  });

}
