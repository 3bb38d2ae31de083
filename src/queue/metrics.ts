import { Gauge } from 'prom-client';
import type { Queryable } from '../db/index.js';
import { agentLabel, registry } from '../telemetry/index.js';

/** Agents with the most unfinished tasks that get their own series; the rest are summed under agent_id="_other". */
const MAX_AGENT_SERIES = 200;

let source: Queryable | undefined;

interface Row {
  tenant_id: string;
  agent_id: string;
  depth: number;
  running: number;
}

async function readQueues(): Promise<Row[]> {
  if (!source) return [];
  const r = await source.query<Row>(
    `SELECT tenant_id, agent_id::text, count(*) FILTER (WHERE status IN ('queued', 'waiting'))::int AS depth,
            count(*) FILTER (WHERE status = 'running')::int AS running
       FROM tasks WHERE status IN ('queued', 'waiting', 'running')
      GROUP BY tenant_id, agent_id ORDER BY count(*) DESC`,
  );
  return r.rows;
}

function setCapped(gauge: Gauge<'agent_id'>, rows: Row[], pick: (r: Row) => number): void {
  gauge.reset();
  let other = 0;
  rows.forEach((r, i) => (i < MAX_AGENT_SERIES ? gauge.inc({ agent_id: agentLabel(r.tenant_id, r.agent_id) }, pick(r)) : (other += pick(r))));
  if (other > 0) gauge.set({ agent_id: '_other' }, other);
}

// One read per scrape serves both gauges.
let pending: Promise<Row[]> | undefined;
const snapshot = () => (pending ??= readQueues().finally(() => setTimeout(() => (pending = undefined), 0)));

new Gauge({
  name: 'agent_fabric_queue_depth',
  help: `Unfinished tasks not running (queued + waiting) per agent (queue.depth; alert above 75). Top ${MAX_AGENT_SERIES} agents, the rest as agent_id="_other".`,
  labelNames: ['agent_id'] as const,
  registers: [registry],
  async collect() {
    setCapped(this, await snapshot(), (r) => r.depth);
  },
});

new Gauge({
  name: 'agent_fabric_tasks_running',
  help: `Running tasks per agent. Top ${MAX_AGENT_SERIES} agents, the rest as agent_id="_other".`,
  labelNames: ['agent_id'] as const,
  registers: [registry],
  async collect() {
    setCapped(this, await snapshot(), (r) => r.running);
  },
});

/** Points the queue gauges at a database (the API process calls this once). */
export function trackQueueMetrics(db: Queryable): void {
  source = db;
}
