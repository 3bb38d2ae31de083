import type { FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { FabricError } from '../../errors/index.js';
import { gatewayErrors } from '../../gateway/metrics.js';
import { openAiErrorBody, type Gateway, type Responder } from '../../gateway/index.js';
import { addToContext, logger } from '../../telemetry/index.js';
import { mapError } from '../errors.js';
import type { App } from '../types.js';

const tags = ['model gateway'];
const security = [{ bearerAuth: [] }];
const OpenAiError = z.object({ error: z.looseObject({ message: z.string(), type: z.string(), code: z.string().nullable(), param: z.string().nullable() }) });
const errors = { '4xx': OpenAiError, '5xx': OpenAiError } as const;
const AnyBody = z.looseObject({}).describe('an OpenAI request body: passed to the provider as sent (max_tokens and stream_options.include_usage may be added)');

/** Answers an error in OpenAI's shape, with retry-after when the error carries one. */
function sendOpenAiError(err: unknown, req: FastifyRequest, reply: FastifyReply): void {
  const m = mapError(err);
  if (m.status >= 500 && !(err instanceof FabricError)) logger().error({ err, route: req.routeOptions.url }, `gateway request failed: ${(err as Error)?.message}`);
  gatewayErrors.inc({ code: m.code });
  const retry = m.details?.retry_after_seconds;
  if (typeof retry === 'number') void reply.header('retry-after', String(Math.ceil(retry)));
  // a budget refusal does not pass by retrying: the openai client honours this header
  if (m.code === 'quota_exceeded') void reply.header('x-should-retry', 'false');
  void reply.code(m.status).send(openAiErrorBody(m));
}

/** The reply as the gateway's Responder: JSON, or a hijacked event stream. */
function responder(req: FastifyRequest, reply: FastifyReply): Responder & { streaming: boolean } {
  const gone = new AbortController();
  reply.raw.on('close', () => {
    if (!reply.raw.writableEnded) gone.abort();
  });
  const r = {
    streaming: false,
    gone: gone.signal,
    json(status: number, body: unknown, headers: Record<string, string>) {
      void reply.code(status).headers(headers).send(body);
    },
    startStream(headers: Record<string, string>) {
      r.streaming = true;
      reply.hijack();
      reply.raw.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-request-id': req.id, ...headers });
    },
    write(text: string) {
      if (!reply.raw.writableEnded) reply.raw.write(text);
    },
    end() {
      if (!reply.raw.writableEnded) reply.raw.end();
    },
  };
  return r;
}

/**
 * The model gateway under /v1 (README "Model gateway"): OpenAI-compatible, authenticated with
 * the session token (OPENAI_API_KEY in a sandbox) or an agent token, errors in OpenAI's shape.
 */
export async function gatewayRoutes(app: App, gateway: Gateway): Promise<void> {
  await app.register(
    async (v1) => {
      v1.setErrorHandler(sendOpenAiError);
      v1.setNotFoundHandler((req, reply) =>
        sendOpenAiError(new FabricError(404, 'route_not_found', `The model gateway has no ${req.method} ${req.url.split('?')[0]}; it serves POST /v1/chat/completions, POST /v1/embeddings and GET /v1/models.`), req, reply),
      );
      const caller = (req: FastifyRequest) => {
        const task = req.headers['x-fabric-task-id'];
        return gateway.identify(req.headers.authorization, typeof task === 'string' ? task : undefined).then((t) => {
          addToContext({ tenant_id: t.tenantId, agent_id: t.agentId });
          return t;
        });
      };

      v1.get('/models', { schema: { tags, security, summary: 'The models this agent may call (OpenAI list shape)', response: errors } }, async (req) => gateway.models(await caller(req)));

      for (const [path, kind, summary] of [
        ['/chat/completions', 'chat', 'Chat completion through the gateway (streaming with "stream": true): budget reserved before, metered after'],
        ['/embeddings', 'embeddings', 'Embeddings through the gateway: budget reserved before, metered after'],
      ] as const) {
        v1.post(path, { schema: { tags, security, summary, body: AnyBody, response: errors } }, async (req, reply) => {
          const t = await caller(req);
          const res = responder(req, reply);
          try {
            await gateway.call(t, kind, req.body as Record<string, unknown>, res);
          } catch (err) {
            if (!res.streaming) throw err;
            // the stream already said it in an error event (or the client is gone)
            logger().info({ code: (err as FabricError).code }, 'gateway stream ended early');
          }
          return reply;
        });
      }
    },
    { prefix: '/v1' },
  );
}
