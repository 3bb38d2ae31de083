import { loadConfig } from '../config/index.js';
import { migrate, openDb } from '../db/index.js';
import { ensureDefaultTenant } from '../tenancy/index.js';
import { createLogger, setLogger } from '../telemetry/index.js';
import { parseFlags } from './args.js';

export const MIGRATE_HELP = `agent-fabric migrate [--data-dir DIR]

Applies pending database migrations under an advisory lock (safe to run from several
processes at once) and creates the "default" tenant. Uses DATABASE_URL when set,
otherwise the embedded database in the data dir (which must not be in use).

  --data-dir DIR  data directory (env FABRIC_DATA_DIR, default ./.fabric)`;

export async function runMigrate(argv: string[]): Promise<void> {
  const flags = parseFlags(argv, { 'data-dir': { type: 'string' } });
  if (flags.help) return void console.log(MIGRATE_HELP);
  const config = loadConfig(process.env, { dataDir: flags['data-dir'] as string | undefined });
  setLogger(createLogger({ level: 'warn' }));
  const db = await openDb({ databaseUrl: config.databaseUrl, dataDir: config.dataDir });
  try {
    const { applied, current } = await migrate(db);
    await ensureDefaultTenant(db);
    console.log(applied.length ? `applied migrations ${applied.join(', ')}; schema is at version ${current}` : `schema is current (version ${current})`);
  } finally {
    await db.close();
  }
}
