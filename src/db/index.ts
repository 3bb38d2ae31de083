import { openPglite } from './pglite.js';
import { openPostgres } from './postgres.js';
import type { Db } from './types.js';

export type { Db, DbEngine, Queryable, QueryResult } from './types.js';
export { withTransaction, type TransactionOptions } from './transaction.js';
export { migrate, pendingMigrations, loadMigrations, MIGRATIONS_DIR, type Migration, type MigrateResult } from './migrate.js';
export { openPglite, type PgliteOptions } from './pglite.js';
export { openPostgres, type PostgresOptions } from './postgres.js';
export { DataDirLockedError } from './lockfile.js';
export { encodeCursor, decodeCursor, type PageCursor } from './cursor.js';
export { PG_CODES, pgCode, isConnectionError } from './errors.js';

export interface OpenDbOptions {
  /** When set, PostgreSQL through `pg`; otherwise the embedded PGlite engine. */
  databaseUrl?: string | undefined;
  /** Data directory for the embedded engine. */
  dataDir: string;
  poolSize?: number;
}

/** Opens the configured engine: PostgreSQL when a URL is given, else PGlite in the data dir. */
export async function openDb(options: OpenDbOptions): Promise<Db> {
  if (options.databaseUrl) return openPostgres({ url: options.databaseUrl, poolSize: options.poolSize ?? 10 });
  return openPglite({ dataDir: options.dataDir });
}
