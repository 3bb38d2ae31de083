import type { FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { READERS } from '../../auth/index.js';
import { FabricError, forbidden } from '../../errors/index.js';
import { createEventHub, type EventFilter, type EventHub, type EventHubOptions } from '../../events/index.js';
import { httpRequestsTotal, logger } from '../../telemetry/index.js';
import { principalOf, requireRole } from '../auth.js';
import { errorResponses } from '../errors.js';
import type { App, AppDeps } from '../types.js';

declare module 'fastify' {
  interface FastifyInstance {
    /** Live system events for SSE routes (see `eventRoutes`). */
    eventHub: EventHub;
  }
}

const EVENT_ID = /^\d{1,15}$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** `?last_event_id=`: resume after this event id (the `Last-Event-ID` header wins when both are sent). */
const LastEventIdQuery = z.string().regex(EVENT_ID, 'an event id (digits)').describe('resume after this event id; the Last-Event-ID header takes precedence');

/** Querystring of an SSE route that only resumes (e.g. a task's events); spread it into a stricter object if needed. */
export const EventStreamQuery = z.object({ last_event_id: LastEventIdQuery.optional() }).strict();

const EventsQuery = z
  .object({
    agent_id: z.uuid('agent ids are UUIDs').optional().describe("only this agent's events (an agent token: its own id, the default)"),
    subject_type: z
      .string()
      .regex(/^[a-z][a-z0-9_.-]{0,62}$/, 'a subject type such as agent or task')
      .optional()
      .describe('only events about this kind of subject, e.g. agent or task'),
    last_event_id: LastEventIdQuery.optional(),
  })
  .strict();

const STREAM_DESCRIPTION = [
  'Server-Sent Events (`text/event-stream`), one per state change, in id order:',
  '`id: <id>` / `event: <event_type>` / `data: {"id", "event_type", "subject_type", "subject_id", "agent_id", "data", "created_at"}`.',
  'Stored events after `Last-Event-ID` (header) or `last_event_id` (query) come first, then live ones, with no gaps or repeats;',
  'a reconnecting EventSource resumes by itself. A `: keepalive` comment keeps proxies open (every 15 s by default).',
].join(' ');

/**
 * The 200 of an SSE route, for OpenAPI only (the stream is written to the raw response, never
 * serialised): `content` names the media type, so errors stay documented as JSON.
 */
export const EventStreamResponse = z
  .string()
  .meta({ description: 'a stream of Server-Sent Events', content: { 'text/event-stream': { schema: { type: 'string', description: STREAM_DESCRIPTION } } } });

/** The resume point of a stream: the Last-Event-ID header, else `?last_event_id=`, else undefined. */
function resumePoint(req: FastifyRequest): number | undefined {
  const header = req.headers['last-event-id'];
  const query = (req.query as { last_event_id?: unknown } | undefined)?.last_event_id;
  const given = header !== undefined ? header : query;
  if (given === undefined || given === '') return undefined;
  if (typeof given !== 'string' || !EVENT_ID.test(given))
    throw new FabricError(400, 'validation_failed', 'Last-Event-ID (or last_event_id) must be the id of an event: digits only.');
  return Number(given);
}

/**
 * Answers `req` with an SSE stream of the events matching `filter` (already authorised by the
 * caller: the filter's tenant is the caller's). Resumes after `Last-Event-ID` /
 * `?last_event_id=`; without either, a stream about one subject (`subjectId` set) starts at its
 * first event, any other stream at the next one. Throws (a normal error response) only before
 * the stream starts; afterwards the reply is hijacked, so do not send anything else.
 */
export async function streamEventsFor(req: FastifyRequest, reply: FastifyReply, _deps: AppDeps, filter: EventFilter): Promise<void> {
  const hub = req.server.eventHub;
  const resume = resumePoint(req);
  await hub.prepare();
  const afterId = resume ?? (filter.subjectId !== undefined ? 0 : null);

  reply.hijack();
  const res = reply.raw;
  const headers: Record<string, string | number | string[]> = {};
  for (const [k, v] of Object.entries(reply.getHeaders())) if (v !== undefined) headers[k] = v;
  res.writeHead(200, {
    ...headers,
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache',
    'x-accel-buffering': 'no',
    connection: 'keep-alive',
  });
  res.flushHeaders();
  req.raw.socket.setNoDelay(true);

  const route = req.routeOptions.url ?? 'unmatched';
  const started = Date.now();
  const stream = hub.attach(res, filter, afterId);
  res.on('close', () => {
    httpRequestsTotal.inc({ method: req.method, route, status: '200' });
    logger().info(
      { method: req.method, route, status: 200, request_id: req.id, tenant_id: filter.tenantId, duration_ms: Date.now() - started, events_sent: stream.sent() },
      'event stream closed',
    );
  });
}

/**
 * `GET /api/events`: the tenant's system events as Server-Sent Events. Creates the app's
 * `EventHub` (`app.eventHub`), ended before the server closes so open streams do not hold
 * `app.close()` up.
 */
export function eventRoutes(app: App, deps: AppDeps, options: EventHubOptions = {}): void {
  const hub = createEventHub(deps.db, options);
  app.decorate('eventHub', hub);
  // preClose, not onClose: the HTTP server waits for open responses before onClose runs.
  app.addHook('preClose', async () => hub.close());

  app.get(
    '/api/events',
    {
      schema: {
        tags: ['events'],
        security: [{ bearerAuth: [] }],
        summary: "Stream the tenant's state changes (Server-Sent Events)",
        description: `${STREAM_DESCRIPTION} People of the tenant see all its events; an agent token only its own (agent_id = its id).`,
        querystring: EventsQuery,
        response: { 200: EventStreamResponse, ...errorResponses },
      },
    },
    async (req, reply) => {
      const p = principalOf(req);
      let agentId = req.query.agent_id;
      if (p.role === 'agent') {
        if (agentId !== undefined && agentId.toLowerCase() !== p.sub.toLowerCase())
          throw forbidden(`An agent may only stream its own events (token sub ${p.sub} ≠ ${agentId}).`);
        if (!UUID.test(p.sub)) throw forbidden('This agent token does not name an agent (its sub is not an agent id).');
        agentId = p.sub;
      } else {
        requireRole(req, READERS, 'stream events');
      }
      await streamEventsFor(req, reply, deps, { tenantId: p.tenantId, agentId: agentId?.toLowerCase(), subjectType: req.query.subject_type });
    },
  );
}
