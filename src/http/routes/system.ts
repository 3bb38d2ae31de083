import { z } from 'zod';
import { pendingMigrations } from '../../db/index.js';
import { trackTableMetrics } from '../../alerts/index.js';
import { registry } from '../../telemetry/index.js';
import { checkMetricsToken } from '../metrics-auth.js';
import type { App, AppDeps } from '../types.js';

const Health = z.object({ status: z.literal('ok') });
const Ready = z.object({
  status: z.enum(['ready', 'not_ready']),
  checks: z.object({ database: z.enum(['ok', 'unreachable']), migrations: z.enum(['ok', 'pending', 'unknown']) }),
  pending_migrations: z.array(z.number()),
});

/**
 * Liveness and readiness (no authentication: probes) and Prometheus metrics (a bearer token when
 * FABRIC_METRICS_TOKEN is set). `tableMetrics`: also the gauges read from the tables at scrape
 * time (queue depth, storage…) — the API processes serve those; a worker's listener leaves them
 * out so a sum over instances does not count them twice.
 */
export function systemRoutes(app: App, deps: Pick<AppDeps, 'db' | 'config'>, { tableMetrics = true } = {}): void {
  if (tableMetrics) trackTableMetrics(deps.db, deps.config.metrics.cacheMs);
  app.get('/healthz', { schema: { tags: ['system'], summary: 'Liveness: the process answers', response: { 200: Health } } }, async () => ({ status: 'ok' as const }));

  app.get(
    '/readyz',
    { schema: { tags: ['system'], summary: 'Readiness: database reachable and migrations applied', response: { 200: Ready, 503: Ready } } },
    async (_req, reply) => {
      let database: 'ok' | 'unreachable' = 'ok';
      let migrations: 'ok' | 'pending' | 'unknown' = 'unknown';
      let pending: number[] = [];
      try {
        await deps.db.query('SELECT 1');
        pending = await pendingMigrations(deps.db);
        migrations = pending.length ? 'pending' : 'ok';
      } catch {
        database = 'unreachable';
      }
      const ready = database === 'ok' && migrations === 'ok';
      return reply.code(ready ? 200 : 503).send({ status: ready ? 'ready' : 'not_ready', checks: { database, migrations }, pending_migrations: pending });
    },
  );

  app.get('/metrics', { schema: { tags: ['system'], summary: 'Prometheus metrics', hide: true } }, async (req, reply) => {
    checkMetricsToken(req, deps.config.metricsToken);
    const text = await registry.metrics();
    return reply.type(registry.contentType).send(text);
  });
}
