import type { z } from 'zod';
import { recordAudit, type AuditActor } from '../audit/index.js';
import { DEFAULT_TENANT_ID } from '../auth/index.js';
import { withTransaction, type Db, type Queryable, type Tx } from '../db/index.js';
import { conflict, notFound } from '../errors/index.js';
import { recordEvent } from '../events/index.js';
import type { CreateUserBody, CreateWorkspaceBody, Tenant, UpdateWorkspaceBody, User, Workspace } from './schemas.js';

type TenantOut = z.infer<typeof Tenant>;
type WorkspaceOut = z.infer<typeof Workspace>;
type UserOut = z.infer<typeof User>;

/** The workspace every tenant starts with. */
export const DEFAULT_WORKSPACE_NAME = 'default';

const iso = (d: Date) => d.toISOString();

interface TenantRow { id: string; name: string; created_at: Date }
interface WorkspaceRow { id: string; tenant_id: string; name: string; billing_subject: WorkspaceOut['billing_subject']; created_at: Date }
interface UserRow { id: string; tenant_id: string; email: string; name: string | null; role: UserOut['role']; created_at: Date }

const toTenant = (r: TenantRow): TenantOut => ({ id: r.id, name: r.name, created_at: iso(r.created_at) });
const toWorkspace = (r: WorkspaceRow): WorkspaceOut => ({ id: r.id, tenant_id: r.tenant_id, name: r.name, billing_subject: r.billing_subject, created_at: iso(r.created_at) });
const toUser = (r: UserRow): UserOut => ({ id: r.id, tenant_id: r.tenant_id, email: r.email, name: r.name, role: r.role, created_at: iso(r.created_at) });

async function insertTenant(tx: Tx, id: string, name: string): Promise<TenantOut | undefined> {
  const r = await tx.query<TenantRow>(
    'INSERT INTO tenants (id, name) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING RETURNING id, name, created_at',
    [id, name],
  );
  if (!r.rows[0]) return undefined;
  await tx.query('INSERT INTO workspaces (tenant_id, name) VALUES ($1, $2)', [id, DEFAULT_WORKSPACE_NAME]);
  await recordEvent(tx, { tenantId: id, eventType: 'tenant.created', subjectType: 'tenant', subjectId: id, data: { name } });
  return toTenant(r.rows[0]);
}

/** Creates the `default` tenant and its default workspace if they do not exist yet. */
export async function ensureDefaultTenant(db: Db): Promise<void> {
  await withTransaction(db, (tx) => insertTenant(tx, DEFAULT_TENANT_ID, 'Default tenant'), { name: 'ensure default tenant' });
}

/** Creates a tenant with its default workspace; 409 if the id is taken. */
export async function createTenant(tx: Tx, actor: AuditActor, id: string, name: string): Promise<TenantOut> {
  const tenant = await insertTenant(tx, id, name);
  if (!tenant) throw conflict('tenant_exists', `A tenant with id "${id}" already exists; choose another id.`);
  await recordAudit(tx, { tenantId: id, actor, action: 'tenant.create', targetType: 'tenant', targetId: id, after: tenant });
  return tenant;
}

export async function listTenants(q: Queryable): Promise<TenantOut[]> {
  const r = await q.query<TenantRow>('SELECT id, name, created_at FROM tenants WHERE deleted_at IS NULL ORDER BY created_at, id');
  return r.rows.map(toTenant);
}

/** A live tenant, or undefined. */
export async function findTenant(q: Queryable, id: string): Promise<TenantOut | undefined> {
  const r = await q.query<TenantRow>('SELECT id, name, created_at FROM tenants WHERE id = $1 AND deleted_at IS NULL', [id]);
  return r.rows[0] ? toTenant(r.rows[0]) : undefined;
}

export async function listWorkspaces(q: Queryable, tenantId: string): Promise<WorkspaceOut[]> {
  const r = await q.query<WorkspaceRow>('SELECT * FROM workspaces WHERE tenant_id = $1 ORDER BY created_at, id', [tenantId]);
  return r.rows.map(toWorkspace);
}

/** The workspace `id` of the tenant, or the tenant's default workspace when `id` is omitted; 404 otherwise. */
export async function resolveWorkspace(q: Queryable, tenantId: string, id?: string): Promise<WorkspaceOut> {
  const r = id
    ? await q.query<WorkspaceRow>('SELECT * FROM workspaces WHERE tenant_id = $1 AND id = $2', [tenantId, id])
    : await q.query<WorkspaceRow>('SELECT * FROM workspaces WHERE tenant_id = $1 AND name = $2', [tenantId, DEFAULT_WORKSPACE_NAME]);
  if (!r.rows[0]) throw notFound('workspace', id ?? DEFAULT_WORKSPACE_NAME);
  return toWorkspace(r.rows[0]);
}

export async function createWorkspace(tx: Tx, actor: AuditActor, tenantId: string, body: z.infer<typeof CreateWorkspaceBody>): Promise<WorkspaceOut> {
  const name = body.name;
  const r = await tx.query<WorkspaceRow>(
    'INSERT INTO workspaces (tenant_id, name, billing_subject) VALUES ($1, $2, $3) ON CONFLICT (tenant_id, name) DO NOTHING RETURNING *',
    [tenantId, name, body.billing_subject],
  );
  if (!r.rows[0]) throw conflict('workspace_exists', `A workspace named "${name}" already exists in this tenant.`);
  const ws = toWorkspace(r.rows[0]);
  await recordEvent(tx, { tenantId, eventType: 'workspace.created', subjectType: 'workspace', subjectId: ws.id, data: { name } });
  await recordAudit(tx, { tenantId, actor, action: 'workspace.create', targetType: 'workspace', targetId: ws.id, after: ws });
  return ws;
}

/** Changes a workspace's billing subject; tasks already submitted keep theirs. Audited. */
export async function updateWorkspace(tx: Tx, actor: AuditActor, tenantId: string, id: string, body: z.infer<typeof UpdateWorkspaceBody>): Promise<WorkspaceOut> {
  const before = await resolveWorkspace(tx, tenantId, id);
  const r = await tx.query<WorkspaceRow>('UPDATE workspaces SET billing_subject = $3 WHERE tenant_id = $1 AND id = $2 RETURNING *', [tenantId, id, body.billing_subject]);
  const ws = toWorkspace(r.rows[0]!);
  await recordEvent(tx, { tenantId, eventType: 'workspace.updated', subjectType: 'workspace', subjectId: id, data: { billing_subject: ws.billing_subject } });
  await recordAudit(tx, { tenantId, actor, action: 'workspace.update', targetType: 'workspace', targetId: id, before, after: ws });
  return ws;
}

export async function listUsers(q: Queryable, tenantId: string): Promise<UserOut[]> {
  const r = await q.query<UserRow>('SELECT * FROM users WHERE tenant_id = $1 AND deleted_at IS NULL ORDER BY created_at, id', [tenantId]);
  return r.rows.map(toUser);
}

/** The live user `id` of the tenant, or a 404. */
export async function getUser(q: Queryable, tenantId: string, id: string): Promise<UserOut> {
  const r = await q.query<UserRow>('SELECT * FROM users WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL', [tenantId, id]);
  if (!r.rows[0]) throw notFound('user', id);
  return toUser(r.rows[0]);
}

export async function createUser(tx: Tx, actor: AuditActor, tenantId: string, body: z.infer<typeof CreateUserBody>): Promise<UserOut> {
  const r = await tx.query<UserRow>(
    `INSERT INTO users (tenant_id, email, name, role) VALUES ($1, lower($2), $3, $4)
     ON CONFLICT (tenant_id, email) DO NOTHING RETURNING *`,
    [tenantId, body.email, body.name ?? null, body.role],
  );
  if (!r.rows[0]) throw conflict('user_exists', `A user with email ${body.email} already exists in this tenant.`);
  const user = toUser(r.rows[0]);
  await recordEvent(tx, { tenantId, eventType: 'user.created', subjectType: 'user', subjectId: user.id, data: { role: user.role } });
  await recordAudit(tx, { tenantId, actor, action: 'user.create', targetType: 'user', targetId: user.id, after: user });
  return user;
}
