import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';

export { createExclusive, ensurePrivateDir } from './datadir.js';
import { alertsConfigFrom, metricsConfigFrom, monitoringEnv, type AlertsConfig, type MetricsConfig } from './monitoring.js';
export { ALERT_RULE_NAMES, type AlertRuleName, type AlertRuleOverride, type AlertsConfig, type MetricsConfig } from './monitoring.js';

/** Defaults for the quota row every provisioned agent gets (isolation-runtime-prd §3.5). */
/** Plans, subscriptions and billing (README "Plans, subscriptions and billing"). */
export interface BillingConfig {
  /** Plan of tenants that never subscribed. `FABRIC_BILLING_DEFAULT_PLAN`; unset = they are unmetered and unrestricted. */
  defaultPlan: string | undefined;
  /** How often overage that started is looked for and notified. `FABRIC_BILLING_OVERAGE_CHECK_SECONDS`, default 60. */
  overageCheckSeconds: number;
}

export interface QuotaDefaults {
  /** Tokens an agent may spend per calendar month. Default 1,000,000. */
  monthlyTokenLimit: number;
  /** USD an agent may spend per calendar month. Default 100. */
  monthlyCostLimitUsd: number;
  /** Bytes of durable files an agent may keep. Default 5 GiB. */
  storageLimitBytes: number;
  /** What happens past a limit: block | alert_only | allow. Default block. */
  overagePolicy: 'block' | 'alert_only' | 'allow';
  /** Percent of a limit at which an alert fires. Default 80. */
  alertThresholdPct: number;
}

/** Where and how `process` and `container` sandboxes run (see README "Sandboxes"). */
export interface SandboxConfig {
  /** Host directory for session workspaces, helpers and uid locks. `FABRIC_SANDBOX_DIR`, default <tmpdir>/agent-fabric-sandbox. */
  dir: string;
  /** First host uid given to sandboxes. `FABRIC_SANDBOX_UID_BASE`, default 200000. */
  uidBase: number;
  /** How many uids (so: concurrent sandboxes per host). `FABRIC_SANDBOX_UID_COUNT`, default 1000. */
  uidCount: number;
  /** Size of each session's tmpfs workspace in MB; 0 = plain directories. `FABRIC_SANDBOX_TMPFS_MB`, default 256. */
  tmpfsMb: number;
  /** Most processes (and threads) a sandbox may run. `FABRIC_SANDBOX_PIDS_LIMIT`, default 128. */
  pidsLimit: number;
  /** The fabric's API as sandboxes reach it (through their egress proxy). `FABRIC_SANDBOX_API_URL`, default this process's own API. */
  apiUrl: string | undefined;
  /** Ready sandboxes kept per isolation profile (0 = none: every session launches cold). `FABRIC_SANDBOX_WARM_POOL_SIZE`, default 1. */
  warmPoolSize: number;
  /** A session whose supervisor is silent this long is killed (heartbeat_lost). `FABRIC_SANDBOX_HEARTBEAT_TIMEOUT_SECONDS`, default 10. */
  heartbeatTimeoutSeconds: number;
  /** On timeout, cancel or drain a sandbox's program gets SIGTERM, then SIGKILL this much later. `FABRIC_SANDBOX_STOP_GRACE_SECONDS`, default 5. */
  stopGraceSeconds: number;
}

/** Per-agent files: size limit, storage provider and URL signing (see README "Files"). */
export interface FilesConfig {
  /** Largest file one upload may carry. `FABRIC_FILES_MAX_BYTES`, default 50 MB (52428800). */
  maxBytes: number;
  /** Where file contents live: local | s3. `FABRIC_STORAGE`, default local. */
  storage: 'local' | 's3';
  /** Directory of the local provider. `FABRIC_FILES_DIR`, default <data dir>/files. */
  dir: string | undefined;
  /** The S3-compatible provider (`FABRIC_S3_*`); bucket is required when storage is s3. */
  s3: { endpoint: string | undefined; bucket: string | undefined; region: string; accessKeyId: string | undefined; secretAccessKey: string | undefined; forcePathStyle: boolean; prefix: string };
  /** Key material for signed download URLs. `FABRIC_URL_SIGNING_SECRET`, default derived from the JWT secret. */
  urlSigningSecret: string | undefined;
}

/** Semantic memory: which embedding provider makes the vectors (see README "Semantic memory"). */
export interface EmbeddingsConfig {
  /** local (offline word vectors) | openai (any OpenAI-compatible /v1/embeddings). `FABRIC_EMBEDDINGS_PROVIDER`, default local. */
  provider: 'local' | 'openai';
  /** Model name. `FABRIC_EMBEDDINGS_MODEL`, default wink-sg-100d-sif-v1 (local) or text-embedding-3-small (openai). */
  model: string;
  /** Base URL of the OpenAI-compatible API (…/v1). `FABRIC_EMBEDDINGS_BASE_URL`, default https://api.openai.com/v1. */
  baseUrl: string;
  /** Bearer key for that API. `FABRIC_EMBEDDINGS_API_KEY` */
  apiKey: string | undefined;
  /** Ask the model for this many dimensions (text-embedding-3 models). `FABRIC_EMBEDDINGS_DIMENSIONS` */
  dimensions: number | undefined;
  /** One provider call's timeout. `FABRIC_EMBEDDINGS_TIMEOUT_MS`, default 30000. */
  timeoutMs: number;
  /** Retries of a call that got 429, 5xx, a timeout or a network error. `FABRIC_EMBEDDINGS_MAX_RETRIES`, default 4. */
  maxRetries: number;
  /** Most texts per provider call. `FABRIC_EMBEDDINGS_BATCH_SIZE`, default 96. */
  batchSize: number;
  /** Where the local provider keeps its compact word-vector file. `FABRIC_EMBEDDINGS_CACHE_DIR`, default <data dir>/embeddings. */
  cacheDir: string;
  /** Memory for the exact-search vector cache (engines without pgvector), in MB. `FABRIC_SEMANTIC_CACHE_MB`, default 512. */
  searchCacheMb: number;
}

/** One OpenAI-compatible provider the model gateway forwards to (README "Model gateway"). */
export interface GatewayUpstream {
  /** Short name, shown in /v1/models (`owned_by`) and events. */
  name: string;
  /** Its API root, ending in /v1 (…/chat/completions is appended). */
  baseUrl: string;
  /** Its bearer key: never sent to sandboxes, logged or answered. */
  apiKey: string | undefined;
  /** Models it serves, with prices in integer micro-USD per 1M input / output tokens. */
  models: Record<string, { inputMicrosPer1M: number; outputMicrosPer1M: number }>;
  /** The built-in fake (src/gateway/fake-upstream.ts): labelled as fake wherever it answers. */
  fake?: boolean;
}

/** The model gateway under /v1 (README "Model gateway"). */
export interface GatewayConfig {
  /** Providers. `FABRIC_GATEWAY_UPSTREAMS`: JSON (an array) or the path of a JSON file. */
  upstreams: GatewayUpstream[];
  /** Start the built-in fake upstream: on | off | auto (dev with no upstream configured). `FABRIC_GATEWAY_FAKE`, default auto. */
  fake: 'on' | 'off' | 'auto';
  /** Longest one call may take, retries included (and never past the session token's expiry). `FABRIC_GATEWAY_TIMEOUT_MS`, default 120000. */
  timeoutMs: number;
  /** Longest one try may wait for the provider's response headers before it counts as a timeout (and is retried). `FABRIC_GATEWAY_ATTEMPT_TIMEOUT_MS`, default 60000. */
  attemptTimeoutMs: number;
  /** Retries after a provider's 429, 5xx, timeout or network error. `FABRIC_GATEWAY_MAX_RETRIES`, default 2. */
  maxRetries: number;
  /** First retry delay; doubles per retry, with jitter (a provider's retry-after wins). `FABRIC_GATEWAY_RETRY_BASE_MS`, default 250. */
  retryBaseMs: number;
  /** Output tokens reserved (and asked for upstream) when a request names no max_tokens. `FABRIC_GATEWAY_DEFAULT_MAX_TOKENS`, default 4096. */
  defaultMaxTokens: number;
  /** Per agent: requests and tokens per minute (0 = unlimited). `FABRIC_GATEWAY_AGENT_RPM` (600), `FABRIC_GATEWAY_AGENT_TPM` (1000000). */
  agentRpm: number;
  agentTpm: number;
  /** Per tenant, the same. `FABRIC_GATEWAY_TENANT_RPM` (6000), `FABRIC_GATEWAY_TENANT_TPM` (10000000). */
  tenantRpm: number;
  tenantTpm: number;
  /** How often in-flight calls check whether their task was cancelled or stopped. `FABRIC_GATEWAY_CANCEL_POLL_MS`, default 1000. */
  cancelPollMs: number;
  /**
   * How long a caller's checked session/task row may serve its calls from memory; a stop or end
   * announced by the database (migration 0021) drops it at once (0: read on every call).
   * `FABRIC_GATEWAY_CALLER_CACHE_MS`, default 1000.
   */
  callerCacheMs: number;
  /** Calls' worst cases one credit lease asks for (0: no leases, one reservation per call). `FABRIC_GATEWAY_LEASE_CALLS`, default 8. */
  leaseCalls: number;
  /** An agent's credit lease is handed back after this long without calls (0: as soon as its calls are settled). `FABRIC_GATEWAY_LEASE_IDLE_MS`, default 2000. */
  leaseIdleMs: number;
  /** Leased calls that end within this long are settled together, in one statement. `FABRIC_GATEWAY_SETTLE_DELAY_MS`, default 20. */
  settleDelayMs: number;
}

/** OpenTelemetry tracing from the standard OTEL_* variables (README "Tracing"); off unless an OTLP endpoint is set. */
export interface TracingConfig {
  /** On when OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set or OTEL_TRACES_EXPORTER=otlp, unless OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none. */
  enabled: boolean;
  /** `OTEL_SERVICE_NAME`, default agent-fabric. */
  serviceName: string;
  /** Where spans are POSTed (OTLP/HTTP JSON): `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as is, else `OTEL_EXPORTER_OTLP_ENDPOINT` + /v1/traces, else http://localhost:4318/v1/traces. */
  tracesUrl: string;
  /** Headers sent with every export (`OTEL_EXPORTER_OTLP_HEADERS`, then `…_TRACES_HEADERS`: k=v,k=v); they may hold a key, so they are never logged. */
  headers: Record<string, string>;
  /** `OTEL_TRACES_SAMPLER`, default parentbased_always_on. */
  sampler: 'always_on' | 'always_off' | 'traceidratio' | 'parentbased_always_on' | 'parentbased_always_off' | 'parentbased_traceidratio';
  /** Ratio of the traceidratio samplers. `OTEL_TRACES_SAMPLER_ARG`, default 1. */
  samplerRatio: number;
  /** Extra resource attributes. `OTEL_RESOURCE_ATTRIBUTES` (k=v,k=v). */
  resourceAttributes: Record<string, string>;
}

/** Everything the service reads from its environment, validated once at start. */
export interface FabricConfig {
  /** TCP port of the HTTP API. `PORT`, default 8787. */
  port: number;
  /** Interface to bind. `FABRIC_HOST`, default 127.0.0.1 (use 0.0.0.0 to expose). */
  host: string;
  /** `agent-fabric worker` only: port of its /healthz, /readyz and /metrics listener (0: any free port); unset, none. `FABRIC_WORKER_METRICS_PORT` */
  workerMetricsPort: number | undefined;
  /** Directory for the embedded database, secrets and local files. `FABRIC_DATA_DIR`, default ./.fabric */
  dataDir: string;
  /** PostgreSQL connection string; when set the embedded database is not used. `DATABASE_URL` */
  databaseUrl: string | undefined;
  /** Connections in the PostgreSQL pool. `FABRIC_DB_POOL_SIZE`, default 10. */
  dbPoolSize: number;
  /** How long to wait for a PostgreSQL connection before answering 503. `FABRIC_DB_CONNECT_TIMEOUT_MS`, default 5000. */
  dbConnectTimeoutMs: number;
  /** Longest a single statement may run on PostgreSQL. `FABRIC_DB_STATEMENT_TIMEOUT_MS`, default 30000. */
  dbStatementTimeoutMs: number;
  /** HS256 secret for JWTs (at least 32 characters). `FABRIC_JWT_SECRET` */
  jwtSecret: string | undefined;
  /** JWKS URL of an external identity provider. `FABRIC_JWKS_URL` */
  jwksUrl: string | undefined;
  /** Expected `iss` claim. `FABRIC_JWT_ISSUER`, default agent-fabric */
  jwtIssuer: string;
  /** Expected `aud` claim. `FABRIC_JWT_AUDIENCE`, default agent-fabric */
  jwtAudience: string;
  /** pino level. `FABRIC_LOG_LEVEL`, default info */
  logLevel: string;
  /** Append log lines to this file instead of stdout. `FABRIC_LOG_FILE` */
  logFile: string | undefined;
  tracing: TracingConfig;
  /** Largest accepted request body. `FABRIC_BODY_LIMIT_BYTES`, default 1 MiB. */
  bodyLimitBytes: number;
  /** How long an idempotent response is replayed. `FABRIC_IDEMPOTENCY_TTL_SECONDS`, default 86400. */
  idempotencyTtlSeconds: number;
  quotaDefaults: QuotaDefaults;
  /** Task attempts one worker runs at once. `FABRIC_WORKER_CONCURRENCY`, default 4. */
  workerConcurrency: number;
  /** How long a claimed task stays leased without renewal (a dead worker's tasks run again after this). `FABRIC_TASK_LEASE_SECONDS`, default 30. */
  taskLeaseSeconds: number;
  /** How long SIGTERM lets running attempts finish before releasing them. `FABRIC_DRAIN_TIMEOUT_SECONDS`, default 30. */
  drainTimeoutSeconds: number;
  /** Directory in-process handler modules (`isolation: none`) are loaded from. `FABRIC_HANDLERS_DIR`, default the working directory. */
  handlersDir: string;
  /** Slack-compatible webhook for alerts (dead letters, …). `FABRIC_ALERT_WEBHOOK_URL` */
  alertWebhookUrl: string | undefined;
  /** Channel named in alert bodies. `FABRIC_ALERT_CHANNEL`, default #fleet-ops. */
  alertChannel: string;
  sandbox: SandboxConfig;
  embeddings: EmbeddingsConfig;
  files: FilesConfig;
  /** How often expired memory keys are deleted (reads never return them anyway). `FABRIC_MEMORY_SWEEP_SECONDS`, default 60. */
  memorySweepSeconds: number;
  /** Retention (README "Retention"): `FABRIC_RETENTION_DAYS` (14), days artifacts and logs are kept unless the tenant sets its own; `FABRIC_RETENTION_SWEEP_SECONDS` (3600) between sweeps. */
  retention: { days: number; sweepSeconds: number };
  /** Budgets (README "Quotas and budgets"): `FABRIC_BUDGET_SWEEP_SECONDS` (10) between period resets, reservation sweeps and alert deliveries; `FABRIC_BUDGET_RESERVATION_TTL_SECONDS` (86400) before a task's unsettled reservation is released. */
  budgets: { sweepSeconds: number; reservationTtlSeconds: number };
  /** Policies (README "Policies and approvals"): `FABRIC_POLICY_CACHE_SECONDS` (5), longest agent attributes — and a tenant's policies, should a change notice be missed — are trusted; `FABRIC_APPROVAL_EXPIRES_SECONDS` (3600), how long an approval request waits by default; `FABRIC_POLICY_LOG_FLUSH_MS` (200), longest a decision waits before its batch is written. */
  policies: { cacheSeconds: number; approvalExpiresSeconds: number; logFlushMs: number };
  billing: BillingConfig;
  gateway: GatewayConfig;
  /** Bearer token GET /metrics requires (`FABRIC_METRICS_TOKEN`, ≥ 32 characters); unset = /metrics is open (bind the API to loopback or keep /metrics off the public path). */
  metricsToken: string | undefined;
  /** Default task timeouts per agent runtime (`FABRIC_TIMEOUT_PROFILES`) and the hard ceiling (`FABRIC_TASK_TIMEOUT_CEILING_SECONDS`). */
  timeouts: { profiles: Record<string, number> & { default: number }; ceilingSeconds: number };
  /** Alert rules and their evaluation (`FABRIC_ALERT_*`, README "Alert rules"). */
  alerts: AlertsConfig;
  /** Prometheus metrics: agent label cap, table gauge cache (`FABRIC_METRICS_*`, README "Metrics"). */
  metrics: MetricsConfig;
}

const int = (min: number) => z.coerce.number().int().min(min);

const EnvSchema = z.object({
  PORT: int(0).max(65535).default(8787),
  FABRIC_HOST: z.string().min(1).default('127.0.0.1'),
  FABRIC_WORKER_METRICS_PORT: int(0).max(65535).optional(),
  FABRIC_DATA_DIR: z.string().min(1).default('./.fabric'),
  DATABASE_URL: z.string().regex(/^postgres(ql)?:\/\//, 'must start with postgres:// or postgresql://').optional(),
  FABRIC_DB_POOL_SIZE: int(1).max(500).default(10),
  FABRIC_DB_CONNECT_TIMEOUT_MS: int(100).default(5000),
  FABRIC_DB_STATEMENT_TIMEOUT_MS: int(100).default(30_000),
  FABRIC_JWT_SECRET: z.string().min(32, 'must be at least 32 characters').optional(),
  FABRIC_JWKS_URL: z.url().optional(),
  FABRIC_JWT_ISSUER: z.string().min(1).default('agent-fabric'),
  FABRIC_JWT_AUDIENCE: z.string().min(1).default('agent-fabric'),
  FABRIC_LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  FABRIC_LOG_FILE: z.string().min(1).optional(),
  OTEL_SDK_DISABLED: z.enum(['true', 'false', 'TRUE', 'FALSE', '1', '0']).optional(),
  OTEL_TRACES_EXPORTER: z.enum(['otlp', 'none']).optional(),
  OTEL_SERVICE_NAME: z.string().min(1).default('agent-fabric'),
  OTEL_EXPORTER_OTLP_ENDPOINT: z.url().optional(),
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: z.url().optional(),
  OTEL_EXPORTER_OTLP_HEADERS: z.string().optional().transform((v, ctx) => parsePairs(v, ctx)),
  OTEL_EXPORTER_OTLP_TRACES_HEADERS: z.string().optional().transform((v, ctx) => parsePairs(v, ctx)),
  OTEL_TRACES_SAMPLER: z.enum(['always_on', 'always_off', 'traceidratio', 'parentbased_always_on', 'parentbased_always_off', 'parentbased_traceidratio']).default('parentbased_always_on'),
  OTEL_TRACES_SAMPLER_ARG: z.coerce.number().min(0).max(1).default(1),
  OTEL_RESOURCE_ATTRIBUTES: z.string().optional().transform((v, ctx) => parsePairs(v, ctx)),
  FABRIC_BODY_LIMIT_BYTES: int(1024).default(1024 * 1024),
  FABRIC_IDEMPOTENCY_TTL_SECONDS: int(60).default(86_400),
  FABRIC_WORKER_CONCURRENCY: int(1).max(1000).default(4),
  FABRIC_DRAIN_TIMEOUT_SECONDS: int(0).max(86_400).default(30),
  FABRIC_TASK_LEASE_SECONDS: int(1).max(3600).default(30),
  FABRIC_HANDLERS_DIR: z.string().min(1).default('.'),
  FABRIC_ALERT_WEBHOOK_URL: z.url().optional(),
  FABRIC_ALERT_CHANNEL: z.string().min(1).default('#fleet-ops'),
  FABRIC_MEMORY_SWEEP_SECONDS: int(1).max(86_400).default(60),
  FABRIC_RETENTION_DAYS: int(1).max(3650).default(14),
  FABRIC_RETENTION_SWEEP_SECONDS: int(10).max(86_400).default(3600),
  FABRIC_BUDGET_SWEEP_SECONDS: int(1).max(3600).default(10),
  FABRIC_BUDGET_RESERVATION_TTL_SECONDS: int(60).max(30 * 86_400).default(86_400),
  FABRIC_POLICY_CACHE_SECONDS: int(1).max(3600).default(5),
  FABRIC_APPROVAL_EXPIRES_SECONDS: int(1).max(30 * 86_400).default(3600),
  FABRIC_POLICY_LOG_FLUSH_MS: int(10).max(60_000).default(200),
  FABRIC_BILLING_DEFAULT_PLAN: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, 'must be a plan id such as free').optional(),
  FABRIC_BILLING_OVERAGE_CHECK_SECONDS: int(1).max(86_400).default(60),
  FABRIC_TIMEOUT_PROFILES: z
    .string()
    .default('default=600,node=600,python=600,shell=300,go=900,rust=900,java=1800,dotnet=1800')
    .transform((v, ctx) => parseProfiles(v, ctx)),
  FABRIC_TASK_TIMEOUT_CEILING_SECONDS: int(1).max(7 * 86_400).default(86_400),
  FABRIC_SANDBOX_DIR: z.string().min(1).default(path.join(os.tmpdir(), 'agent-fabric-sandbox')),
  FABRIC_SANDBOX_UID_BASE: int(1000).max(2 ** 31 - 100_000).default(200_000),
  FABRIC_SANDBOX_UID_COUNT: int(1).max(100_000).default(1000),
  FABRIC_SANDBOX_TMPFS_MB: int(0).max(1024 * 1024).default(256),
  FABRIC_SANDBOX_PIDS_LIMIT: int(8).max(100_000).default(128),
  FABRIC_SANDBOX_API_URL: z.url().optional(),
  FABRIC_SANDBOX_WARM_POOL_SIZE: int(0).max(64).default(1),
  FABRIC_SANDBOX_HEARTBEAT_TIMEOUT_SECONDS: int(3).max(3600).default(10),
  FABRIC_SANDBOX_STOP_GRACE_SECONDS: int(0).max(25).default(5),
  FABRIC_FILES_MAX_BYTES: int(1).default(50 * 1024 * 1024),
  FABRIC_STORAGE: z.enum(['local', 's3']).default('local'),
  FABRIC_FILES_DIR: z.string().min(1).optional(),
  FABRIC_S3_ENDPOINT: z.url().optional(),
  FABRIC_S3_BUCKET: z.string().regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'must be an S3 bucket name').optional(),
  FABRIC_S3_REGION: z.string().min(1).default('us-east-1'),
  FABRIC_S3_ACCESS_KEY_ID: z.string().min(1).optional(),
  FABRIC_S3_SECRET_ACCESS_KEY: z.string().min(1).optional(),
  FABRIC_S3_FORCE_PATH_STYLE: z.enum(['true', 'false', '1', '0']).default('false').transform((v) => v === 'true' || v === '1'),
  FABRIC_S3_PREFIX: z.string().regex(/^([a-z0-9][a-z0-9._-]*\/)*$/, 'must be empty or end with / (e.g. fabric/files/)').default(''),
  FABRIC_URL_SIGNING_SECRET: z.string().min(32, 'must be at least 32 characters').optional(),
  FABRIC_EMBEDDINGS_PROVIDER: z.enum(['local', 'openai']).default('local'),
  FABRIC_EMBEDDINGS_MODEL: z.string().min(1).max(200).optional(),
  FABRIC_EMBEDDINGS_BASE_URL: z.url().default('https://api.openai.com/v1'),
  FABRIC_EMBEDDINGS_API_KEY: z.string().min(1).optional(),
  FABRIC_EMBEDDINGS_DIMENSIONS: int(1).max(16_000).optional(),
  FABRIC_EMBEDDINGS_TIMEOUT_MS: int(100).default(30_000),
  FABRIC_EMBEDDINGS_MAX_RETRIES: int(0).max(20).default(4),
  FABRIC_EMBEDDINGS_BATCH_SIZE: int(1).max(2048).default(96),
  FABRIC_EMBEDDINGS_CACHE_DIR: z.string().min(1).optional(),
  FABRIC_SEMANTIC_CACHE_MB: int(1).default(512),
  FABRIC_DEFAULT_MONTHLY_TOKEN_LIMIT: int(0).default(1_000_000),
  FABRIC_DEFAULT_MONTHLY_COST_LIMIT_USD: z.coerce.number().min(0).default(100),
  FABRIC_DEFAULT_STORAGE_LIMIT_BYTES: int(0).default(5 * 1024 ** 3),
  FABRIC_DEFAULT_OVERAGE_POLICY: z.enum(['block', 'alert_only', 'allow']).default('block'),
  FABRIC_DEFAULT_ALERT_THRESHOLD_PCT: z.coerce.number().min(0).max(100).default(80),
  FABRIC_GATEWAY_UPSTREAMS: z.string().min(1).optional(),
  FABRIC_GATEWAY_FAKE: z.enum(['on', 'off', 'auto', '1', '0', 'true', 'false']).default('auto').transform((v) => (v === '1' || v === 'true' ? 'on' : v === '0' || v === 'false' ? 'off' : v)),
  FABRIC_GATEWAY_TIMEOUT_MS: int(100).max(3_600_000).default(120_000),
  FABRIC_GATEWAY_ATTEMPT_TIMEOUT_MS: int(50).max(3_600_000).default(60_000),
  FABRIC_GATEWAY_MAX_RETRIES: int(0).max(10).default(2),
  FABRIC_GATEWAY_RETRY_BASE_MS: int(1).max(60_000).default(250),
  FABRIC_GATEWAY_DEFAULT_MAX_TOKENS: int(1).max(1_000_000).default(4096),
  FABRIC_GATEWAY_AGENT_RPM: int(0).default(600),
  FABRIC_GATEWAY_AGENT_TPM: int(0).default(1_000_000),
  FABRIC_GATEWAY_TENANT_RPM: int(0).default(6000),
  FABRIC_GATEWAY_TENANT_TPM: int(0).default(10_000_000),
  FABRIC_GATEWAY_CANCEL_POLL_MS: int(50).max(60_000).default(1000),
  FABRIC_GATEWAY_CALLER_CACHE_MS: int(0).max(60_000).default(1000),
  ...monitoringEnv,
  FABRIC_METRICS_TOKEN: z.string().regex(/^[A-Za-z0-9._~+/=-]{32,512}$/, 'must be 32–512 characters of letters, digits and ._~+/=- (e.g. openssl rand -hex 32)').optional(),
  FABRIC_GATEWAY_LEASE_CALLS: int(0).max(1000).default(8),
  FABRIC_GATEWAY_LEASE_IDLE_MS: int(0).max(600_000).default(2000),
  FABRIC_GATEWAY_SETTLE_DELAY_MS: int(0).max(1000).default(20),
});

/** `FABRIC_GATEWAY_UPSTREAMS`: [{name, base_url, api_key | api_key_env, models: {id: {input_micros_per_1m, output_micros_per_1m}}}], inline or in a file. */
const UpstreamsJson = z.array(
  z
    .object({
      name: z.string().regex(/^[a-z0-9][a-z0-9_.-]{0,62}$/, 'a lower-case name such as openai'),
      base_url: z.url(),
      api_key: z.string().min(1).optional(),
      api_key_env: z.string().regex(/^[A-Z_][A-Z0-9_]*$/, 'an environment variable name').optional(),
      models: z.record(
        z.string().min(1).max(200),
        z.object({ input_micros_per_1m: z.number().int().min(0).default(0), output_micros_per_1m: z.number().int().min(0).default(0) }).strict(),
      ),
    })
    .strict(),
);

function parseUpstreams(raw: string | undefined, env: NodeJS.ProcessEnv): GatewayUpstream[] {
  if (!raw) return [];
  const where = raw.trimStart().startsWith('[') ? 'FABRIC_GATEWAY_UPSTREAMS' : `FABRIC_GATEWAY_UPSTREAMS (file ${raw})`;
  let json: unknown;
  try {
    json = JSON.parse(where === 'FABRIC_GATEWAY_UPSTREAMS' ? raw : fs.readFileSync(raw, 'utf8'));
  } catch (err) {
    throw new ConfigError(`invalid configuration:\n  ${where}: not readable JSON (${(err as Error).message})`);
  }
  const parsed = UpstreamsJson.safeParse(json);
  if (!parsed.success) throw new ConfigError(`invalid configuration:\n${parsed.error.issues.map((i) => `  ${where}.${i.path.join('.')}: ${i.message}`).join('\n')}`);
  return parsed.data.map((u) => {
    const apiKey = u.api_key ?? (u.api_key_env ? env[u.api_key_env] : undefined);
    if (u.api_key_env && !apiKey) throw new ConfigError(`invalid configuration:\n  ${where}: upstream ${u.name} reads its key from ${u.api_key_env}, which is not set`);
    return {
      name: u.name,
      baseUrl: u.base_url.replace(/\/+$/, ''),
      apiKey,
      models: Object.fromEntries(Object.entries(u.models).map(([id, p]) => [id, { inputMicrosPer1M: p.input_micros_per_1m, outputMicrosPer1M: p.output_micros_per_1m }])),
    };
  });
}

/** The OTEL `k=v,k=v` lists (headers, resource attributes); values are percent-decoded as the spec says. */
function parsePairs(value: string | undefined, ctx: z.RefinementCtx): Record<string, string> {
  const pairs: Record<string, string> = {};
  for (const part of (value ?? '').split(',').map((p) => p.trim()).filter(Boolean)) {
    const at = part.indexOf('=');
    if (at < 1) {
      ctx.addIssue({ code: 'custom', message: `an entry is not key=value (e.g. api-key=…)` });
      return {};
    }
    try {
      pairs[decodeURIComponent(part.slice(0, at).trim())] = decodeURIComponent(part.slice(at + 1).trim());
    } catch {
      ctx.addIssue({ code: 'custom', message: 'an entry has broken percent-encoding' });
      return {};
    }
  }
  return pairs;
}

/** `runtime=seconds,…` with a `default` entry, e.g. `default=600,java=1800`. */
function parseProfiles(value: string, ctx: z.RefinementCtx): Record<string, number> & { default: number } {
  const profiles: Record<string, number> = {};
  for (const part of value.split(',').map((p) => p.trim()).filter(Boolean)) {
    const m = /^([a-z][a-z0-9_.-]{0,31})=(\d+)$/.exec(part);
    if (!m || Number(m[2]) < 1) {
      ctx.addIssue({ code: 'custom', message: `"${part}" is not runtime=seconds (e.g. java=1800)` });
      return { default: 600 };
    }
    profiles[m[1]!] = Number(m[2]);
  }
  if (profiles.default === undefined) ctx.addIssue({ code: 'custom', message: 'needs a default=<seconds> entry' });
  return { ...profiles, default: profiles.default ?? 600 };
}

/** Raised when the environment is invalid; the message names every bad variable. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** Reads and validates configuration; `overrides` (from CLI flags) win over the environment. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env, overrides: Partial<FabricConfig> = {}): FabricConfig {
  const blankless = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ''));
  const parsed = EnvSchema.safeParse(blankless);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join('.')}: ${i.message}`);
    throw new ConfigError(`invalid configuration:\n${lines.join('\n')}`);
  }
  const e = parsed.data;
  if (e.FABRIC_STORAGE === 's3' && !e.FABRIC_S3_BUCKET) throw new ConfigError('invalid configuration:\n  FABRIC_S3_BUCKET: required when FABRIC_STORAGE=s3');
  const config: FabricConfig = {
    port: e.PORT,
    host: e.FABRIC_HOST,
    workerMetricsPort: e.FABRIC_WORKER_METRICS_PORT,
    dataDir: path.resolve(e.FABRIC_DATA_DIR),
    databaseUrl: e.DATABASE_URL,
    dbPoolSize: e.FABRIC_DB_POOL_SIZE,
    dbConnectTimeoutMs: e.FABRIC_DB_CONNECT_TIMEOUT_MS,
    dbStatementTimeoutMs: e.FABRIC_DB_STATEMENT_TIMEOUT_MS,
    jwtSecret: e.FABRIC_JWT_SECRET,
    jwksUrl: e.FABRIC_JWKS_URL,
    jwtIssuer: e.FABRIC_JWT_ISSUER,
    jwtAudience: e.FABRIC_JWT_AUDIENCE,
    logLevel: e.FABRIC_LOG_LEVEL,
    logFile: e.FABRIC_LOG_FILE === undefined ? undefined : path.resolve(e.FABRIC_LOG_FILE),
    tracing: tracingConfig(e),
    bodyLimitBytes: e.FABRIC_BODY_LIMIT_BYTES,
    idempotencyTtlSeconds: e.FABRIC_IDEMPOTENCY_TTL_SECONDS,
    quotaDefaults: {
      monthlyTokenLimit: e.FABRIC_DEFAULT_MONTHLY_TOKEN_LIMIT,
      monthlyCostLimitUsd: e.FABRIC_DEFAULT_MONTHLY_COST_LIMIT_USD,
      storageLimitBytes: e.FABRIC_DEFAULT_STORAGE_LIMIT_BYTES,
      overagePolicy: e.FABRIC_DEFAULT_OVERAGE_POLICY,
      alertThresholdPct: e.FABRIC_DEFAULT_ALERT_THRESHOLD_PCT,
    },
    workerConcurrency: e.FABRIC_WORKER_CONCURRENCY,
    drainTimeoutSeconds: e.FABRIC_DRAIN_TIMEOUT_SECONDS,
    taskLeaseSeconds: e.FABRIC_TASK_LEASE_SECONDS,
    handlersDir: path.resolve(e.FABRIC_HANDLERS_DIR),
    alertWebhookUrl: e.FABRIC_ALERT_WEBHOOK_URL,
    alertChannel: e.FABRIC_ALERT_CHANNEL,
    memorySweepSeconds: e.FABRIC_MEMORY_SWEEP_SECONDS,
    retention: { days: e.FABRIC_RETENTION_DAYS, sweepSeconds: e.FABRIC_RETENTION_SWEEP_SECONDS },
    budgets: { sweepSeconds: e.FABRIC_BUDGET_SWEEP_SECONDS, reservationTtlSeconds: e.FABRIC_BUDGET_RESERVATION_TTL_SECONDS },
    policies: { cacheSeconds: e.FABRIC_POLICY_CACHE_SECONDS, approvalExpiresSeconds: e.FABRIC_APPROVAL_EXPIRES_SECONDS, logFlushMs: e.FABRIC_POLICY_LOG_FLUSH_MS },
    billing: { defaultPlan: e.FABRIC_BILLING_DEFAULT_PLAN, overageCheckSeconds: e.FABRIC_BILLING_OVERAGE_CHECK_SECONDS },
    timeouts: { profiles: e.FABRIC_TIMEOUT_PROFILES, ceilingSeconds: e.FABRIC_TASK_TIMEOUT_CEILING_SECONDS },
    alerts: alertsConfigFrom(e),
    metrics: metricsConfigFrom(e),
    metricsToken: e.FABRIC_METRICS_TOKEN,
    gateway: {
      upstreams: parseUpstreams(e.FABRIC_GATEWAY_UPSTREAMS, env),
      fake: e.FABRIC_GATEWAY_FAKE as GatewayConfig['fake'],
      timeoutMs: e.FABRIC_GATEWAY_TIMEOUT_MS,
      attemptTimeoutMs: e.FABRIC_GATEWAY_ATTEMPT_TIMEOUT_MS,
      maxRetries: e.FABRIC_GATEWAY_MAX_RETRIES,
      retryBaseMs: e.FABRIC_GATEWAY_RETRY_BASE_MS,
      defaultMaxTokens: e.FABRIC_GATEWAY_DEFAULT_MAX_TOKENS,
      agentRpm: e.FABRIC_GATEWAY_AGENT_RPM,
      agentTpm: e.FABRIC_GATEWAY_AGENT_TPM,
      tenantRpm: e.FABRIC_GATEWAY_TENANT_RPM,
      tenantTpm: e.FABRIC_GATEWAY_TENANT_TPM,
      cancelPollMs: e.FABRIC_GATEWAY_CANCEL_POLL_MS,
      callerCacheMs: e.FABRIC_GATEWAY_CALLER_CACHE_MS,
      leaseCalls: e.FABRIC_GATEWAY_LEASE_CALLS,
      leaseIdleMs: e.FABRIC_GATEWAY_LEASE_IDLE_MS,
      settleDelayMs: e.FABRIC_GATEWAY_SETTLE_DELAY_MS,
    },
    files: {
      maxBytes: e.FABRIC_FILES_MAX_BYTES,
      storage: e.FABRIC_STORAGE,
      dir: e.FABRIC_FILES_DIR === undefined ? undefined : path.resolve(e.FABRIC_FILES_DIR),
      s3: {
        endpoint: e.FABRIC_S3_ENDPOINT,
        bucket: e.FABRIC_S3_BUCKET,
        region: e.FABRIC_S3_REGION,
        accessKeyId: e.FABRIC_S3_ACCESS_KEY_ID,
        secretAccessKey: e.FABRIC_S3_SECRET_ACCESS_KEY,
        forcePathStyle: e.FABRIC_S3_FORCE_PATH_STYLE,
        prefix: e.FABRIC_S3_PREFIX,
      },
      urlSigningSecret: e.FABRIC_URL_SIGNING_SECRET,
    },
    embeddings: {
      provider: e.FABRIC_EMBEDDINGS_PROVIDER,
      model: e.FABRIC_EMBEDDINGS_MODEL ?? (e.FABRIC_EMBEDDINGS_PROVIDER === 'local' ? 'wink-sg-100d-sif-v1' : 'text-embedding-3-small'),
      baseUrl: e.FABRIC_EMBEDDINGS_BASE_URL.replace(/\/+$/, ''),
      apiKey: e.FABRIC_EMBEDDINGS_API_KEY,
      dimensions: e.FABRIC_EMBEDDINGS_DIMENSIONS,
      timeoutMs: e.FABRIC_EMBEDDINGS_TIMEOUT_MS,
      maxRetries: e.FABRIC_EMBEDDINGS_MAX_RETRIES,
      batchSize: e.FABRIC_EMBEDDINGS_BATCH_SIZE,
      cacheDir: path.resolve(e.FABRIC_EMBEDDINGS_CACHE_DIR ?? path.join(e.FABRIC_DATA_DIR, 'embeddings')),
      searchCacheMb: e.FABRIC_SEMANTIC_CACHE_MB,
    },
    sandbox: {
      dir: path.resolve(e.FABRIC_SANDBOX_DIR),
      uidBase: e.FABRIC_SANDBOX_UID_BASE,
      uidCount: e.FABRIC_SANDBOX_UID_COUNT,
      tmpfsMb: e.FABRIC_SANDBOX_TMPFS_MB,
      pidsLimit: e.FABRIC_SANDBOX_PIDS_LIMIT,
      apiUrl: e.FABRIC_SANDBOX_API_URL,
      warmPoolSize: e.FABRIC_SANDBOX_WARM_POOL_SIZE,
      heartbeatTimeoutSeconds: e.FABRIC_SANDBOX_HEARTBEAT_TIMEOUT_SECONDS,
      stopGraceSeconds: e.FABRIC_SANDBOX_STOP_GRACE_SECONDS,
    },
  };
  const merged = { ...config, ...stripUndefined(overrides) };
  if (overrides.dataDir) merged.dataDir = path.resolve(overrides.dataDir);
  if (overrides.dataDir && !e.FABRIC_EMBEDDINGS_CACHE_DIR && !overrides.embeddings) merged.embeddings = { ...merged.embeddings, cacheDir: path.join(merged.dataDir, 'embeddings') };
  return merged;
}

function tracingConfig(e: z.infer<typeof EnvSchema>): TracingConfig {
  const disabled = e.OTEL_SDK_DISABLED?.toLowerCase() === 'true' || e.OTEL_SDK_DISABLED === '1' || e.OTEL_TRACES_EXPORTER === 'none';
  const endpoint = e.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ?? (e.OTEL_EXPORTER_OTLP_ENDPOINT ? `${e.OTEL_EXPORTER_OTLP_ENDPOINT.replace(/\/+$/, '')}/v1/traces` : undefined);
  return {
    enabled: !disabled && (endpoint !== undefined || e.OTEL_TRACES_EXPORTER === 'otlp'),
    serviceName: e.OTEL_SERVICE_NAME,
    tracesUrl: endpoint ?? 'http://localhost:4318/v1/traces',
    headers: { ...e.OTEL_EXPORTER_OTLP_HEADERS, ...e.OTEL_EXPORTER_OTLP_TRACES_HEADERS },
    sampler: e.OTEL_TRACES_SAMPLER,
    samplerRatio: e.OTEL_TRACES_SAMPLER_ARG,
    resourceAttributes: e.OTEL_RESOURCE_ATTRIBUTES,
  };
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
