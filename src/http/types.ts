import type { FastifyBaseLogger, FastifyInstance, RawReplyDefaultExpression, RawRequestDefaultExpression, RawServerDefault } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import type { Principal, TokenVerifier } from '../auth/index.js';
import type { FabricConfig } from '../config/index.js';
import type { Db } from '../db/index.js';
import type { AgentScheduler } from '../queue/index.js';

/** The Fastify instance with zod schemas as its type provider. */
export type App = FastifyInstance<
  RawServerDefault,
  RawRequestDefaultExpression<RawServerDefault>,
  RawReplyDefaultExpression<RawServerDefault>,
  FastifyBaseLogger,
  ZodTypeProvider
>;

/** What the HTTP layer needs from the rest of the fabric. */
export interface AppDeps {
  db: Db;
  config: FabricConfig;
  verifyToken: TokenVerifier;
  /** The task queue's library surface; the routes call it. */
  scheduler: AgentScheduler;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by the auth hook on every /api request. */
    principal?: Principal;
  }
}
