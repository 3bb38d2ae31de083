import { loadConfig, type FabricConfig } from '../config/index.js';
import { startFabric, type FabricMode } from '../server/index.js';
import { parseFlags, portFlag } from './args.js';
import { DEV_HELP, SERVE_HELP } from './help.js';



/** `dev` and `serve`: start, print where to reach it, stop cleanly on SIGINT/SIGTERM. */
export async function runServer(argv: string[], mode: FabricMode): Promise<void> {
  const flags = parseFlags(argv, {
    port: { type: 'string' },
    host: { type: 'string' },
    ...(mode === 'dev' ? { 'data-dir': { type: 'string' } } : {}),
  });
  if (flags.help) return void console.log(mode === 'dev' ? DEV_HELP : SERVE_HELP);
  const overrides: Partial<FabricConfig> = {
    port: portFlag(flags.port as string | undefined),
    host: flags.host as string | undefined,
    dataDir: flags['data-dir'] as string | undefined,
  };
  const config = loadConfig(process.env, overrides);
  const fabric = await startFabric(config, mode);

  console.log(`\nagent-fabric ${mode} is serving on ${fabric.url}`);
  console.log(`  database   ${fabric.db.engine === 'pglite' ? `embedded PGlite in ${config.dataDir} (development and single-node use)` : 'PostgreSQL (DATABASE_URL)'}`);
  console.log(`  API docs   ${fabric.url}/docs   (OpenAPI: ${fabric.url}/openapi.json)`);
  console.log(`  health     ${fabric.url}/healthz  ${fabric.url}/readyz  ${fabric.url}/metrics`);
  if (fabric.adminToken) {
    console.log(`\nAdmin token for tenant "default" (valid 24 h; mint more with \`npx agent-fabric token --role admin --tenant default\`):\n`);
    console.log(`  export FABRIC_TOKEN=${fabric.adminToken}\n`);
  }

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    console.log(`\n${signal}: shutting down`);
    fabric.close().then(
      () => process.exit(0),
      (err: unknown) => {
        console.error(err);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}
