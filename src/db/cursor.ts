import { badRequest } from '../errors/index.js';

/** Position after the last row of a page, for keyset pagination on (created_at, id). */
export interface PageCursor {
  createdAt: Date;
  id: string;
}

/** Opaque cursor for the row a page ended on. */
export function encodeCursor(createdAt: Date, id: string): string {
  return Buffer.from(JSON.stringify([createdAt.toISOString(), id])).toString('base64url');
}

/** Decodes a cursor from a query string; a tampered or foreign cursor is a 400. */
export function decodeCursor(cursor: string | undefined): PageCursor | undefined {
  if (cursor === undefined) return undefined;
  try {
    const [at, id] = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as [unknown, unknown];
    const createdAt = new Date(String(at));
    if (typeof id !== 'string' || id.length > 100 || Number.isNaN(createdAt.getTime())) throw new Error('shape');
    return { createdAt, id };
  } catch {
    throw badRequest('invalid_cursor', 'The cursor is not one this API returned; pass next_cursor from the previous page unchanged.');
  }
}
