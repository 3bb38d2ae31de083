import { verifyAudit } from '../audit/verify.js';
import { TENANT_ID_PATTERN } from '../auth/index.js';
import { loadConfig } from '../config/index.js';
import { openDb } from '../db/index.js';
import { createLogger, setLogger } from '../telemetry/index.js';
import { parseFlags, UsageError } from './args.js';
import { AUDIT_HELP } from './help.js';

/**
 * `agent-fabric audit verify`: walks every tenant's hash chain (or one) and exits 1 naming the
 * first broken row of each broken chain; 0 when every chain is intact.
 */
export async function runAudit(argv: string[]): Promise<void> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '--help' || sub === '-h') return void console.log(AUDIT_HELP);
  if (sub !== 'verify') throw new UsageError(`unknown audit command "${sub}"; the one command is "verify"`);
  const flags = parseFlags(rest, { tenant: { type: 'string' }, 'data-dir': { type: 'string' }, json: { type: 'boolean' } });
  if (flags.help) return void console.log(AUDIT_HELP);
  const tenant = flags.tenant as string | undefined;
  if (tenant !== undefined && tenant !== 'platform' && !TENANT_ID_PATTERN.test(tenant))
    throw new UsageError(`--tenant must be a tenant id (lowercase letters, digits, dashes) or "platform", got "${tenant}"`);
  const config = loadConfig(process.env, { dataDir: flags['data-dir'] as string | undefined });
  setLogger(createLogger({ level: 'warn', file: config.logFile }));
  const db = await openDb(config);
  try {
    // "platform" names the chain of platform-level rows (tenant_id NULL), verified with the rest when no --tenant is given.
    const reports = await verifyAudit(db, tenant === undefined ? {} : { tenantId: tenant === 'platform' ? null : tenant });
    const broken = reports.filter((r) => !r.ok);
    if (flags.json) console.log(JSON.stringify({ ok: broken.length === 0, chains: reports }, null, 2));
    else {
      for (const r of reports) {
        const name = r.tenant_id === null ? 'platform' : `tenant ${r.tenant_id}`;
        if (r.ok) console.log(`ok      ${name}: ${r.rows} rows, head ${r.head.seq} ${r.head.hash}`);
        else {
          const where = r.broken!.id === null ? 'at the chain head' : `at audit_log id ${r.broken!.id} (position ${r.broken!.chain_seq ?? 'none'})`;
          console.log(`BROKEN  ${name} ${where}: ${r.broken!.reason}; ${r.rows} rows before it verified (last good position ${r.head.seq}, hash ${r.head.hash})`);
        }
      }
      if (reports.length === 0) console.log('no audit rows yet');
      console.log(broken.length ? `audit chain broken in ${broken.length} of ${reports.length} chains` : `audit chain intact (${reports.length} chains)`);
    }
    if (broken.length) process.exitCode = 1;
  } finally {
    await db.close();
  }
}
