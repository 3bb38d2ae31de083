/** SQLSTATE codes the fabric reacts to. */
export const PG_CODES = {
  uniqueViolation: '23505',
  foreignKeyViolation: '23503',
  checkViolation: '23514',
  notNullViolation: '23502',
  serializationFailure: '40001',
  deadlockDetected: '40P01',
  adminShutdown: '57P01',
  cannotConnectNow: '57P03',
} as const;

/** The SQLSTATE of a database error, if it has one. */
export function pgCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

/** True when the error means the database could not be reached or the connection died. */
export function isConnectionError(err: unknown): boolean {
  const code = pgCode(err) ?? (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && (code.startsWith('08') || code === '57P01' || code === '57P03' || code === 'ECONNREFUSED' || code === 'ECONNRESET'))
    return true;
  const msg = err instanceof Error ? err.message : '';
  return /Connection terminated|connection is closed|Client has encountered a connection error|PGlite is closed/i.test(msg);
}
