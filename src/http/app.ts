import { randomUUID } from 'node:crypto';
import fastifySwagger from '@fastify/swagger';
import fastifySwaggerUi from '@fastify/swagger-ui';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { BillingService } from '../billing/index.js';
import { ErasureService, SubjectRevocations } from '../compliance/index.js';
import { createBlobStore } from '../files/index.js';
import type { Clock } from '../clock/index.js';
import { FabricError } from '../errors/index.js';
import { Gateway, policyEngineModelPolicy } from '../gateway/index.js';
import { ApprovalWatch, PolicyEngine } from '../policy/index.js';
import { OperatorState, operatorRateLimits } from '../operator/index.js';
import { jsonSchemaTransform } from 'fastify-type-provider-zod';
import type { EventHubOptions } from '../events/index.js';
import type { ProvisionOptions } from '../tenancy/index.js';
import type { SemanticMemoryService } from '../memory/semantic/index.js';
import { httpRequestDuration, httpRequestsTotal, logger, runWithContext, telemetryAllowed, tracingEnabled } from '../telemetry/index.js';
import { registerAuth } from './auth.js';
import { registerRequestSpans } from './tracing.js';
import { handleError } from './errors.js';
import { fabricFastify } from './fastify.js';
import { agentRoutes } from './routes/agents.js';
import { alertRoutes } from './routes/alerts.js';
import { approvalRoutes } from './routes/approvals.js';
import { adminRoutes } from './routes/admin.js';
import { auditRoutes } from './routes/audit.js';
import { policyRoutes } from './routes/policies.js';
import { budgetRoutes } from './routes/budgets.js';
import { quotaRoutes } from './routes/quota.js';
import { billingPlanRoutes } from './routes/billing-plans.js';
import { billingSubscriptionRoutes } from './routes/billing-subscription.js';
import { erasureRoutes } from './routes/erasure.js';
import { eventRoutes } from './routes/events.js';
import { fileRoutes } from './routes/files.js';
import { gatewayRoutes } from './routes/gateway.js';
import { systemRoutes } from './routes/system.js';
import { memoryRoutes } from './routes/memory.js';
import { sessionRoutes } from './routes/sessions.js';
import { semanticMemoryRoutes } from './routes/semantic-memory.js';
import { taskRoutes } from './routes/tasks.js';
import { tenancyRoutes } from './routes/tenancy.js';
import { usageRoutes } from './routes/usage.js';
import type { App, AppDeps } from './types.js';

export interface AppOptions {
  /** The clock budget periods are placed with (tests set one); default the system clock. */
  clock?: Clock;
  /** Test seams for provisioning (fault injection). */
  provision?: Partial<ProvisionOptions>;
  /** Event streams (heartbeat interval, buffering); tests shorten the heartbeat. */
  events?: EventHubOptions;
  /** Semantic memory with another provider or search mode (tests); default: from config.embeddings. */
  semanticMemory?: SemanticMemoryService;
  /** Plans, subscriptions and usage with a set clock or a notifier (the server, tests); default: system clock, config.billing. Its submitHook belongs in the scheduler's onSubmit. */
  billing?: BillingService;
  /** The model gateway under /v1 (tests pass one with their own policy); default: from config.gateway. */
  gateway?: Gateway;
  /** The policy engine (the server shares one with the scheduler's submit hook and the workers); default: one of the app's own, closed with it. */
  policies?: PolicyEngine;
  /** Runtime settings and kill switches (the server shares one with the scheduler's kill-switch hook); default: one of the app's own, closed with it. */
  operator?: OperatorState;
  /** Data erasure (the server shares one with its resume loop); default: one of the app's own over the configured storage. */
  erasure?: ErasureService;
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
const QUIET_ROUTES = new Set(['/healthz', '/readyz', '/metrics']);

/** Builds the HTTP API. Call `listen()` on it, or `inject()` in tests. */
export async function buildApp(deps: AppDeps, options: AppOptions = {}): Promise<App> {
  // Tokens of erased subjects are refused wherever a token is checked (API and gateway).
  const revocations = new SubjectRevocations(deps.db);
  deps = { ...deps, verifyToken: revocations.guard(deps.verifyToken) };
  // One access line per request comes from our onResponse hook, with the correlation ids.
  const app = fabricFastify(
    {
      bodyLimit: deps.config.bodyLimitBytes,
      // A caller's x-request-id is kept only if it is a sane token; otherwise we make one.
      requestIdHeader: false,
      genReqId: (req) => {
        const given = req.headers['x-request-id'];
        return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
      },
      routerOptions: { maxParamLength: 2048 },
      // Errors the router raises before any hook runs (over-long params, bad percent-encoding)
      // still get the request id and the envelope.
      frameworkErrors: (err, req, reply) => {
        void reply.header('x-request-id', req.id);
        const tooLong = err.statusCode === 414;
        const error = tooLong
          ? new FabricError(414, 'uri_too_long', 'A path segment is longer than 2048 characters; ids and memory keys are shorter than that.')
          : new FabricError(400, 'invalid_url', 'The URL is not valid (broken percent-encoding?); encode path segments properly.');
        httpRequestsTotal.inc({ method: req.method, route: 'unmatched', status: String(error.status) });
        logger().info({ method: req.method, route: 'unmatched', status: error.status, code: error.code, request_id: req.id }, 'request');
        handleError(error, req as FastifyRequest, reply as FastifyReply);
      },
      ajv: { customOptions: { removeAdditional: false } },
    },
    (method, path) => `There is no route ${method} ${path}; the API is described at /openapi.json.`,
  );

  app.addHook('onRequest', (req, reply, done) => {
    void reply.header('x-request-id', req.id);
    runWithContext({ request_id: req.id }, done);
  });
  registerRequestSpans(app, tracingEnabled());
  app.addHook('onResponse', async (req, reply) => {
    const route = req.routeOptions.url ?? 'unmatched';
    const labels = { method: req.method, route, status: String(reply.statusCode) };
    httpRequestsTotal.inc(labels);
    httpRequestDuration.observe(labels, reply.elapsedTime / 1000);
    // zero-telemetry tenants: no access line for what succeeded; refusals (≥ 400) are security records
    if (reply.statusCode < 400 && !telemetryAllowed('access_log', req.principal?.tenantId)) return;
    const line = { method: req.method, route, status: reply.statusCode, duration_ms: Math.round(reply.elapsedTime * 100) / 100, sub: req.principal?.sub };
    if (QUIET_ROUTES.has(route)) logger().debug(line, 'request');
    else logger().info(line, 'request');
  });

  await app.register(fastifySwagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'agent-fabric',
        version: '0.1.0',
        description: 'Control plane of agent-fabric: tenants, agents, tasks, files, memory, budgets, policies. Every /api route takes a bearer JWT.',
      },
      components: { securitySchemes: { bearerAuth: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' } } },
    },
    transform: jsonSchemaTransform,
  });
  await app.register(fastifySwaggerUi, { routePrefix: '/docs' });

  registerAuth(app, deps);
  const billing = options.billing ?? new BillingService({ clock: options.clock, defaultPlan: deps.config.billing.defaultPlan });
  systemRoutes(app, deps);
  tenancyRoutes(app, deps);
  agentRoutes(app, deps, options.provision, billing);
  billingPlanRoutes(app, deps, billing);
  billingSubscriptionRoutes(app, deps, billing);
  usageRoutes(app, deps, billing);
  quotaRoutes(app, deps);
  budgetRoutes(app, deps, options.clock);
  eventRoutes(app, deps, options.events);
  taskRoutes(app, deps);
  sessionRoutes(app, deps);
  semanticMemoryRoutes(app, deps, options.semanticMemory);
  fileRoutes(app, deps);
  memoryRoutes(app, deps);
  const policies = options.policies ?? new PolicyEngine({ db: deps.db, cacheSeconds: deps.config.policies.cacheSeconds, approvalExpiresSeconds: deps.config.policies.approvalExpiresSeconds, decisionLog: { flushMs: deps.config.policies.logFlushMs } });
  if (!options.policies) app.addHook('onClose', async () => policies.close());
  const approvals = new ApprovalWatch(deps.db);
  app.addHook('onClose', async () => approvals.close());
  policyRoutes(app, deps, policies);
  approvalRoutes(app, deps, approvals);
  auditRoutes(app, deps);
  alertRoutes(app, deps);
  const erasure = options.erasure ?? new ErasureService({ db: deps.db, blobs: createBlobStore(deps.config) });
  if (!options.erasure) app.addHook('onClose', async () => erasure.close());
  erasure.onRevoke(() => revocations.forget());
  erasureRoutes(app, deps, erasure);
  const operator = options.operator ?? new OperatorState(deps.db);
  if (!options.operator) {
    await operator.start();
    app.addHook('onClose', async () => operator.close());
  }
  adminRoutes(app, deps, operator);
  const gateway =
    options.gateway ??
    new Gateway({ db: deps.db, config: deps.config.gateway, verifyToken: deps.verifyToken, policy: policyEngineModelPolicy(policies, deps.db), rateLimits: operatorRateLimits(operator, deps.config.gateway) });
  app.addHook('onClose', async () => gateway.close());
  await gatewayRoutes(app, gateway);
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  return app;
}
