import Fastify, { LogController, type FastifyBaseLogger, type FastifyServerOptions } from 'fastify';
import { serializerCompiler, validatorCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod';
import { logger } from '../telemetry/index.js';
import { handleError } from './errors.js';
import type { App } from './types.js';

/**
 * A Fastify instance as every fabric listener has it: the process logger (no built-in request
 * lines: the API writes its own access line), zod schemas, the error envelope, and a 404
 * `route_not_found` whose message says what this listener serves (`notFound`).
 */
export function fabricFastify(options: FastifyServerOptions, notFound: (method: string, path: string) => string): App {
  const app = Fastify({
    loggerInstance: logger() as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    ...options,
  }).withTypeProvider<ZodTypeProvider>();
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  app.setErrorHandler(handleError);
  app.setNotFoundHandler((req, reply) => {
    void reply.code(404).send({ error: { code: 'route_not_found', message: notFound(req.method, req.url.split('?')[0]!) } });
  });
  return app;
}
