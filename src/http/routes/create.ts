import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { z } from 'zod';
import type { Principal, Role } from '../../auth/index.js';
import type { Tx } from '../../db/index.js';
import { requireRole } from '../auth.js';
import { errorResponses } from '../errors.js';
import { createOnce, IdempotencyHeaders } from '../idempotency.js';
import type { App, AppDeps } from '../types.js';

export interface CreateRouteSpec<B extends z.ZodType, R extends z.ZodType> {
  url: string;
  tags: string[];
  summary: string;
  body: B;
  /** The 201 body, replayed with 200 for a repeated Idempotency-Key. */
  response: R;
  /** Who may create (platform_admin always may); `[]` = platform_admin only. */
  roles: readonly Role[];
  /** For the 403 message: "Role x may not <doing>". */
  doing: string;
  /** Replaces the role check when who may create depends on the body (e.g. an agent for itself). */
  authorize?: (req: FastifyRequest, body: z.output<B>) => Principal;
  /** Also accept the `idempotency_key` body field. */
  bodyKey?: boolean;
  /** The transaction's name in rollback logs. */
  name: string;
  create: (tx: Tx, actor: Principal, body: z.output<B>) => Promise<z.output<R>>;
  /**
   * For a create that is atomic by itself (one statement): used when the request has no
   * idempotency key, so no transaction is opened around it.
   */
  createDirect?: (actor: Principal, body: z.output<B>) => Promise<z.output<R>>;
  /** Runs (and is awaited) once the create has committed, not on a replay: e.g. to bring this process's caches up to date before answering. */
  afterCommit?: () => Promise<void>;
}

/** A POST that creates something: role check, idempotency, one transaction, 201. */
export function createRoute<B extends z.ZodType, R extends z.ZodType>(app: App, deps: AppDeps, spec: CreateRouteSpec<B, R>): void {
  // Typed loosely on purpose: the generic body/response types defeat the type provider's
  // inference, and validation still runs (the schemas are zod, compiled by the app).
  (app as unknown as FastifyInstance).post(
    spec.url,
    {
      schema: {
        tags: spec.tags,
        security: [{ bearerAuth: [] }],
        summary: spec.summary,
        headers: IdempotencyHeaders,
        body: spec.body,
        response: { 201: spec.response, 200: spec.response, ...errorResponses },
      },
    },
    async (req, reply) => {
      const input = req.body as z.output<B>;
      const actor = spec.authorize ? spec.authorize(req, input) : requireRole(req, spec.roles, spec.doing);
      const { status, body } = await createOnce(
        req,
        deps.db,
        deps.config.idempotencyTtlSeconds,
        spec.name,
        async (tx) => ({ status: 201, body: await spec.create(tx, actor, input) }),
        {
          bodyField: spec.bodyKey ?? false,
          ...(spec.createDirect ? { direct: async () => ({ status: 201, body: await spec.createDirect!(actor, input) }) } : {}),
        },
      );
      if (status === 201) await spec.afterCommit?.();
      return reply.code(status).send(body);
    },
  );
}
