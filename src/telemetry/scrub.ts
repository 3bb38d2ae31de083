import { pino } from 'pino';
import { CENSOR, isSecretKey } from './redact.js';

/**
 * Secrets that hide inside free text — an error message quoting a URL with a key or a
 * signature, a connection string with a password, a bearer token, a provider key or a JWT —
 * replaced before a line is written. Key-based redaction (redact.ts) cannot see these.
 */
const PATTERNS: [RegExp, string][] = [
  // query parameters that carry credentials (signed URLs, keys in URLs)
  [/([?&;](?:sig|signature|token|access_token|key|api[-_]?key|apikey|secret|password|x-amz-signature|x-amz-credential|x-amz-security-token)=)[^&\s"'#]+/gi, '$1[redacted]'],
  // user:password@ in any URL (database and proxy URLs)
  [/\b([a-z][a-z0-9+.-]*:\/\/[^/\s:@]*:)[^@\s/]+@/gi, '$1[redacted]@'],
  [/\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,}/g, '$1 [redacted]'],
  // JWTs (session tokens, agent tokens)
  [/\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}/g, '[redacted-jwt]'],
  // OpenAI-style and similar provider keys
  [/\b(sk|rk|pk)-[A-Za-z0-9_-]{12,}/g, '$1-[redacted]'],
];

/** `text` with embedded credentials replaced by [redacted]; anything else is returned as is. */
export function scrubText(text: unknown): unknown {
  if (typeof text !== 'string') return text;
  let out = text;
  for (const [re, to] of PATTERNS) out = out.replace(re, to);
  return out;
}

/** pino's error serializer, then every string it produced scrubbed (message, stack, causes, own fields). */
export function scrubError(err: unknown): unknown {
  if (!(err instanceof Error)) return typeof err === 'string' ? scrubText(err) : err;
  return scrubValue(pino.stdSerializers.err(err), 0);
}

function scrubValue(v: unknown, depth: number): unknown {
  if (typeof v === 'string') return scrubText(v);
  if (depth > 4 || v === null || typeof v !== 'object') return v;
  if (Array.isArray(v)) return v.map((x) => scrubValue(x, depth + 1));
  // an error's `config` (an HTTP client's request options) holds its credentials too
  return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, isSecretKey(k) || k === 'config' ? CENSOR : scrubValue(x, depth + 1)]));
}
