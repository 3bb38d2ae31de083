import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** The one registry `/metrics` serves; every capability registers its metrics here. */
export const registry = new Registry();
collectDefaultMetrics({ register: registry, prefix: 'agent_fabric_' });

export const httpRequestsTotal = new Counter({
  name: 'agent_fabric_http_requests_total',
  help: 'HTTP requests served, by method, route template and status code.',
  labelNames: ['method', 'route', 'status'] as const,
  registers: [registry],
});

export const httpRequestDuration = new Histogram({
  name: 'agent_fabric_http_request_duration_seconds',
  help: 'HTTP request latency, by method, route template and status code.',
  labelNames: ['method', 'route', 'status'] as const,
  buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
  registers: [registry],
});

export const transactionsTotal = new Counter({
  name: 'agent_fabric_transactions_total',
  help: 'Database transactions run through withTransaction, by outcome (commit | rollback).',
  labelNames: ['outcome'] as const,
  registers: [registry],
});

export const tasksTotal = new Counter({
  name: 'agent_fabric_tasks_total',
  help: 'Task attempts that ended, by agent and the status the task moved to (agent_id capped: FABRIC_METRICS_MAX_AGENT_LABELS, the rest "_other").',
  labelNames: ['agent_id', 'status'] as const,
  registers: [registry],
});

export const taskDuration = new Histogram({
  name: 'agent_fabric_task_duration_seconds',
  help: 'Run time of task attempts, by outcome.',
  labelNames: ['status'] as const,
  buckets: [0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 600, 1800],
  registers: [registry],
});

export const taskClaimLatency = new Histogram({
  name: 'agent_fabric_task_claim_latency_seconds',
  help: 'Time a ready task waited in the queue before a worker claimed it.',
  buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
  registers: [registry],
});
