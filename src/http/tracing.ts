import type { FastifyRequest } from 'fastify';
import { endSpan, startServerSpan, type Span } from '../telemetry/index.js';
import type { App } from './types.js';

/** Routes that get no span: probes and scrapes would drown the traces that matter. */
const UNTRACED = new Set(['/healthz', '/readyz', '/metrics']);

/**
 * A server span per request (`METHOD /route/template`), a child of the caller's `traceparent`
 * when it sent one; the rest of the request — handlers, queries, a submit that stores the
 * trace context with its tasks — runs inside it. Nothing is registered when tracing is off.
 * The span carries the route template, never the URL (a signed URL's query is a credential).
 */
export function registerRequestSpans(app: App, enabled: boolean): void {
  if (!enabled) return;
  const spans = new WeakMap<FastifyRequest, Span>();
  app.addHook('onRequest', (req, _reply, done) => {
    const route = req.routeOptions.url;
    if (route === undefined || UNTRACED.has(route)) return done();
    startServerSpan(`${req.method} ${route}`, req.headers, { 'http.request.method': req.method, 'http.route': route, 'fabric.request_id': req.id }, (span) => {
      if (span) spans.set(req, span);
      done();
    });
  });
  const finish = (req: FastifyRequest, status: number | undefined) => {
    const span = spans.get(req);
    if (!span) return;
    spans.delete(req);
    if (req.principal) span.setAttributes({ 'fabric.tenant_id': req.principal.tenantId, 'enduser.id': req.principal.sub });
    if (status !== undefined) span.setAttribute('http.response.status_code', status);
    endSpan(span, status === undefined ? { message: 'request aborted' } : status >= 500 ? { code: String(status) } : undefined);
  };
  app.addHook('onResponse', async (req, reply) => finish(req, reply.statusCode));
  app.addHook('onRequestAbort', async (req) => finish(req, undefined));
}
