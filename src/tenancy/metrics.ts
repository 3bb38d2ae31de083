import type { Queryable } from '../db/index.js';

/** Agents that may run tasks (status active, not deleted), per tenant (0 for a tenant with none): agent_fabric_agents_active. */
export async function readActiveAgentCounts(q: Queryable): Promise<{ tenant_id: string; active: number }[]> {
  const r = await q.query<{ tenant_id: string; active: number }>(
    `SELECT t.id AS tenant_id, count(a.id)::int AS active
       FROM tenants t LEFT JOIN agents a ON a.tenant_id = t.id AND a.status = 'active' AND a.deleted_at IS NULL
      GROUP BY t.id`,
  );
  return r.rows;
}
