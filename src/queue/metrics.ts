import type { Queryable } from '../db/index.js';

/** Unfinished tasks of one agent: waiting their turn (queued + waiting) and running. */
export interface QueueCounts {
  tenant_id: string;
  agent_id: string;
  depth: number;
  running: number;
}

/** Queue depth and running tasks per agent, every tenant (the queue gauges and the queue_depth alert rule). */
export async function readQueueCounts(q: Queryable): Promise<QueueCounts[]> {
  const r = await q.query<QueueCounts>(
    `SELECT tenant_id, agent_id::text, count(*) FILTER (WHERE status IN ('queued', 'waiting'))::int AS depth,
            count(*) FILTER (WHERE status = 'running')::int AS running
       FROM tasks WHERE status IN ('queued', 'waiting', 'running')
      GROUP BY tenant_id, agent_id`,
  );
  return r.rows;
}

/** Tasks now in the dead letters (not re-driven), per tenant, 0 for a tenant with none (index tasks_dead_lettered, migration 0018). */
export async function readDeadLetterCounts(q: Queryable): Promise<{ tenant_id: string; dead_lettered: number }[]> {
  const r = await q.query<{ tenant_id: string; dead_lettered: number }>(
    `SELECT tn.id AS tenant_id, count(t.id)::int AS dead_lettered
       FROM tenants tn LEFT JOIN tasks t ON t.tenant_id = tn.id AND t.status = 'dead_lettered'
      GROUP BY tn.id`,
  );
  return r.rows;
}
