import { fabricFastify } from './fastify.js';
import { systemRoutes } from './routes/system.js';
import type { App, AppDeps } from './types.js';

/**
 * The HTTP listener of a worker-only process (`agent-fabric worker --metrics-port N`): /healthz,
 * /readyz and /metrics with this process's own series (tasks run and their durations, claim
 * latency, transactions), nothing else — no API, no token verifier.
 */
export async function buildProbeApp(deps: Pick<AppDeps, 'db' | 'config'>): Promise<App> {
  const app = fabricFastify({}, (method, path) => `A worker process serves /healthz, /readyz and /metrics only, not ${method} ${path}; the API runs in \`agent-fabric serve\`.`);
  systemRoutes(app, deps, { tableMetrics: false });
  await app.ready();
  return app;
}
