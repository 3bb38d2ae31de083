import { badRequest } from '../errors/index.js';

/** Position after the last row of a page, for keyset pagination on (created_at, id). */
export interface PageCursor {
  /** The row's created_at as PostgreSQL printed it (`created_at::text`): microsecond-exact, unlike a JS Date. */
  createdAt: string;
  id: string;
}

/** Opaque cursor for the row a page ended on; pass `created_at::text` so no precision is lost. */
export function encodeCursor(createdAt: string, id: string): string {
  return Buffer.from(JSON.stringify([createdAt, id])).toString('base64url');
}

/** Decodes a cursor from a query string; a tampered or foreign cursor is a 400. */
export function decodeCursor(cursor: string | undefined): PageCursor | undefined {
  if (cursor === undefined) return undefined;
  try {
    const [at, id] = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as [unknown, unknown];
    if (typeof at !== 'string' || !/^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d{1,6})?([+-]\d{2}(:?\d{2})?|Z)?$/.test(at)) throw new Error('time');
    if (typeof id !== 'string' || !/^[0-9a-f-]{36}$/.test(id)) throw new Error('id');
    return { createdAt: at, id };
  } catch {
    throw badRequest('invalid_cursor', 'The cursor is not one this API returned; pass next_cursor from the previous page unchanged.');
  }
}
