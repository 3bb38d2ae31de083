import { z } from 'zod';
import { recordAudit, type AuditActor } from '../audit/index.js';
import type { Queryable, Tx } from '../db/index.js';
import { conflict, notFound } from '../errors/index.js';
import { TENANT_TIME_ZONE_SQL } from './period.js';
import { DIMENSIONS, UNITS, type Dimension } from './units.js';

const Micros = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);

/** What a plan includes of one dimension per month and what it charges past that. */
export const DimensionTerms = z
  .object({
    included: Micros.nullable().describe('per month, in the unit of included_unit; null = unlimited'),
    overage_rate_micros: Micros.describe('integer micro-USD per rate_unit past the included quantity'),
  })
  .strict();
export type DimensionTerms = z.infer<typeof DimensionTerms>;

const DimensionsTerms = z
  .object(Object.fromEntries(DIMENSIONS.map((d) => [d, DimensionTerms])) as Record<Dimension, typeof DimensionTerms>)
  .strict();

/** Feature flags and caps a plan grants; server-side only (managed-execution-prd V2-FR-ENT-002). */
export const Entitlements = z
  .object({
    remote_execution: z.boolean().describe('tasks of agents with isolation process or container (server sandboxes)'),
    max_concurrency: z.number().int().min(1).max(10_000).nullable().describe("the highest agent max_concurrency; null = no cap"),
  })
  .catchall(z.boolean())
  .describe('other keys are boolean feature flags');
export type Entitlements = z.infer<typeof Entitlements>;

const PlanId = z.string().regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, 'use 1–63 lowercase letters, digits, _ and -');

export const CreatePlanBody = z
  .object({
    id: PlanId,
    name: z.string().min(1).max(100),
    description: z.string().max(2000).nullable().default(null),
    base_fee_micros: Micros.describe('monthly subscription fee, integer micro-USD'),
    dimensions: DimensionsTerms,
    entitlements: Entitlements,
    self_service: z.boolean().default(true).describe('false: only a platform_admin may subscribe a tenant to it'),
  })
  .strict();
export type CreatePlanBody = z.infer<typeof CreatePlanBody>;

export const UpdatePlanBody = CreatePlanBody.omit({ id: true })
  .extend({ description: z.string().max(2000).nullable() })
  .partial()
  .strict()
  .refine((b) => Object.keys(b).length > 0, 'send at least one field to change');
export type UpdatePlanBody = z.infer<typeof UpdatePlanBody>;

/** The terms a period is priced with (snapshotted in subscription_plan_history). */
export interface PlanTerms {
  plan_id: string;
  name: string;
  base_fee_micros: number;
  dimensions: Record<Dimension, DimensionTerms>;
  entitlements: Entitlements;
}

const DimensionOut = DimensionTerms.extend({ included_unit: z.string(), rate_unit: z.string() });
export const Plan = z.object({
  id: z.string(),
  name: z.string(),
  description: z.string().nullable(),
  base_fee_micros: z.number().int(),
  dimensions: z.object(Object.fromEntries(DIMENSIONS.map((d) => [d, DimensionOut])) as Record<Dimension, typeof DimensionOut>),
  entitlements: Entitlements,
  self_service: z.boolean(),
  created_at: z.string(),
  updated_at: z.string(),
});
export type Plan = z.infer<typeof Plan>;

interface PlanRow {
  id: string;
  name: string;
  description: string | null;
  base_fee_micros: number;
  dimensions: Record<Dimension, DimensionTerms>;
  entitlements: Entitlements;
  self_service: boolean;
  created_at: Date;
  updated_at: Date;
}

function toPlan(row: PlanRow): Plan {
  const dimensions = Object.fromEntries(
    DIMENSIONS.map((d) => [d, { ...row.dimensions[d], included_unit: UNITS[d].includedLabel, rate_unit: UNITS[d].rateLabel }]),
  ) as Plan['dimensions'];
  return { ...row, dimensions, created_at: row.created_at.toISOString(), updated_at: row.updated_at.toISOString() };
}

/** The pricing part of a plan, as a period is billed with it. */
export function termsOf(plan: Pick<Plan, 'id' | 'name' | 'base_fee_micros' | 'dimensions' | 'entitlements'>): PlanTerms {
  const dimensions = Object.fromEntries(
    DIMENSIONS.map((d) => [d, { included: plan.dimensions[d].included, overage_rate_micros: plan.dimensions[d].overage_rate_micros }]),
  ) as PlanTerms['dimensions'];
  return { plan_id: plan.id, name: plan.name, base_fee_micros: plan.base_fee_micros, dimensions, entitlements: plan.entitlements };
}

export async function listPlans(q: Queryable): Promise<Plan[]> {
  const r = await q.query<PlanRow>('SELECT * FROM billing_plans ORDER BY base_fee_micros, id');
  return r.rows.map(toPlan);
}

/** The plan `id`, or a 404. */
export async function getPlan(q: Queryable, id: string): Promise<Plan> {
  const r = await q.query<PlanRow>('SELECT * FROM billing_plans WHERE id = $1', [id]);
  if (!r.rows[0]) throw notFound('plan', id);
  return toPlan(r.rows[0]);
}

/** Creates a plan (platform_admin); 409 plan_exists if the id is taken. Audited. */
export async function createPlan(tx: Tx, actor: AuditActor, body: CreatePlanBody): Promise<Plan> {
  const r = await tx.query<PlanRow>(
    `INSERT INTO billing_plans (id, name, description, base_fee_micros, dimensions, entitlements, self_service)
     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING RETURNING *`,
    [body.id, body.name, body.description, body.base_fee_micros, JSON.stringify(body.dimensions), JSON.stringify(body.entitlements), body.self_service],
  );
  if (!r.rows[0]) throw conflict('plan_exists', `A plan with id "${body.id}" already exists; choose another id or PATCH /api/plans/${body.id}.`);
  const plan = toPlan(r.rows[0]);
  await recordAudit(tx, { tenantId: null, actor, action: 'plan.create', targetType: 'plan', targetId: plan.id, after: plan });
  return plan;
}

/**
 * Changes a plan (platform_admin). New subscriptions get the new terms at once; every tenant
 * already on the plan gets them from its next billing period (a history row effective then),
 * so a period already running or billed is never repriced. Audited.
 */
export async function updatePlan(tx: Tx, actor: AuditActor, id: string, patch: UpdatePlanBody, now: Date): Promise<Plan> {
  const before = await getPlan(tx, id);
  const r = await tx.query<PlanRow>(
    `UPDATE billing_plans SET name = $2, description = $3, base_fee_micros = $4, dimensions = $5, entitlements = $6,
            self_service = $7, updated_at = now()
      WHERE id = $1 RETURNING *`,
    [
      id,
      patch.name ?? before.name,
      patch.description !== undefined ? patch.description : before.description,
      patch.base_fee_micros ?? before.base_fee_micros,
      JSON.stringify(patch.dimensions ?? termsOf(before).dimensions),
      JSON.stringify(patch.entitlements ?? before.entitlements),
      patch.self_service ?? before.self_service,
    ],
  );
  const after = toPlan(r.rows[0]!);
  await tx.query(
    `INSERT INTO subscription_plan_history (tenant_id, plan_id, terms, effective_at, reason)
     SELECT s.tenant_id, s.plan_id, $2::jsonb,
            (date_trunc('month', $3::timestamptz AT TIME ZONE z.tz) + interval '1 month') AT TIME ZONE z.tz, 'plan_updated'
       FROM subscriptions s
       JOIN LATERAL (SELECT ${TENANT_TIME_ZONE_SQL} AS tz FROM tenants t WHERE t.id = s.tenant_id) z ON true
      WHERE s.plan_id = $1 AND s.status <> 'cancelled'`,
    [id, JSON.stringify(termsOf(after)), now.toISOString()],
  );
  await recordAudit(tx, { tenantId: null, actor, action: 'plan.update', targetType: 'plan', targetId: id, before, after });
  return after;
}
