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

/** Deeper than this a line's object is cut (and a cycle stops here). */
const MAX_DEPTH = 10;
const TOO_DEEP = '[too deep to log]';

/**
 * `value` with every secret key's value replaced by "[redacted]", in objects and arrays at any
 * depth (past MAX_DEPTH levels the rest is cut, so nothing goes out unchecked). Copy on write:
 * what the caller passed is never changed, and a line without secrets is returned as it came (no
 * allocation); a class instance with a secret becomes a plain object of its own fields, which is
 * what JSON makes of it anyway. Errors (their serializer scrubs them), values with toJSON (dates)
 * and binary data are left as they are.
 */
export function redactSecrets<T>(value: T, depth = 0): T {
  if (value === null || typeof value !== 'object') return value;
  if (depth >= MAX_DEPTH) return TOO_DEEP as T;
  if (Array.isArray(value)) {
    let out: unknown[] | undefined;
    for (let i = 0; i < value.length; i++) {
      const v: unknown = value[i];
      const r = redactSecrets(v, depth + 1);
      if (r !== v) (out ??= value.slice())[i] = r;
    }
    return (out ?? value) as T;
  }
  if (value instanceof Error || ArrayBuffer.isView(value) || value instanceof ArrayBuffer || typeof (value as { toJSON?: unknown }).toJSON === 'function') return value;
  const obj = value as Record<string, unknown>;
  let out: Record<string, unknown> | undefined;
  for (const k of Object.keys(obj)) {
    const v = obj[k];
    const r = isSecretKey(k) ? (v === undefined || v === null ? v : CENSOR) : redactSecrets(v, depth + 1);
    if (r !== v) (out ??= { ...obj })[k] = r;
  }
  return (out ?? value) as T;
}
