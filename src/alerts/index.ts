export { startAlertRuntime, applyBreaches, type AlertRuntime, type AlertRuntimeOptions, type Evaluation } from './runtime.js';
export { resolveRules, findBreaches, type AlertRule, type Breach, type FleetCounts, type Severity } from './rules.js';
export { readTableSignals, CachedSignals, type TableSignals } from './signals.js';
export { trackTableMetrics, trackRollbackRate } from './gauges.js';
export { AlertView, listAlerts, getAlert, resolveAlertByHand, toView, type AlertScope, type AlertRow } from './store.js';
export { resolvedMessage, firingMessage } from './messages.js';
