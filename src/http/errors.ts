import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { hasZodFastifySchemaValidationErrors, isResponseSerializationError } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { isUnavailableError, pgCode, PG_CODES } from '../db/index.js';
import { FabricError } from '../errors/index.js';
import { logger } from '../telemetry/index.js';

/** `{"error": {"code", "message", …}}` — the body of every 4xx and 5xx. */
export const ErrorEnvelope = z.object({
  error: z.looseObject({
    code: z.string().describe('stable machine-readable code'),
    message: z.string().describe('what happened and what to do about it'),
  }),
});

/** Error responses every route documents. */
export const errorResponses = { '4xx': ErrorEnvelope, '5xx': ErrorEnvelope } as const;

interface Mapped {
  status: number;
  code: string;
  message: string;
  details?: Record<string, unknown>;
}

function describeIssues(err: FastifyError): string {
  const where = (err as { validationContext?: string }).validationContext ?? 'request';
  const issues = (err.validation ?? []).slice(0, 5).map((v) => {
    const p = (v.instancePath || '').replace(/^\//, '').replace(/\//g, '.');
    return p ? `${p}: ${v.message}` : `${v.message}`;
  });
  return `Invalid ${where}: ${issues.join('; ')}.`;
}

/** Maps anything thrown during a request to a status, a stable code and a sentence. */
export function mapError(err: unknown): Mapped {
  if (err instanceof FabricError) return { status: err.status, code: err.code, message: err.message, details: err.details };
  const fe = err as FastifyError;
  if (hasZodFastifySchemaValidationErrors(fe)) return { status: 400, code: 'validation_failed', message: describeIssues(fe) };
  if (isResponseSerializationError(fe)) return { status: 500, code: 'internal_error', message: 'The server built a response it could not serialise; this is a bug.' };
  switch (fe?.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return { status: 413, code: 'body_too_large', message: 'The request body is larger than this server accepts; send a smaller body.' };
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return { status: 415, code: 'unsupported_media_type', message: 'Send the body as application/json.' };
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return { status: 400, code: 'invalid_json', message: 'The body is not valid JSON (or uses a forbidden key such as __proto__); send a JSON object.' };
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return { status: 400, code: 'invalid_json', message: 'The body is empty but Content-Type is application/json; send a JSON body or drop the header.' };
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return { status: 400, code: 'invalid_content_length', message: 'Content-Length does not match the body sent.' };
  }
  if (err instanceof SyntaxError && fe.statusCode === 400)
    return { status: 400, code: 'invalid_json', message: `The body is not valid JSON (${err.message}).` };
  if (isUnavailableError(err))
    return { status: 503, code: 'database_unavailable', message: 'The database is unreachable or overloaded; nothing was committed. Retry shortly.', details: { retry_after_seconds: 1 } };
  if (pgCode(err) === PG_CODES.queryCanceled)
    return { status: 503, code: 'database_timeout', message: 'The database took too long to answer; nothing was committed. Retry shortly.', details: { retry_after_seconds: 1 } };
  const sqlstate = pgCode(err);
  // class 22 is "data exception": a value the database cannot take (bad uuid, overflow, bad date…)
  if (sqlstate?.startsWith('22') || sqlstate === PG_CODES.checkViolation)
    return { status: 400, code: 'invalid_input', message: 'A value in the request is not acceptable to the database; check types and ranges.' };
  switch (sqlstate) {
    case PG_CODES.notNullViolation:
      return { status: 400, code: 'invalid_input', message: 'A value in the request is not acceptable to the database; check types and ranges.' };
    case PG_CODES.uniqueViolation:
      return { status: 409, code: 'conflict', message: 'Something with the same identity already exists.' };
    case PG_CODES.foreignKeyViolation:
      return { status: 409, code: 'reference_not_found', message: 'The request refers to something that does not exist in this tenant.' };
    case PG_CODES.serializationFailure:
    case PG_CODES.deadlockDetected:
      return { status: 409, code: 'transaction_conflict', message: 'A concurrent change conflicted with this one; nothing was committed. Retry the request.' };
  }
  if (typeof fe?.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500)
    return { status: fe.statusCode, code: 'bad_request', message: fe.message };
  return { status: 500, code: 'internal_error', message: 'Something failed inside the server; the request id identifies it in the logs.' };
}

/** The one error handler: envelope for everything, a log line for every 5xx. */
export function handleError(err: unknown, req: FastifyRequest, reply: FastifyReply): void {
  const mapped = mapError(err);
  if (mapped.status >= 500) logger().error({ err, route: req.routeOptions.url }, `request failed: ${(err as Error)?.message}`);
  const retry = mapped.details?.retry_after_seconds;
  if (typeof retry === 'number') reply.header('retry-after', String(Math.ceil(retry)));
  void reply.code(mapped.status).send({ error: { code: mapped.code, message: mapped.message, ...mapped.details } });
}
