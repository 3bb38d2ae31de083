import { openPglite } from './pglite.js';
import { openPostgres } from './postgres.js';
import type { FabricConfig } from '../config/index.js';
import type { Db } from './types.js';

export type { Db, DbEngine, Queryable, QueryResult, Tx } from './types.js';
export { withTransaction, type TransactionOptions } from './transaction.js';
export { migrate, pendingMigrations, loadMigrations, MIGRATIONS_DIR, type Migration, type MigrateResult } from './migrate.js';
export { openPglite, type PgliteOptions } from './pglite.js';
export { openPostgres, type PostgresOptions } from './postgres.js';
export { DataDirLockedError } from './lockfile.js';
export { encodeCursor, decodeCursor, type PageCursor } from './cursor.js';
export { TenantFlagCache } from './tenant-flag-cache.js';
export { safeListener } from './listeners.js';
export { PG_CODES, pgCode, isUnavailableError } from './errors.js';

/** The configuration fields that choose and tune the engine. */
export type OpenDbOptions = Pick<FabricConfig, 'databaseUrl' | 'dataDir' | 'dbPoolSize' | 'dbConnectTimeoutMs' | 'dbStatementTimeoutMs'>;

/** Opens the configured engine: PostgreSQL when a URL is given, else PGlite in the data dir. */
export async function openDb(config: OpenDbOptions): Promise<Db> {
  if (config.databaseUrl)
    return openPostgres({ url: config.databaseUrl, poolSize: config.dbPoolSize, connectTimeoutMs: config.dbConnectTimeoutMs, statementTimeoutMs: config.dbStatementTimeoutMs });
  return openPglite({ dataDir: config.dataDir });
}
