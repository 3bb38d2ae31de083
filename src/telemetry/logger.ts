import { pino, type DestinationStream, type Logger } from 'pino';
import { currentContext } from './context.js';
import { scrubError, scrubText } from './scrub.js';
import { activeTraceIds } from './tracing.js';

/**
 * Keys whose values never reach a log line (NFR-SEC-2, managed-execution-prd §14.5 and §14.15):
 * credentials (tokens, keys, secrets, passwords, signatures), authorization and cookie headers,
 * and the bodies of model calls (prompts, messages, inputs, completions) — at the top of a
 * line and one level down (pino's redaction is path-based; deeper copies are the caller's
 * job, and error messages and URLs are scrubbed by the serializers below).
 */
const SECRET_KEYS = [
  'authorization',
  'cookie',
  'set-cookie',
  'x-api-key',
  'api-key',
  'token',
  'access_token',
  'refresh_token',
  'id_token',
  'session_token',
  'secret',
  'client_secret',
  'password',
  'passphrase',
  'api_key',
  'apiKey',
  'jwtSecret',
  'secretAccessKey',
  'urlSigningSecret',
  'private_key',
  'sig',
  'signature',
  // header sets whole: any header may be a credential (a vendor's api-key, a proxy's auth)
  'headers',
  'messages',
  'prompt',
  'input',
  'content',
  'completion',
  'choices',
];

/** pino redact paths: each secret key at the top level and one level down (so `req.headers`, `tracing.headers`). */
export const REDACT_PATHS = [
  ...SECRET_KEYS.map((k) => (/^[A-Za-z_$][\w$]*$/.test(k) ? k : `["${k}"]`)),
  ...SECRET_KEYS.map((k) => (/^[A-Za-z_$][\w$]*$/.test(k) ? `*.${k}` : `*["${k}"]`)),
  'req.body',
];

export interface LoggerOptions {
  /** pino level; default info. */
  level?: string;
  /** Where lines go; default stdout (or `file`). Tests pass a stream to read what was logged. */
  destination?: DestinationStream;
  /** Append lines to this file (FABRIC_LOG_FILE) instead of stdout. */
  file?: string;
}

/** One synchronous appending destination per file and process: several loggers may share it. */
const files = new Map<string, DestinationStream>();

function fileDestination(file: string): DestinationStream {
  let d = files.get(file);
  // sync: a line is on disk when the call returns, so a crash or process.exit loses none (the
  // test runner greps these files); O_APPEND keeps lines of processes sharing a file whole.
  if (!d) files.set(file, (d = pino.destination({ dest: file, sync: true, append: true, mkdir: true })));
  return d;
}

/** A JSON logger that stamps the current correlation ids (request_id, tenant_id, …) on every line. */
export function createLogger(options: LoggerOptions = {}): Logger {
  return pino(
    {
      level: options.level ?? 'info',
      base: { service: 'agent-fabric' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      mixin: () => ({ ...currentContext(), ...activeTraceIds() }),
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      // An error's message or stack may quote a URL with a key or signature, a bearer token or a
      // connection string; a URL field may carry a signed query.
      serializers: { err: scrubError, error: scrubError, url: scrubText, href: scrubText, webhook: scrubText },
      // …and so may the message itself, when a caller interpolated an error's text into it
      hooks: {
        logMethod(args, method) {
          method.apply(this, args.map((a) => (typeof a === 'string' ? scrubText(a) : a)) as Parameters<typeof method>);
        },
      },
    },
    options.destination ?? (options.file ? fileDestination(options.file) : undefined),
  );
}

// Until start-up applies the validated config, honour FABRIC_LOG_LEVEL if it is a level at all
// (so tests and tools can silence output) and FABRIC_LOG_FILE (the test runner collects every
// process's lines there); bad values are reported by config validation.
const early = process.env.FABRIC_LOG_LEVEL;
let root: Logger = createLogger({ level: early && early in pino.levels.values || early === 'silent' ? early : 'info', file: process.env.FABRIC_LOG_FILE || undefined });

/** The process-wide logger every capability logs through. */
export function logger(): Logger {
  return root;
}

/** Replaces the process-wide logger (at start, from config; in tests, to capture output). */
export function setLogger(next: Logger): void {
  root = next;
}
