import type { Queryable } from '../db/index.js';
import { FabricError } from '../errors/index.js';
import type { SubmitTaskBody } from './schemas.js';

/**
 * How long tasks may run (managed-execution-prd V2-FR-RUN-006): a default per language/runtime
 * profile — an agent names its runtime in `entrypoint.runtime` — and a hard ceiling that no task
 * may exceed, set by the operator.
 */
export interface TimeoutPolicy {
  /** Default timeout_seconds per runtime; `default` applies to agents without (or with an unknown) runtime. */
  profiles: Readonly<Record<string, number>> & { default: number };
  /** No task runs longer than this; a submit asking for more is refused. */
  ceilingSeconds: number;
}

export const DEFAULT_TIMEOUT_POLICY: TimeoutPolicy = { profiles: { default: 600 }, ceilingSeconds: 7 * 86_400 };

/** How long an agent's runtime is remembered (it only picks a default). */
const RUNTIME_CACHE_MS = 10_000;
const runtimes = new Map<string, { runtime: string | null; until: number }>();

async function runtimesOf(q: Queryable, tenantId: string, agentIds: string[]): Promise<Map<string, string | null>> {
  const now = Date.now();
  const found = new Map<string, string | null>();
  const missing: string[] = [];
  for (const id of agentIds) {
    const hit = runtimes.get(`${tenantId}/${id}`);
    if (hit && hit.until > now) found.set(id, hit.runtime);
    else missing.push(id);
  }
  if (missing.length) {
    const r = await q.query<{ id: string; runtime: string | null }>(`SELECT id, entrypoint ->> 'runtime' AS runtime FROM agents WHERE tenant_id = $1 AND id = ANY ($2::uuid[])`, [tenantId, missing]);
    for (const row of r.rows) {
      found.set(row.id, row.runtime);
      runtimes.set(`${tenantId}/${row.id}`, { runtime: row.runtime, until: now + RUNTIME_CACHE_MS });
    }
    if (runtimes.size > 10_000) runtimes.clear();
  }
  return found;
}

/**
 * Each task's timeout_seconds: as asked (refused with 400 timeout_above_ceiling past the
 * ceiling), else its agent's runtime profile, else the default profile — never above the ceiling.
 */
export async function resolveTimeouts(q: Queryable, tenantId: string, inputs: readonly SubmitTaskBody[], policy: TimeoutPolicy): Promise<number[]> {
  const over = inputs.find((t) => t.timeout_seconds !== undefined && t.timeout_seconds > policy.ceilingSeconds);
  if (over)
    throw new FabricError(400, 'timeout_above_ceiling', `timeout_seconds ${over.timeout_seconds} is above this fabric's ceiling of ${policy.ceilingSeconds} s; ask for at most that (the operator sets FABRIC_TASK_TIMEOUT_CEILING_SECONDS).`, {
      ceiling_seconds: policy.ceilingSeconds,
    });
  const open = inputs.filter((t) => t.timeout_seconds === undefined);
  const byRuntime = Object.keys(policy.profiles).length > 1 && open.length ? await runtimesOf(q, tenantId, [...new Set(open.map((t) => t.agent_id))]) : new Map<string, string | null>();
  return inputs.map((t) => {
    if (t.timeout_seconds !== undefined) return t.timeout_seconds;
    const runtime = byRuntime.get(t.agent_id);
    const profile = (runtime && Object.hasOwn(policy.profiles, runtime) ? policy.profiles[runtime] : undefined) ?? policy.profiles.default;
    return Math.min(profile, policy.ceilingSeconds);
  });
}
