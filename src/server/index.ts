import { createTokenVerifier, loadOrCreateDevSecret, mintToken, type TokenOptions } from '../auth/index.js';
import { ConfigError, type FabricConfig } from '../config/index.js';
import { migrate, openDb, type Db } from '../db/index.js';
import { buildApp, sweepIdempotencyKeys, type App } from '../http/index.js';
import { ensureDefaultTenant, DEFAULT_TENANT_ID } from '../tenancy/index.js';
import { createLogger, logger, setLogger } from '../telemetry/index.js';

export type FabricMode = 'dev' | 'serve';

/** A running fabric: its API, database and how to stop it. */
export interface RunningFabric {
  app: App;
  db: Db;
  url: string;
  tokenOptions: TokenOptions;
  /** An admin token for the default tenant, minted at start in dev mode when the secret is the generated one. */
  adminToken: string | undefined;
  /** Whether the JWT secret was generated on this start. */
  secretCreated: boolean;
  close(): Promise<void>;
}

/** Lifetime of the admin token printed by `dev`. */
const DEV_ADMIN_TOKEN_TTL = '24h';

/** How often expired idempotency records are deleted. */
const SWEEP_INTERVAL_MS = 10 * 60 * 1000;

/** Resolves the signing/verification keys: configured secret or JWKS, else (dev only) a secret kept in the data dir. */
export function resolveTokenOptions(config: FabricConfig, mode: FabricMode): { options: TokenOptions; created: boolean; devSecret: boolean } {
  const base = { issuer: config.jwtIssuer, audience: config.jwtAudience };
  if (config.jwtSecret || config.jwksUrl) return { options: { ...base, secret: config.jwtSecret, jwksUrl: config.jwksUrl }, created: false, devSecret: false };
  if (mode === 'serve') throw new ConfigError('serve needs FABRIC_JWT_SECRET (≥ 32 characters) or FABRIC_JWKS_URL; `agent-fabric dev` generates a local secret instead.');
  const { secret, created } = loadOrCreateDevSecret(config.dataDir);
  return { options: { ...base, secret }, created, devSecret: true };
}

/** Opens the database, migrates, seeds the default tenant and starts the API (and, in dev, everything else in-process). */
export async function startFabric(config: FabricConfig, mode: FabricMode): Promise<RunningFabric> {
  setLogger(createLogger({ level: config.logLevel }));
  if (mode === 'serve' && !config.databaseUrl) throw new ConfigError('serve runs against PostgreSQL: set DATABASE_URL (use `agent-fabric dev` for the embedded database).');
  // The database (and with it the data-dir lock) comes first, so two processes starting at
  // once never both create the dev secret.
  const db = await openDb(config);
  let app: App | undefined;
  let tokenOptions: TokenOptions;
  let created = false;
  let devSecret = false;
  try {
    ({ options: tokenOptions, created, devSecret } = resolveTokenOptions(config, mode));
    await migrate(db);
    await ensureDefaultTenant(db);
    app = await buildApp({ db, config, verifyToken: createTokenVerifier(tokenOptions) });
    await app.listen({ port: config.port, host: config.host });
  } catch (err) {
    await app?.close().catch(() => {});
    await db.close();
    throw err;
  }
  const sweeper = setInterval(() => {
    sweepIdempotencyKeys(db).catch((err: unknown) => logger().warn({ err }, 'idempotency sweep failed'));
  }, SWEEP_INTERVAL_MS);
  sweeper.unref();

  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  const url = `http://${config.host.includes(':') ? `[${config.host}]` : config.host}:${port}`;
  const adminToken =
    mode === 'dev' && devSecret
      ? await mintToken(tokenOptions, { sub: 'dev-admin', role: 'admin', tenant: DEFAULT_TENANT_ID, ttl: DEV_ADMIN_TOKEN_TTL })
      : undefined;
  logger().info({ url, mode, engine: db.engine }, 'agent-fabric is serving');

  const running = app;
  let closed = false;
  return {
    app: running,
    db,
    url,
    tokenOptions,
    adminToken,
    secretCreated: created,
    async close() {
      if (closed) return;
      closed = true;
      clearInterval(sweeper);
      await running.close();
      await db.close();
    },
  };
}
