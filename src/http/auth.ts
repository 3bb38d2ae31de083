import type { FastifyRequest } from 'fastify';
import { hasRole, TENANT_ID_PATTERN, type Principal, type Role } from '../auth/index.js';
import type { Queryable } from '../db/index.js';
import { findTenant } from '../tenancy/index.js';
import { forbidden, unauthorized } from '../errors/index.js';
import { addToContext } from '../telemetry/index.js';
import type { App, AppDeps } from './types.js';

const TENANT_HEADER = 'x-fabric-tenant';
const MAX_TOKEN_LENGTH = 8192;

/** Remembers tenants known to exist for a short while, so auth costs no query per request. */
function tenantCache(db: Queryable, ttlMs = 30_000, max = 10_000) {
  const seen = new Map<string, number>();
  return async (tenantId: string): Promise<boolean> => {
    const until = seen.get(tenantId);
    if (until && until > Date.now()) return true;
    if (!(await findTenant(db, tenantId))) return false;
    if (seen.size >= max) seen.clear();
    seen.set(tenantId, Date.now() + ttlMs);
    return true;
  };
}

function countHeader(raw: string[], name: string): number {
  let n = 0;
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.toLowerCase() === name) n++;
  return n;
}

/** Verifies the bearer JWT of every /api request and sets `request.principal`. */
export function registerAuth(app: App, deps: AppDeps): void {
  const tenantExists = tenantCache(deps.db);
  app.addHook('onRequest', async (req) => {
    // Decide on the matched route, not the raw URL: /%61pi/agents routes to /api/agents too.
    if (!req.routeOptions.url?.startsWith('/api/')) return;
    if (countHeader(req.raw.rawHeaders, 'authorization') > 1)
      throw unauthorized('invalid_token', 'Send exactly one Authorization header.');
    const header = req.headers.authorization;
    if (!header)
      throw unauthorized('missing_token', 'This route needs "Authorization: Bearer <jwt>". Mint one with `agent-fabric token --role admin --tenant default`.');
    const m = /^Bearer +([A-Za-z0-9_\-.=]+)$/i.exec(header.trim());
    if (!m || m[1]!.length > MAX_TOKEN_LENGTH) throw unauthorized('invalid_token', 'The Authorization header must be "Bearer <jwt>".');
    const verified = await deps.verifyToken(m[1]!);
    const principal: Principal = { sub: verified.sub, role: verified.role, tenantId: verified.tenantId };
    const override = req.headers[TENANT_HEADER];
    if (override !== undefined) {
      if (principal.role !== 'platform_admin') throw forbidden(`Only a platform_admin may choose the tenant with ${TENANT_HEADER}; drop the header.`);
      if (typeof override !== 'string' || !TENANT_ID_PATTERN.test(override))
        throw unauthorized('invalid_tenant', `${TENANT_HEADER} must be a tenant id (lowercase letters, digits, dashes).`);
      principal.tenantId = override;
    }
    if (!(await tenantExists(principal.tenantId)))
      throw forbidden(`Tenant "${principal.tenantId}" does not exist; use a token for an existing tenant.`, 'tenant_not_found');
    req.principal = principal;
    addToContext({ tenant_id: principal.tenantId, ...(principal.role === 'agent' ? { agent_id: principal.sub } : {}) });
  });
}

/** The caller of an /api route (the auth hook guarantees one). */
export function principalOf(req: FastifyRequest): Principal {
  if (!req.principal) throw unauthorized('missing_token', 'This route needs "Authorization: Bearer <jwt>".');
  return req.principal;
}

/** The caller, if it has one of `roles` (platform_admin always does); otherwise 403. */
export function requireRole(req: FastifyRequest, roles: readonly Role[], doing: string): Principal {
  const p = principalOf(req);
  if (!hasRole(p, roles)) throw forbidden(`Role "${p.role}" may not ${doing}; it needs one of: ${roles.join(', ')}.`);
  return p;
}

/** UUIDs compare case-insensitively (a token may carry an agent id in upper case). */
export function sameId(a: string, b: string): boolean {
  return a.toLowerCase() === b.toLowerCase();
}

/** The caller, if it is the agent `agentId` itself or a person with one of `roles`; otherwise 403. */
export function requireSelfOrRole(req: FastifyRequest, agentId: string, roles: readonly Role[], doing: string): Principal {
  const p = principalOf(req);
  if (p.role === 'agent') {
    if (!sameId(p.sub, agentId)) throw forbidden(`An agent may only ${doing} for itself (token sub ${p.sub} ≠ ${agentId}).`);
    return p;
  }
  return requireRole(req, roles, doing);
}
