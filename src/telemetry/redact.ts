/**
 * Keys whose values never reach a log line (NFR-SEC-2, managed-execution-prd §14.5 and §14.15):
 * credentials (tokens, keys, secrets, passwords, signatures), authorization and cookie headers,
 * and the bodies of model calls (prompts, messages, inputs, completions). Matched without regard
 * to case, at any depth of a line's object (error messages and URLs are scrubbed by scrub.ts).
 */
export const SECRET_KEYS = [
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
] as const;

export const CENSOR = '[redacted]';

const SECRET = new Set<string>(SECRET_KEYS.map((k) => k.toLowerCase()));

/** Whether a key's value is a secret (case-insensitive). */
export const isSecretKey = (key: string): boolean => SECRET.has(key.toLowerCase());

/** Deeper than this a line's object is left as it is (and a cycle stops here). */
const MAX_DEPTH = 10;

/**
 * `value` with every secret key's value replaced by "[redacted]", in plain objects and arrays at
 * any depth. Copy on write: what the caller passed is never changed, and a line without secrets
 * is returned as it came (no allocation). Errors, dates, buffers and other class instances are
 * left to their serializers.
 */
export function redactSecrets<T>(value: T, depth = 0): T {
  if (value === null || typeof value !== 'object' || depth >= MAX_DEPTH) return value;
  if (Array.isArray(value)) {
    let out: unknown[] | undefined;
    for (let i = 0; i < value.length; i++) {
      const v: unknown = value[i];
      const r = redactSecrets(v, depth + 1);
      if (r !== v) (out ??= value.slice())[i] = r;
    }
    return (out ?? value) as T;
  }
  const proto: unknown = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) return value;
  const obj = value as Record<string, unknown>;
  let out: Record<string, unknown> | undefined;
  for (const k of Object.keys(obj)) {
    const v = obj[k];
    const r = isSecretKey(k) ? (v === undefined || v === null ? v : CENSOR) : redactSecrets(v, depth + 1);
    if (r !== v) (out ??= { ...obj })[k] = r;
  }
  return (out ?? value) as T;
}
