#!/usr/bin/env node
import { UsageError } from './args.js';
import { AUDIT_HELP, DEV_HELP, MIGRATE_HELP, SERVE_HELP, TOKEN_HELP, WORKER_HELP } from './help.js';

const HELP = `agent-fabric — runs fleets of AI agents safely

Usage: agent-fabric <command> [options]

Commands:
  dev       run everything in one process on the embedded database
  serve     run the API (and a worker) against PostgreSQL (DATABASE_URL)
  worker    run workers only against PostgreSQL
  migrate   apply database migrations
  token     mint a JWT for local use
  audit     verify the audit log's hash chain (audit verify)

Run \`agent-fabric <command> --help\` for a command's options.`;

// Commands load lazily: `token` and `--help` should not pay for PGlite and Fastify.
const commands: Record<string, { run: (argv: string[]) => Promise<void>; help: string }> = {
  dev: { run: async (argv) => (await import('./run.js')).runServer(argv, 'dev'), help: DEV_HELP },
  serve: { run: async (argv) => (await import('./run.js')).runServer(argv, 'serve'), help: SERVE_HELP },
  worker: { run: async (argv) => (await import('./run.js')).runServer(argv, 'worker'), help: WORKER_HELP },
  migrate: { run: async (argv) => (await import('./migrate.js')).runMigrate(argv), help: MIGRATE_HELP },
  token: { run: async (argv) => (await import('./token.js')).runToken(argv), help: TOKEN_HELP },
  audit: { run: async (argv) => (await import('./audit.js')).runAudit(argv), help: AUDIT_HELP },
};

async function main(argv: string[]): Promise<void> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') return void console.log(HELP);
  const command = commands[name];
  if (!command) {
    console.error(`unknown command "${name}"\n\n${HELP}`);
    process.exit(2);
  }
  try {
    await command.run(rest);
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(`error: ${err.message}\n\n${command.help}`);
      process.exit(2);
    }
    // Matched by name so this module loads no database code (see the lazy imports above).
    if (err instanceof Error && (err.name === 'ConfigError' || err.name === 'DataDirLockedError')) {
      console.error(`error: ${err.message}`);
      process.exit(1);
    }
    throw err;
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
