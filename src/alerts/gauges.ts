import { Gauge } from 'prom-client';
import type { Queryable } from '../db/index.js';
import { capAgentSeries, registry, type AgentSeries, type CounterWindows } from '../telemetry/index.js';
import { CachedSignals, type TableSignals } from './signals.js';

let signals: CachedSignals | undefined;
let windows: CounterWindows | undefined;

/** Points the table gauges at a database, with reads cached for `cacheMs` (the API process calls this once). */
export function trackTableMetrics(db: Queryable, cacheMs: number): void {
  signals = new CachedSignals(db, cacheMs);
}

/** The counter windows agent_fabric_transactions_rollback_rate is computed from (the alert runtime's). */
export function trackRollbackRate(source: CounterWindows | undefined): void {
  windows = source;
}

type TenantAgentGauge = Gauge<'tenant_id' | 'agent_id'>;

function setAgentSeries(gauge: TenantAgentGauge, rows: AgentSeries[], fold: 'sum' | 'max'): void {
  gauge.reset();
  for (const r of capAgentSeries(rows, fold)) gauge.set({ tenant_id: r.tenant_id, agent_id: r.agent_id }, r.value);
}

/** A gauge per agent read from the tables at scrape time, capped by the agent label helper. */
function agentGauge(name: string, help: string, fold: 'sum' | 'max', pick: (s: TableSignals) => AgentSeries[]): void {
  new Gauge({
    name,
    help: `${help} Read from the database at scrape time; agent_id capped (FABRIC_METRICS_MAX_AGENT_LABELS, the rest folded into "_other" by ${fold}).`,
    labelNames: ['tenant_id', 'agent_id'] as const,
    registers: [registry],
    async collect() {
      if (signals) setAgentSeries(this, pick(await signals.read()), fold);
    },
  });
}

agentGauge('agent_fabric_queue_depth', 'Unfinished tasks not running (queued + waiting) per agent (queue.depth; alert above 75).', 'sum', (s) =>
  s.queues.map((q) => ({ tenant_id: q.tenant_id, agent_id: q.agent_id, value: q.depth })),
);
agentGauge('agent_fabric_tasks_running', 'Running tasks per agent.', 'sum', (s) => s.queues.map((q) => ({ tenant_id: q.tenant_id, agent_id: q.agent_id, value: q.running })));
agentGauge('agent_fabric_quota_tokens_pct', "Tokens used of the agent's monthly token limit, 0–100 (quota.tokens_pct; alert above 80).", 'max', (s) =>
  s.quotas.map((q) => ({ tenant_id: q.tenant_id, agent_id: q.agent_id, value: q.tokens_pct })),
);
agentGauge('agent_fabric_files_storage_pct', "Bytes of files kept of the agent's storage limit, 0–100 (files.storage_pct; alert above 90).", 'max', (s) =>
  s.quotas.map((q) => ({ tenant_id: q.tenant_id, agent_id: q.agent_id, value: q.storage_pct })),
);

/** A gauge per tenant read from the tables at scrape time. */
function tenantGauge(name: string, help: string, pick: (s: TableSignals) => { tenant_id: string; value: number }[]): void {
  new Gauge({
    name,
    help: `${help} Read from the database at scrape time.`,
    labelNames: ['tenant_id'] as const,
    registers: [registry],
    async collect() {
      if (!signals) return;
      const rows = pick(await signals.read());
      this.reset();
      for (const r of rows) this.set({ tenant_id: r.tenant_id }, r.value);
    },
  });
}

tenantGauge('agent_fabric_tasks_dead_lettered', 'Tasks now in the dead letters (not re-driven), per tenant (tasks.dead_lettered; alert above 0).', (s) =>
  s.deadLetters.map((r) => ({ tenant_id: r.tenant_id, value: r.dead_lettered })),
);
tenantGauge('agent_fabric_agents_active', 'Agents that may run tasks (status active, not deleted), per tenant.', (s) =>
  s.activeAgents.map((r) => ({ tenant_id: r.tenant_id, value: r.active })),
);

new Gauge({
  name: 'agent_fabric_transactions_rollback_rate',
  help: 'Share of this process\'s withTransaction calls that rolled back over the alert window (FABRIC_ALERT_WINDOW_SECONDS), 0–1 (transactions.rollback_rate; alert above 0.01). Fleet-wide: sum(rate(agent_fabric_transactions_total{outcome="rollback"}[5m])) / sum(rate(agent_fabric_transactions_total[5m])).',
  registers: [registry],
  collect() {
    if (!windows) return;
    const w = windows.stats().window;
    const total = w.tx_commit + w.tx_rollback;
    this.set(total > 0 ? w.tx_rollback / total : 0);
  },
});
