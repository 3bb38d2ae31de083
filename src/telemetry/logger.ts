import { pino, type DestinationStream, type Logger } from 'pino';
import { currentContext } from './context.js';

/** Paths whose values never reach a log line (NFR-SEC-2). */
export const REDACT_PATHS = [
  'authorization',
  'headers.authorization',
  'req.headers.authorization',
  'token',
  '*.token',
  'secret',
  '*.secret',
  'password',
  '*.password',
  'api_key',
  '*.api_key',
  'jwtSecret',
  '*.jwtSecret',
];

export interface LoggerOptions {
  /** pino level; default info. */
  level?: string;
  /** Where lines go; default stdout. Tests pass a stream to read what was logged. */
  destination?: DestinationStream;
}

/** A JSON logger that stamps the current correlation ids (request_id, tenant_id, …) on every line. */
export function createLogger(options: LoggerOptions = {}): Logger {
  return pino(
    {
      level: options.level ?? 'info',
      base: { service: 'agent-fabric' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      mixin: () => ({ ...currentContext() }),
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    },
    options.destination,
  );
}

// Until start-up applies the validated config, honour FABRIC_LOG_LEVEL if it is a level at all
// (so tests and tools can silence output); a bad value is reported by config validation.
const early = process.env.FABRIC_LOG_LEVEL;
let root: Logger = createLogger({ level: early && early in pino.levels.values || early === 'silent' ? early : 'info' });

/** The process-wide logger every capability logs through. */
export function logger(): Logger {
  return root;
}

/** Replaces the process-wide logger (at start, from config; in tests, to capture output). */
export function setLogger(next: Logger): void {
  root = next;
}
