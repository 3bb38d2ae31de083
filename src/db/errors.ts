/** SQLSTATE codes the fabric reacts to. */
export const PG_CODES = {
  uniqueViolation: '23505',
  foreignKeyViolation: '23503',
  checkViolation: '23514',
  notNullViolation: '23502',
  serializationFailure: '40001',
  deadlockDetected: '40P01',
  queryCanceled: '57014',
} as const;

/** The SQLSTATE of a database error, if it has one. */
export function pgCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

const CONNECTION_MESSAGES =
  /Connection terminated|connection is closed|Client has encountered a connection error|timeout exceeded when trying to connect|PGlite is closed/i;

/**
 * True when the database is unreachable or overloaded rather than the request being wrong:
 * class 08 (connection), 53 (insufficient resources), 57P0x (shutdown), socket errors,
 * pool connect timeouts.
 */
export function isUnavailableError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && (/^(08|53|57P0)/.test(code) || code === 'ECONNREFUSED' || code === 'ECONNRESET' || code === 'ETIMEDOUT')) return true;
  return CONNECTION_MESSAGES.test(err instanceof Error ? err.message : '');
}
