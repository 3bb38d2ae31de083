import { Counter } from 'prom-client';
import { registry } from '../telemetry/index.js';

export const erasureRequestsTotal = new Counter({
  name: 'agent_fabric_erasure_requests_total',
  help: 'Erasure requests by subject type and outcome (accepted: a new request; completed: every store erased).',
  labelNames: ['subject_type', 'outcome'] as const,
  registers: [registry],
});

export const retentionDeletedTotal = new Counter({
  name: 'agent_fabric_retention_deleted_total',
  help: 'Rows (and files) hard-deleted by the retention sweeper, by kind.',
  labelNames: ['kind'] as const,
  registers: [registry],
});

export const retentionSweepsTotal = new Counter({
  name: 'agent_fabric_retention_sweeps_total',
  help: 'Retention sweeps by outcome (ok, failed, skipped: another process holds the sweep lock).',
  labelNames: ['outcome'] as const,
  registers: [registry],
});
