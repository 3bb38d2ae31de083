/**
 * A failure a caller can act on: an HTTP status, a stable machine-readable code and a
 * sentence for people. Thrown anywhere; mapped to the error envelope in one place.
 */
export class FabricError extends Error {
  override name = 'FabricError';
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    /** Extra envelope fields a client needs, e.g. `retry_after_seconds`. */
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

export const badRequest = (code: string, message: string, details?: Record<string, unknown>) =>
  new FabricError(400, code, message, details);
export const unauthorized = (code: string, message: string) => new FabricError(401, code, message);
export const forbidden = (message: string, code = 'forbidden') => new FabricError(403, code, message);
export const notFound = (what: string, id: string) =>
  new FabricError(404, 'not_found', `${what} ${id} does not exist or is not visible to you.`);
export const conflict = (code: string, message: string) => new FabricError(409, code, message);

/** Unknown thrown values become Errors, keeping the original as `cause`. */
export function coerceError(value: unknown): Error {
  return value instanceof Error ? value : new Error(typeof value === 'string' ? value : 'non-error thrown', { cause: value });
}
