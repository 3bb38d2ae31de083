export { runWithContext, addToContext, currentContext, type LogContext } from './context.js';
export { createLogger, logger, setLogger, REDACT_PATHS, type LoggerOptions } from './logger.js';
export { registry, httpRequestsTotal, httpRequestDuration, transactionsTotal, tasksTotal, taskDuration, taskClaimLatency } from './metrics.js';
export { agentLabel, setZeroTelemetryLookup, telemetryAllowed, TELEMETRY_KINDS, ZERO_TELEMETRY_LABEL, type TelemetryKind } from './zero-telemetry.js';
