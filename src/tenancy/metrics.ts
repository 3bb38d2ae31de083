import type { Queryable } from '../db/index.js';

/** Agents that may run tasks (status active, not deleted), per tenant: agent_fabric_agents_active. */
export async function readActiveAgentCounts(q: Queryable): Promise<{ tenant_id: string; active: number }[]> {
  const r = await q.query<{ tenant_id: string; active: number }>(
    `SELECT tenant_id, count(*)::int AS active FROM agents WHERE status = 'active' AND deleted_at IS NULL GROUP BY tenant_id`,
  );
  return r.rows;
}
