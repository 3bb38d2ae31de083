import { z } from 'zod';
import { recordAudit, type AuditActor } from '../audit/index.js';
import type { Queryable, Tx } from '../db/index.js';
import { badRequest, forbidden } from '../errors/index.js';

/** NOTIFY channel: a runtime setting or a kill switch changed (payload empty; every process reloads). */
export const OPERATOR_CHANNEL = 'fabric_operator';

const perMinute = z.number().int().min(0).max(1_000_000_000);

/**
 * The settings an operator may change without a restart, each read live by the code that uses
 * it. `global`: settable for the whole fabric (platform_admin); `tenant`: settable per tenant
 * (its admin), winning over the global value. Unset = the environment's value (see README).
 */
export const SETTINGS = {
  /** pino level of every process (global only). */
  log_level: { schema: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']), scopes: ['global'] },
  /** Zero-telemetry mode (README "Zero-telemetry mode"): product telemetry of the tenant off. */
  zero_telemetry: { schema: z.boolean(), scopes: ['global', 'tenant'] },
  /**
   * Model gateway rate limits (0 = unlimited), as FABRIC_GATEWAY_AGENT_RPM … but live. A tenant's
   * limits share the fabric's upstreams with every other tenant, so only a platform_admin sets
   * them, for a tenant too: its own admin could otherwise lift them.
   */
  gateway_agent_rpm: { schema: perMinute, scopes: ['global', 'tenant'], platformOnly: true },
  gateway_agent_tpm: { schema: perMinute, scopes: ['global', 'tenant'], platformOnly: true },
  gateway_tenant_rpm: { schema: perMinute, scopes: ['global', 'tenant'], platformOnly: true },
  gateway_tenant_tpm: { schema: perMinute, scopes: ['global', 'tenant'], platformOnly: true },
} as const satisfies Record<string, { schema: z.ZodType; scopes: readonly ('global' | 'tenant')[]; platformOnly?: boolean }>;

export type SettingKey = keyof typeof SETTINGS;
export type SettingValues = { [K in SettingKey]?: z.output<(typeof SETTINGS)[K]['schema']> };
export const SETTING_KEYS = Object.keys(SETTINGS) as SettingKey[];

/** PUT body: any subset of the settings; null unsets one (back to the global or environment value). */
export const SettingsPatch = z
  .object(Object.fromEntries(SETTING_KEYS.map((k) => [k, SETTINGS[k].schema.nullable().optional()])) as { [K in SettingKey]: z.ZodOptional<z.ZodNullable<(typeof SETTINGS)[K]['schema']>> })
  .strict()
  .refine((b) => Object.keys(b).length > 0, { message: `give at least one setting: ${SETTING_KEYS.join(', ')}` });
export type SettingsPatch = z.output<typeof SettingsPatch>;

/** Response: the settings stored for one scope (unset keys absent). */
export const SettingsView = z.object({
  scope: z.enum(['global', 'tenant']),
  tenant_id: z.string().nullable(),
  settings: z.record(z.string(), z.unknown()),
});
export type SettingsView = z.infer<typeof SettingsView>;

/** The settings stored for `tenantId` (null: the global ones). */
export async function readSettings(q: Queryable, tenantId: string | null): Promise<SettingValues> {
  const r = await q.query<{ key: string; value: unknown }>(
    `SELECT key, value FROM runtime_settings WHERE coalesce(tenant_id, '*') = coalesce($1::text, '*') ORDER BY key`,
    [tenantId],
  );
  return Object.fromEntries(r.rows.filter((row) => row.key in SETTINGS).map((row) => [row.key, row.value])) as SettingValues;
}

/**
 * Applies a patch to one scope (null value = unset), audited as `settings.update` with the
 * scope's settings before and after, and announced to every process after commit.
 */
export async function updateSettings(tx: Tx, actor: AuditActor, tenantId: string | null, patch: SettingsPatch): Promise<SettingValues> {
  const scope = tenantId === null ? 'global' : 'tenant';
  for (const key of Object.keys(patch) as SettingKey[]) {
    const setting: { scopes: readonly string[]; platformOnly?: boolean } = SETTINGS[key];
    if (!setting.scopes.includes(scope))
      throw badRequest('setting_not_allowed', `${key} is a ${setting.scopes.join(' or ')} setting; it cannot be set for a ${scope === 'tenant' ? 'tenant' : 'the whole fabric'}.`);
    if (setting.platformOnly && actor.role !== 'platform_admin')
      throw forbidden(`${key} is set by the platform's operators (platform_admin), for a tenant too: a tenant's model-call limits protect every tenant sharing the upstreams.`);
  }
  // one writer per scope at a time, so before/after in the audit row are exact
  await tx.query(`SELECT pg_advisory_xact_lock(hashtext('runtime_settings:' || coalesce($1::text, '*')))`, [tenantId]);
  const before = await readSettings(tx, tenantId);
  for (const [key, value] of Object.entries(patch)) {
    if (value === undefined) continue;
    if (value === null) {
      await tx.query(`DELETE FROM runtime_settings WHERE coalesce(tenant_id, '*') = coalesce($1::text, '*') AND key = $2`, [tenantId, key]);
    } else {
      await tx.query(
        `INSERT INTO runtime_settings (tenant_id, key, value, updated_by) VALUES ($1, $2, $3::jsonb, $4)
         ON CONFLICT ((coalesce(tenant_id, '*')), key) DO UPDATE SET value = EXCLUDED.value, updated_by = EXCLUDED.updated_by, updated_at = now()`,
        [tenantId, key, JSON.stringify(value), actor.sub],
      );
    }
  }
  const after = await readSettings(tx, tenantId);
  await recordAudit(tx, { tenantId, actor, action: 'settings.update', targetType: 'settings', targetId: tenantId ?? 'global', before, after });
  tx.notifyAfterCommit(OPERATOR_CHANNEL);
  return after;
}
