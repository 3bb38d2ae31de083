export { runWithContext, addToContext, currentContext, type LogContext } from './context.js';
export { createLogger, logger, setLogger, REDACT_PATHS, type LoggerOptions } from './logger.js';
export { registry, httpRequestsTotal, httpRequestDuration, transactionsTotal, tasksTotal, taskDuration, taskClaimLatency } from './metrics.js';
export { scrubText, scrubError } from './scrub.js';
export {
  startTracing,
  stopTracing,
  tracingEnabled,
  startSpan,
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
