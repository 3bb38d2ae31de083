import { loadConfig } from '../config/index.js';
import { migrate, openDb } from '../db/index.js';
import { ensureDefaultTenant } from '../tenancy/index.js';
import { createLogger, setLogger } from '../telemetry/index.js';
import { parseFlags } from './args.js';
import { MIGRATE_HELP } from './help.js';


export async function runMigrate(argv: string[]): Promise<void> {
  const flags = parseFlags(argv, { 'data-dir': { type: 'string' } });
  if (flags.help) return void console.log(MIGRATE_HELP);
  const config = loadConfig(process.env, { dataDir: flags['data-dir'] as string | undefined });
  setLogger(createLogger({ level: 'warn', file: config.logFile }));
  const db = await openDb(config);
  try {
    const { applied, current } = await migrate(db);
    await ensureDefaultTenant(db);
    console.log(applied.length ? `applied migrations ${applied.join(', ')}; schema is at version ${current}` : `schema is current (version ${current})`);
  } finally {
    await db.close();
  }
}
