import { z } from 'zod';
import { MANAGERS, type Principal } from '../../auth/index.js';
import { withTransaction } from '../../db/index.js';
import { forbidden } from '../../errors/index.js';
import { EngageBody, engageKillSwitch, KillSwitch, listKillSwitches, readSettings, releaseKillSwitch, SettingsPatch, updateSettings, type OperatorState } from '../../operator/index.js';
import { requireRole } from '../auth.js';
import { errorResponses } from '../errors.js';
import type { App, AppDeps } from '../types.js';

const tags = ['operator'];
const security = [{ bearerAuth: [] }];
const ScopeQuery = z.object({ scope: z.enum(['tenant', 'global']).default('tenant') }).strict();
const SettingsEnvelope = z.object({ scope: z.enum(['tenant', 'global']), tenant_id: z.string().nullable(), settings: z.record(z.string(), z.unknown()) });
const AllSettings = z.object({ global: z.record(z.string(), z.unknown()), tenant: SettingsEnvelope });
const TenantId = z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'a tenant id');
const ReleaseBody = z
  .object({ scope: z.enum(['tenant', 'global']), tenant_id: TenantId.optional() })
  .strict()
  .refine((b) => b.scope === 'tenant' || b.tenant_id === undefined, { message: 'tenant_id goes with scope tenant only', path: ['tenant_id'] });

/**
 * Whose scope a write targets: global needs platform_admin; a tenant's needs its admin (a
 * platform_admin may name any tenant). Returns the tenant id, or null for global.
 */
function writeScope(req: Parameters<typeof requireRole>[0], scope: 'tenant' | 'global', tenantId: string | undefined, doing: string): { actor: Principal; tenantId: string | null } {
  if (scope === 'global') return { actor: requireRole(req, [], `${doing} for every tenant`), tenantId: null };
  const actor = requireRole(req, ['admin'], doing);
  if (tenantId !== undefined && tenantId !== actor.tenantId && actor.role !== 'platform_admin')
    throw forbidden(`Only a platform_admin may ${doing} for another tenant (${tenantId}); leave tenant_id out for your own.`);
  return { actor, tenantId: tenantId ?? actor.tenantId };
}

/** Operator controls (README "Operator controls"): runtime settings and the kill switch, every change audited. */
export function adminRoutes(app: App, deps: AppDeps, operator: OperatorState): void {
  app.get(
    '/api/admin/settings',
    { schema: { tags, security, summary: "Runtime settings stored globally and for the caller's tenant (admin, operator)", response: { 200: AllSettings, ...errorResponses } } },
    async (req) => {
      const p = requireRole(req, MANAGERS, 'read runtime settings');
      const [global, tenant] = await Promise.all([readSettings(deps.db, null), readSettings(deps.db, p.tenantId)]);
      return { global, tenant: { scope: 'tenant' as const, tenant_id: p.tenantId, settings: tenant } };
    },
  );

  app.put(
    '/api/admin/settings',
    {
      schema: {
        tags,
        security,
        summary: "Change runtime settings of the caller's tenant (admin) or, with ?scope=global, of the whole fabric (platform_admin); null unsets. Applied by every process within a second, audited.",
        querystring: ScopeQuery,
        body: SettingsPatch,
        response: { 200: SettingsEnvelope, ...errorResponses },
      },
    },
    async (req) => {
      const { actor, tenantId } = writeScope(req, req.query.scope, undefined, 'change runtime settings');
      const settings = await withTransaction(deps.db, (tx) => updateSettings(tx, actor, tenantId, req.body), { name: 'update runtime settings' });
      await operator.refresh();
      return { scope: req.query.scope, tenant_id: tenantId, settings };
    },
  );

  app.get(
    '/api/admin/kill-switch',
    { schema: { tags, security, summary: 'Engaged kill switches: the global one and the tenant’s (platform_admin: all)', response: { 200: z.object({ kill_switches: z.array(KillSwitch) }), ...errorResponses } } },
    async (req) => {
      const p = requireRole(req, MANAGERS, 'read kill switches');
      return { kill_switches: await listKillSwitches(deps.db, p.role === 'platform_admin' ? undefined : p.tenantId) };
    },
  );

  app.post(
    '/api/admin/kill-switch',
    {
      schema: {
        tags,
        security,
        summary: 'Engage a kill switch: no new task of the tenant (scope global: of any tenant) is accepted or started; mode drain lets running tasks finish, stop cancels them. Audited.',
        body: EngageBody,
        response: { 200: z.object({ kill_switch: KillSwitch, running_tasks_cancelled: z.number().int() }), ...errorResponses },
      },
    },
    async (req) => {
      const { actor, tenantId } = writeScope(req, req.body.scope, req.body.tenant_id, 'engage the kill switch');
      const r = await withTransaction(deps.db, (tx) => engageKillSwitch(tx, actor, tenantId, req.body.mode, req.body.reason), { name: 'engage kill switch' });
      await operator.refresh();
      return { kill_switch: r.killSwitch, running_tasks_cancelled: r.cancelled };
    },
  );

  app.post(
    '/api/admin/kill-switch/release',
    { schema: { tags, security, summary: 'Release a kill switch: queued tasks start again, submits are accepted. Audited.', body: ReleaseBody, response: { 200: z.object({ released: KillSwitch }), ...errorResponses } } },
    async (req) => {
      const { actor, tenantId } = writeScope(req, req.body.scope, req.body.tenant_id, 'release the kill switch');
      const released = await withTransaction(deps.db, (tx) => releaseKillSwitch(tx, actor, tenantId), { name: 'release kill switch' });
      await operator.refresh();
      return { released };
    },
  );
}
