import { Counter, Histogram } from 'prom-client';
import { registry } from '../telemetry/index.js';

export const policyDecisionsTotal = new Counter({
  name: 'agent_fabric_policy_decisions_total',
  help: 'Policy decisions made by this process, by decision (allow | deny | require_approval).',
  labelNames: ['decision'] as const,
  registers: [registry],
});

export const policyEvaluationSeconds = new Histogram({
  name: 'agent_fabric_policy_evaluation_seconds',
  help: 'Time to evaluate one policy check in process (rules compiled and cached; excludes loading after a change).',
  buckets: [0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.005],
  registers: [registry],
});

export const policyDecisionLogDropped = new Counter({
  name: 'agent_fabric_policy_decision_log_dropped_total',
  help: 'Decisions that could not be written to policy_decisions (the database refused the batch twice, or the buffer overflowed).',
  registers: [registry],
});
