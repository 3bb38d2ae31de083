import { parseArgs, type ParseArgsConfig } from 'node:util';

/** Thrown for a bad command line; main prints it with the command's usage and exits 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

type Options = NonNullable<ParseArgsConfig['options']>;

/** Parses flags strictly; `--help` is always accepted. */
export function parseFlags<O extends Options>(argv: string[], options: O) {
  try {
    return parseArgs({ args: argv, options: { ...options, help: { type: 'boolean', short: 'h' } }, strict: true, allowPositionals: false }).values;
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

/** Parses a --port value. */
export function portFlag(value: string | undefined, name = '--port'): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new UsageError(`${name} must be an integer 0–65535, got "${value}"`);
  return n;
}

/** Parses a non-negative integer flag such as --workers. */
export function countFlag(value: string | undefined, name: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 64) throw new UsageError(`${name} must be an integer 0–64, got "${value}"`);
  return n;
}
