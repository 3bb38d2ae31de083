import { z } from 'zod';

/** Roles a token may carry, most powerful first. */
export const ROLES = ['platform_admin', 'admin', 'operator', 'member', 'viewer', 'agent'] as const;
export const Role = z.enum(ROLES);
export type Role = z.infer<typeof Role>;

/** Tenant ids: 1–63 lowercase letters, digits and dashes (the same rule as the tenants table's CHECK). */
export const TENANT_ID_PATTERN = /^[a-z0-9][a-z0-9-]{0,62}$/;
export const TenantId = z.string().regex(TENANT_ID_PATTERN, 'use 1–63 lowercase letters, digits and dashes, starting with a letter or digit');

/** The tenant that exists after first start, and that tokens name by default. */
export const DEFAULT_TENANT_ID = 'default';

/** Who is calling, from a verified token. */
export interface Principal {
  sub: string;
  role: Role;
  /** The tenant this request acts on (a platform_admin may choose it per request). */
  tenantId: string;
}

/** Roles that may manage agents of a tenant (provision, change, delete). */
export const MANAGERS: readonly Role[] = ['admin', 'operator'];
/** People of a tenant who may read its agents. */
export const READERS: readonly Role[] = ['admin', 'operator', 'member', 'viewer'];

/** True when `principal` has one of `roles`; platform_admin has every role. */
export function hasRole(principal: Principal, roles: readonly Role[]): boolean {
  return principal.role === 'platform_admin' || roles.includes(principal.role);
}
