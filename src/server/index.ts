import { createTokenVerifier, DEFAULT_TENANT_ID, loadOrCreateDevSecret, mintToken, type TokenOptions } from '../auth/index.js';
import { BillingService, getPlan } from '../billing/index.js';
import { startAlertRuntime, type AlertRuntime } from '../alerts/index.js';
import { ErasureService, startComplianceRuntime, type ComplianceRuntime } from '../compliance/index.js';
import { backfillAgentQuotas, budgetSubmitHook, startBudgetRuntime, type BudgetRuntime } from '../budget/index.js';
import { ConfigError, type FabricConfig } from '../config/index.js';
import { migrate, openDb, type Db } from '../db/index.js';
import { createAgentFiles, createBlobStore, type AgentFiles } from '../files/index.js';
import { fakeUpstreamConfig, startFakeUpstream, type FakeUpstream } from '../gateway/index.js';
import { buildApp, buildProbeApp, sweepIdempotencyKeys, type App } from '../http/index.js';
import { sweepExpiredMemory } from '../memory/index.js';
import { createNotifier } from '../notify/index.js';
import { killSwitchSubmitHook, OperatorState } from '../operator/index.js';
import { PolicyEngine, policySubmitHook } from '../policy/index.js';
import { AgentScheduler } from '../queue/index.js';
import { startSandboxRuntime, type SandboxRuntime } from '../sandbox/index.js';
import { ensureDefaultTenant } from '../tenancy/index.js';
import { configureAgentLabels, createLogger, logger, setLogger, startTracing, stopTracing } from '../telemetry/index.js';
import { InProcessExecutor, Worker, type Executor } from '../worker/index.js';

/** dev: everything on the embedded database; serve: the API (+ workers) on PostgreSQL; worker: workers only. */
export type FabricMode = 'dev' | 'serve' | 'worker';

export interface StartOptions {
  /** Workers to run in this process. dev/serve default 1, worker default 1. */
  workers?: number;
}

/** A running fabric: its API (unless worker mode), database, workers and how to stop them. */
export interface RunningFabric {
  app: App | undefined;
  db: Db;
  url: string | undefined;
  /** Worker mode with a metrics port: where its /healthz, /readyz and /metrics answer. */
  probeUrl: string | undefined;
  workers: Worker[];
  tokenOptions: TokenOptions | undefined;
  /** An admin token for the default tenant, minted at start in dev mode when the secret is the generated one. */
  adminToken: string | undefined;
  /** Whether the JWT secret was generated on this start. */
  secretCreated: boolean;
  /** Stops the API, drains the workers (up to FABRIC_DRAIN_TIMEOUT_SECONDS) and closes the database. */
  close(): Promise<void>;
}

/** Lifetime of the admin token printed by `dev`. */
const DEV_ADMIN_TOKEN_TTL = '24h';

/** How often expired idempotency records are deleted. */
const SWEEP_INTERVAL_MS = 10 * 60 * 1000;

/**
 * The built-in fake model provider, when FABRIC_GATEWAY_FAKE is on — or auto (the default) in
 * dev with no upstream configured, so the example agent has a model to call. Labelled fake in
 * /v1/models and in every answer.
 */
async function withFakeUpstream(config: FabricConfig, mode: FabricMode): Promise<{ config: FabricConfig; fake: FakeUpstream | undefined }> {
  const g = config.gateway;
  if (g.fake === 'off' || (g.fake === 'auto' && (mode !== 'dev' || g.upstreams.length > 0))) return { config, fake: undefined };
  const fake = await startFakeUpstream();
  logger().warn({ url: fake.url }, 'model gateway: the built-in FAKE upstream answers /v1 (no real model); set FABRIC_GATEWAY_UPSTREAMS for a provider');
  return { config: { ...config, gateway: { ...g, upstreams: [...g.upstreams, fakeUpstreamConfig(fake.url)] } }, fake };
}

/** Resolves the signing/verification keys: configured secret and/or JWKS, else (dev only) a secret kept in the data dir. */
export function resolveTokenOptions(config: FabricConfig, mode: FabricMode): { options: TokenOptions; created: boolean; devSecret: boolean } {
  const base = { issuer: config.jwtIssuer, audience: config.jwtAudience };
  if (config.jwtSecret || config.jwksUrl) return { options: { ...base, secret: config.jwtSecret, jwksUrl: config.jwksUrl }, created: false, devSecret: false };
  if (mode !== 'dev') throw new ConfigError(`${mode} needs FABRIC_JWT_SECRET (≥ 32 characters) or FABRIC_JWKS_URL; \`agent-fabric dev\` generates a local secret instead.`);
  const { secret, created } = loadOrCreateDevSecret(config.dataDir);
  return { options: { ...base, secret }, created, devSecret: true };
}

/** Where a listener (the API, a worker's probe) listens, as a URL (undefined without one). */
function listeningUrl(app: App | undefined, config: FabricConfig): string | undefined {
  const address = app?.server.address();
  if (!address || typeof address !== 'object') return undefined;
  const host = config.host === '0.0.0.0' || config.host === '::' ? '127.0.0.1' : config.host;
  return `http://${host.includes(':') ? `[${host}]` : host}:${address.port}`;
}

/**
 * Mints sandbox session tokens (sub = agent, sid = session, role agent) with the signing secret;
 * with only a JWKS URL the fabric cannot sign, and sandboxed tasks fail saying so.
 */
function sessionTokenMinter(config: FabricConfig, options: TokenOptions | undefined) {
  const signing = options?.secret ? options : config.jwtSecret ? { issuer: config.jwtIssuer, audience: config.jwtAudience, secret: config.jwtSecret } : undefined;
  return async (c: { agentId: string; tenantId: string; sessionId: string; ttlSeconds: number }) => {
    if (!signing) throw new Error('sandbox session tokens are signed with FABRIC_JWT_SECRET, which this worker lacks (FABRIC_JWKS_URL alone cannot sign): set it');
    return mintToken(signing, { sub: c.agentId, role: 'agent', tenant: c.tenantId, ttl: c.ttlSeconds, extra: { sid: c.sessionId } });
  };
}

/** Opens the database, migrates, seeds the default tenant, then starts the API and/or workers. */
export async function startFabric(config: FabricConfig, mode: FabricMode, options: StartOptions = {}): Promise<RunningFabric> {
  setLogger(createLogger({ level: config.logLevel, file: config.logFile }));
  configureAgentLabels({ enabled: config.metrics.agentLabels, maxAgents: config.metrics.maxAgentLabels });
  await startTracing(config.tracing, { warn: (message, err) => logger().warn({ err }, `tracing: ${message}`) });
  if (mode !== 'dev' && !config.databaseUrl)
    throw new ConfigError(`${mode} runs against PostgreSQL: set DATABASE_URL (use \`agent-fabric dev\` for the embedded database).`);
  // The database (and with it the data-dir lock) comes first, so two processes starting at
  // once never both create the dev secret.
  const db = await openDb(config);
  let app: App | undefined;
  /** Worker mode: the /healthz, /readyz and /metrics listener (FABRIC_WORKER_METRICS_PORT). */
  let probe: App | undefined;
  const workers: Worker[] = [];
  let tokens: ReturnType<typeof resolveTokenOptions> | undefined;
  let sandboxes: SandboxRuntime | undefined;
  let artifactFiles: AgentFiles | undefined;
  let billing: BillingService | undefined;
  let budgets: BudgetRuntime | undefined;
  let alerts: AlertRuntime | undefined;
  let fakeUpstream: FakeUpstream | undefined;
  let policies: PolicyEngine | undefined;
  let operator: OperatorState | undefined;
  let erasure: ErasureService | undefined;
  let compliance: ComplianceRuntime | undefined;
  try {
    await migrate(db);
    await ensureDefaultTenant(db);
    const backfilled = await backfillAgentQuotas(db, config.quotaDefaults);
    if (backfilled) logger().info({ agents: backfilled }, 'agents without a quota got the default quota');
    const notifier = createNotifier({ webhookUrl: config.alertWebhookUrl, channel: config.alertChannel });
    if (config.billing.defaultPlan)
      await getPlan(db, config.billing.defaultPlan).catch(() => {
        throw new ConfigError(`FABRIC_BILLING_DEFAULT_PLAN names plan "${config.billing.defaultPlan}", which does not exist; use one of GET /api/plans (free, plus, pro, max, enterprise).`);
      });
    billing = new BillingService({ notifier, defaultPlan: config.billing.defaultPlan });
    policies = new PolicyEngine({ db, notifier, cacheSeconds: config.policies.cacheSeconds, approvalExpiresSeconds: config.policies.approvalExpiresSeconds, decisionLog: { flushMs: config.policies.logFlushMs } });
    await policies.start();
    const policyEngine = policies;
    // runtime settings (log level, rate limits, zero-telemetry) and kill switches, live in every mode
    operator = new OperatorState(db, { baseLogLevel: config.logLevel });
    await operator.start();
    const blobs = createBlobStore(config);
    erasure = new ErasureService({ db, blobs });
    if (mode !== 'worker') {
      tokens = resolveTokenOptions(config, mode);
      const scheduler = new AgentScheduler(db, { leaseSeconds: config.taskLeaseSeconds, timeouts: config.timeouts, onSubmit: [killSwitchSubmitHook(operator), policySubmitHook(policyEngine), billing.submitHook, budgetSubmitHook({ reservationTtlSeconds: config.budgets.reservationTtlSeconds })] });
      const gateway = await withFakeUpstream(config, mode);
      fakeUpstream = gateway.fake;
      app = await buildApp({ db, config: gateway.config, verifyToken: createTokenVerifier(tokens.options), scheduler }, { billing, policies: policyEngine, operator, erasure });
      await app.listen({ port: config.port, host: config.host });
    }
    budgets = await startBudgetRuntime({ db, notifier, sweepSeconds: config.budgets.sweepSeconds });
    alerts = startAlertRuntime({ db, notifier, config: config.alerts });
    compliance = startComplianceRuntime({ db, blobs, erasure, defaultDays: config.retention.days, sweepSeconds: config.retention.sweepSeconds });
    const inProcess = new InProcessExecutor({ root: config.handlersDir });
    let executor: Executor = inProcess;
    if ((options.workers ?? 1) > 0) {
      artifactFiles = createAgentFiles(db, config, undefined);
      sandboxes = await startSandboxRuntime({
        config: config.sandbox,
        db,
        inProcess,
        files: artifactFiles,
        apiUrl: config.sandbox.apiUrl ?? listeningUrl(app, config) ?? `http://127.0.0.1:${config.port}`,
        mintSessionToken: sessionTokenMinter(config, tokens?.options),
        egressPolicy: (task) => policyEngine.netConnectCheck(task.tenant_id, task.agent_id, task.id),
      });
      executor = sandboxes.executor;
    }
    for (let i = 0; i < (options.workers ?? 1); i++) {
      const worker = new Worker(db, { concurrency: config.workerConcurrency, executor, notifier, queue: { leaseSeconds: config.taskLeaseSeconds, timeouts: config.timeouts } });
      await worker.start();
      workers.push(worker);
    }
    // a worker process's probes answer once its workers run
    if (mode === 'worker' && config.workerMetricsPort !== undefined) {
      probe = await buildProbeApp({ db, config });
      await probe.listen({ port: config.workerMetricsPort, host: config.host });
    }
    if ((app || probe) && !config.metricsToken && !['127.0.0.1', 'localhost', '::1'].includes(config.host))
      logger().warn({ host: config.host }, '/metrics is open to anyone who reaches this address: set FABRIC_METRICS_TOKEN (README "Inter-component authentication")');
  } catch (err) {
    await Promise.all(workers.map((w) => w.stop(0)));
    await budgets?.stop();
    await alerts?.stop();
    await sandboxes?.close();
    await artifactFiles?.close();
    await app?.close().catch(() => {});
    await probe?.close().catch(() => {});
    await fakeUpstream?.close();
    await policies?.close();
    await operator?.close();
    await compliance?.stop();
    await erasure?.close();
    await db.close();
    await stopTracing();
    throw err;
  }
  const every = (ms: number, what: string, fn: () => Promise<unknown>) => {
    const timer = setInterval(() => void fn().catch((err: unknown) => logger().warn({ err }, `${what} failed`)), ms);
    timer.unref();
    return timer;
  };
  const overage = billing!;
  const sweepers = [
    every(config.billing.overageCheckSeconds * 1000, 'overage check', () => overage.checkOverage(db)),
    every(SWEEP_INTERVAL_MS, 'idempotency sweep', () => sweepIdempotencyKeys(db)),
    every(config.memorySweepSeconds * 1000, 'memory sweep', async () => {
      const n = await sweepExpiredMemory(db);
      if (n) logger().info({ deleted: n }, 'expired memory keys deleted');
    }),
  ];

  const url = listeningUrl(app, config);
  const probeUrl = listeningUrl(probe, config);
  const adminToken =
    mode === 'dev' && tokens?.devSecret
      ? await mintToken(tokens.options, { sub: 'dev-admin', role: 'admin', tenant: DEFAULT_TENANT_ID, ttl: DEV_ADMIN_TOKEN_TTL })
      : undefined;
  logger().info({ url, ...(probeUrl ? { probe_url: probeUrl } : {}), mode, engine: db.engine, workers: workers.length }, 'agent-fabric is running');

  let closed = false;
  return {
    app,
    db,
    url,
    probeUrl,
    workers,
    tokenOptions: tokens?.options,
    adminToken,
    secretCreated: tokens?.created ?? false,
    async close() {
      if (closed) return;
      closed = true;
      for (const t of sweepers) clearInterval(t);
      await app?.close();
      await Promise.all(workers.map((w) => w.stop(config.drainTimeoutSeconds * 1000)));
      await probe?.close(); // answers /healthz while the workers drain
      await budgets?.stop();
      await alerts?.stop();
      await sandboxes?.close();
      await artifactFiles?.close();
      await fakeUpstream?.close();
      await policies?.close();
      await operator?.close();
      await compliance?.stop();
      await erasure?.close();
      await db.close();
      await stopTracing(); // flushes the spans still batched
    },
  };
}
