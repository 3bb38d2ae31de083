import { createHash } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { z } from 'zod';
import { withTransaction, type Db, type Queryable, type Tx } from '../db/index.js';
import { ERASED_RESPONSE } from '../compliance/subjects.js';
import { badRequest, FabricError } from '../errors/index.js';
import { principalOf } from './auth.js';

/** A response an erasure emptied (compliance/erasure-steps.ts), as canonicalJson writes it. */
const ERASED = canonicalJson(JSON.parse(ERASED_RESPONSE));

export interface Created<T> {
  status: number;
  body: T;
}

/** JSON with object keys sorted, so the same body always hashes the same. */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value && typeof value === 'object')
    return `{${Object.keys(value)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  return JSON.stringify(value) ?? 'null';
}

/** Documents the header on every create route. */
export const IdempotencyHeaders = z.looseObject({
  'idempotency-key': z.string().optional().describe('1–255 printable ASCII characters; replays the first response for 24 h instead of creating twice'),
});

/** The request's `Idempotency-Key` header, or the `idempotency_key` body field where the API names one. */
function keyOf(req: FastifyRequest, bodyField: boolean): string | undefined {
  const header = req.headers['idempotency-key'];
  if (header !== undefined && typeof header !== 'string') throw badRequest('invalid_idempotency_key', 'Send one Idempotency-Key header.');
  const fromBody = bodyField ? (req.body as { idempotency_key?: unknown } | undefined)?.idempotency_key : undefined;
  if (header !== undefined && fromBody !== undefined && header !== fromBody)
    throw badRequest('invalid_idempotency_key', 'The Idempotency-Key header and the idempotency_key field differ; send one of them.');
  const key = header ?? (typeof fromBody === 'string' ? fromBody : undefined);
  if (key !== undefined && !/^[\x21-\x7e]{1,255}$/.test(key))
    throw badRequest('invalid_idempotency_key', 'An idempotency key is 1–255 printable ASCII characters without spaces.');
  return key;
}

interface StoredRow {
  request_hash: string;
  status_code: number;
  response: unknown;
}

/**
 * Runs a create exactly once per (tenant, idempotency key) for 24 h (FR-08): the key's
 * record commits in the SAME transaction as the rows the create writes, so a failed create
 * leaves no key behind and a concurrent duplicate waits on the key's unique index, then
 * replays the first response with 200. Without a key, `work` simply runs in a transaction
 * (or `direct` runs, for a create that is one statement and needs none).
 * `bodyField` also accepts the `idempotency_key` body field (task submission, US-11).
 */
export async function createOnce<T>(
  req: FastifyRequest,
  db: Db,
  ttlSeconds: number,
  name: string,
  work: (tx: Tx) => Promise<Created<T>>,
  options: { bodyField?: boolean; direct?: () => Promise<Created<T>> } = {},
): Promise<Created<T>> {
  const key = keyOf(req, options.bodyField ?? false);
  if (key === undefined) return options.direct ? options.direct() : withTransaction(db, work, { name });
  const tenantId = principalOf(req).tenantId;
  // The matched route and its params, not the raw URL, so /%61pi/x and /api/x are one request.
  const target = `${req.method} ${req.routeOptions.url} ${canonicalJson(req.params ?? null)}`;
  const hash = createHash('sha256').update(`${target}\n${canonicalJson(req.body ?? null)}`).digest('hex');
  return withTransaction(
    db,
    async (tx) => {
      // Claim the key; an expired record is taken over. A concurrent holder makes us wait here.
      const claimed = await tx.query(
        `INSERT INTO idempotency_keys (tenant_id, key, request_hash, method, path, status_code, response, expires_at)
         VALUES ($1, $2, $3, $4, $5, 0, 'null', now() + make_interval(secs => $6))
         ON CONFLICT (tenant_id, key) DO UPDATE
           SET request_hash = EXCLUDED.request_hash, method = EXCLUDED.method, path = EXCLUDED.path,
               status_code = 0, response = 'null', created_at = now(), expires_at = EXCLUDED.expires_at
           WHERE idempotency_keys.expires_at <= now()
         RETURNING 1`,
        [tenantId, key, hash, req.method, req.routeOptions.url ?? '', ttlSeconds],
      );
      if (claimed.rows.length === 0) {
        const prior = await tx.query<StoredRow>('SELECT request_hash, status_code, response FROM idempotency_keys WHERE tenant_id = $1 AND key = $2', [tenantId, key]);
        const row = prior.rows[0]!;
        if (row.status_code === 410 && canonicalJson(row.response) === ERASED)
          throw new FabricError(
            410,
            'idempotency_response_erased',
            'The first response to this Idempotency-Key named data that has since been erased, so it is not replayed, and the request was not run again. To run it again, send it with a new Idempotency-Key.',
          );
        if (row.request_hash !== hash)
          throw new FabricError(422, 'idempotency_key_reused', 'This Idempotency-Key was already used with a different request; use a new key for a new request.');
        return { status: 200, body: row.response as T };
      }
      const created = await work(tx);
      await tx.query('UPDATE idempotency_keys SET status_code = $3, response = $4 WHERE tenant_id = $1 AND key = $2', [
        tenantId,
        key,
        created.status,
        JSON.stringify(created.body),
      ]);
      return created;
    },
    { name },
  );
}

/** Deletes idempotency records past their expiry; returns how many. */
export async function sweepIdempotencyKeys(db: Queryable): Promise<number> {
  const r = await db.query('DELETE FROM idempotency_keys WHERE expires_at <= now()');
  return r.rowCount;
}
