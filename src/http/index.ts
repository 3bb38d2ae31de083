export { buildApp, type AppOptions } from './app.js';
export { buildProbeApp } from './probe-app.js';
export { sweepIdempotencyKeys } from './idempotency.js';
export type { App, AppDeps } from './types.js';
