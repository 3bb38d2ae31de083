import { pino, type DestinationStream, type Logger } from 'pino';
import { currentContext } from './context.js';
import { CENSOR, redactSecrets } from './redact.js';
import { scrubError, scrubText } from './scrub.js';
import { activeTraceIds } from './tracing.js';

/** pino redact paths beside redactSecrets (which covers every secret key at any depth): a logged request's body. */
export const REDACT_PATHS = ['req.body'];

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
  const log = pino(
    {
      level: options.level ?? 'info',
      base: { service: 'agent-fabric' },
      timestamp: pino.stdTimeFunctions.isoTime,
      // every secret key at any depth (redact.ts): one walk, copy on write
      formatters: { level: (label) => ({ level: label }), log: (object) => redactSecrets(object) },
      mixin: () => ({ ...currentContext(), ...activeTraceIds() }),
      redact: { paths: REDACT_PATHS, censor: CENSOR },
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
  // a child's bindings are written once, at its creation, past the log formatter (pino resets
  // the bindings formatter for children): redacted here, for children of children too (they
  // inherit this method)
  const child = log.child;
  log.child = function (this: Logger, bindings, childOptions) {
    return child.call(this, redactSecrets(bindings), childOptions);
  } as Logger['child'];
  return log;
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
