import { Counter, Histogram } from 'prom-client';
import { registry } from '../telemetry/index.js';

/** Tokens by agent and model are agent_fabric_tokens_total (the budget module counts them when a call is metered). */
export const upstreamLatency = new Histogram({
  name: 'agent_fabric_gateway_upstream_duration_seconds',
  help: 'Time from sending a model call upstream to its last byte (a stream: its end), by upstream, model and outcome (ok | error).',
  labelNames: ['upstream', 'model', 'outcome'] as const,
  buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
  registers: [registry],
});

export const gatewayErrors = new Counter({
  name: 'agent_fabric_gateway_errors_total',
  help: 'Model gateway calls answered with an error, by error code.',
  labelNames: ['code'] as const,
  registers: [registry],
});

export const gatewayCalls = new Counter({
  name: 'agent_fabric_gateway_calls_total',
  help: 'Model calls forwarded upstream, by model and how they ended (complete | client_disconnected | cancelled | upstream_error).',
  labelNames: ['model', 'outcome'] as const,
  registers: [registry],
});
