#!/usr/bin/env node
import { ConfigError } from '../config/index.js';
import { DataDirLockedError } from '../db/index.js';
import { UsageError } from './args.js';
import { runMigrate, MIGRATE_HELP } from './migrate.js';
import { DEV_HELP, runServer, SERVE_HELP } from './run.js';
import { runToken, TOKEN_HELP } from './token.js';

const HELP = `agent-fabric — runs fleets of AI agents safely

Usage: agent-fabric <command> [options]

Commands:
  dev       run everything in one process on the embedded database
  serve     run the API against PostgreSQL (DATABASE_URL)
  migrate   apply database migrations
  token     mint a JWT for local use

Run \`agent-fabric <command> --help\` for a command's options.`;

const commands: Record<string, { run: (argv: string[]) => Promise<void>; help: string }> = {
  dev: { run: (argv) => runServer(argv, 'dev'), help: DEV_HELP },
  serve: { run: (argv) => runServer(argv, 'serve'), help: SERVE_HELP },
  migrate: { run: runMigrate, help: MIGRATE_HELP },
  token: { run: runToken, help: TOKEN_HELP },
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
    if (err instanceof ConfigError || err instanceof DataDirLockedError) {
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
