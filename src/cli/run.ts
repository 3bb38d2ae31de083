import { loadConfig, type FabricConfig } from '../config/index.js';
import { startFabric, type FabricMode } from '../server/index.js';
import { countFlag, parseFlags, portFlag } from './args.js';
import { DEV_HELP, SERVE_HELP, WORKER_HELP } from './help.js';

function printEndpoints(url: string): void {
  console.log(`  API docs   ${url}/docs   (OpenAPI: ${url}/openapi.json)`);
  console.log(`  health     ${url}/healthz  ${url}/readyz  ${url}/metrics`);
}

/** `dev`, `serve` and `worker`: start, print where to reach it, stop cleanly on SIGINT/SIGTERM. */
export async function runServer(argv: string[], mode: FabricMode): Promise<void> {
  const flags = parseFlags(argv, {
    workers: { type: 'string' },
    host: { type: 'string' },
    ...(mode !== 'worker' ? { port: { type: 'string' } } : { 'metrics-port': { type: 'string' } }),
    ...(mode === 'dev' ? { 'data-dir': { type: 'string' } } : {}),
  }) as Record<string, string | boolean | undefined>;
  if (flags.help) return void console.log({ dev: DEV_HELP, serve: SERVE_HELP, worker: WORKER_HELP }[mode]);
  const workers = countFlag(flags.workers as string | undefined, '--workers') ?? 1;
  const metricsPort = portFlag(flags['metrics-port'] as string | undefined, '--metrics-port');
  const overrides: Partial<FabricConfig> = {
    port: portFlag(flags.port as string | undefined),
    ...(metricsPort !== undefined ? { workerMetricsPort: metricsPort } : {}),
    host: flags.host as string | undefined,
    dataDir: flags['data-dir'] as string | undefined,
  };
  const config = loadConfig(process.env, overrides);
  const fabric = await startFabric(config, mode, { workers });

  if (!fabric.url) console.log(`\nagent-fabric worker is running ${workers} worker(s) against PostgreSQL`);
  else console.log(`\nagent-fabric ${mode} is serving on ${fabric.url} with ${workers} worker(s)`);
  if (fabric.url) printEndpoints(fabric.url);
  if (fabric.probeUrl) console.log(`  health     ${fabric.probeUrl}/healthz  ${fabric.probeUrl}/readyz  ${fabric.probeUrl}/metrics`);
  else if (mode === 'worker') console.log('  metrics    none served (give --metrics-port N or FABRIC_WORKER_METRICS_PORT to serve /healthz, /readyz and /metrics)');
  console.log(`  database   ${fabric.db.engine === 'pglite' ? `embedded PGlite in ${config.dataDir} (development and single-node use)` : 'PostgreSQL (DATABASE_URL)'}`);
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
