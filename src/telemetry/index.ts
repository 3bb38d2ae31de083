export { runWithContext, addToContext, currentContext, type LogContext } from './context.js';
export { createLogger, logger, setLogger, REDACT_PATHS, type LoggerOptions } from './logger.js';
export { registry, httpRequestsTotal, httpRequestDuration, transactionsTotal, tasksTotal, taskDuration, taskClaimLatency } from './metrics.js';
export { agentLabel, capAgentSeries, configureAgentLabels, agentLabelOptions, OTHER_AGENTS, ALL_AGENTS, type AgentLabelOptions, type AgentSeries } from './agent-labels.js';
export { memoryEmbedLatency, histogramQuantile, EMBED_LATENCY_BUCKETS } from './monitor-metrics.js';
export { CounterWindows, sumCounts, FAILED_ATTEMPT_STATUSES, type WindowCounts, type WindowStats } from './window-stats.js';
export { setZeroTelemetryLookup, telemetryAllowed, TELEMETRY_KINDS, ZERO_TELEMETRY_LABEL, type TelemetryKind } from './zero-telemetry.js';
export { scrubText, scrubError } from './scrub.js';
export {
  startTracing,
  stopTracing,
  tracingEnabled,
  startSpan,
  annotateActiveSpan,
  withActiveSpan,
  endSpan,
  activeTraceparent,
  contextFromTraceparent,
  activeTraceIds,
  startServerSpan,
  startLinkedSpan,
  traceparentOf,
  requestContinuesTrace,
  SpanKind,
  SpanStatusCode,
  type Span,
  type TracingOptions,
} from './tracing.js';
