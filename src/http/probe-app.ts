import Fastify, { LogController, type FastifyBaseLogger } from 'fastify';
import { serializerCompiler, validatorCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod';
import { logger } from '../telemetry/index.js';
import { handleError } from './errors.js';
import { systemRoutes } from './routes/system.js';
import type { App, AppDeps } from './types.js';

/**
 * The HTTP listener of a worker-only process (`agent-fabric worker --metrics-port N`): /healthz,
 * /readyz and /metrics with this process's own series (tasks run and their durations, claim
 * latency, transactions), nothing else — no API, no token verifier.
 */
export async function buildProbeApp(deps: Pick<AppDeps, 'db' | 'config'>): Promise<App> {
  const app = Fastify({
    loggerInstance: logger() as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
  }).withTypeProvider<ZodTypeProvider>();
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  app.setErrorHandler(handleError);
  app.setNotFoundHandler((req, reply) => {
    void reply.code(404).send({
      error: { code: 'route_not_found', message: `A worker process serves /healthz, /readyz and /metrics only, not ${req.method} ${req.url.split('?')[0]}; the API runs in \`agent-fabric serve\`.` },
    });
  });
  systemRoutes(app, deps, { tableMetrics: false });
  await app.ready();
  return app;
}
