import { createHash } from 'node:crypto';
import type { Queryable } from '../db/index.js';
import { unauthorized } from '../errors/index.js';
import type { TokenVerifier } from '../auth/index.js';

/** What an erasure request names: a user of the tenant or one of its agents. */
export const SUBJECT_TYPES = ['user', 'agent'] as const;
export type SubjectType = (typeof SUBJECT_TYPES)[number];

const sha256 = (s: string) => createHash('sha256').update(s, 'utf8').digest('hex');

/** erasure_requests.subject_hash: one request per subject of a tenant, without keeping its id. */
export const subjectHash = (tenantId: string, type: SubjectType, id: string) => sha256(`${tenantId}:${type}:${id.toLowerCase()}`);

/** revoked_subjects.subject_hash: the token subject (`sub`) of a tenant. */
export const tokenSubjectHash = (tenantId: string, sub: string) => sha256(`${tenantId}:${sub.toLowerCase()}`);

/** Refuses, from now on, tokens of `subs` issued up to this instant (inside the erasure's transaction). */
export async function revokeSubjects(tx: Queryable, tenantId: string, subs: string[]): Promise<void> {
  for (const sub of subs)
    await tx.query(
      `INSERT INTO revoked_subjects (tenant_id, subject_hash) VALUES ($1, $2)
       ON CONFLICT (tenant_id, subject_hash) DO UPDATE SET revoked_at = now()`,
      [tenantId, tokenSubjectHash(tenantId, sub)],
    );
}

/** The body an erasure leaves in a stored idempotent response that named its subject (src/http/idempotency.ts answers 410 for it). */
export const ERASED_RESPONSE = '{"erased_by": "erasure_request"}';

/** How long another API process may still accept a revoked subject's token. */
export const REVOCATION_CACHE_MS = 5_000;

/**
 * The revoked-subject check of every verified token, cached per (tenant, sub) for
 * REVOCATION_CACHE_MS so a request costs no query; forget() makes a revocation made in this
 * process effective at once.
 */
export class SubjectRevocations {
  private readonly seen = new Map<string, { revokedAtMs: Promise<number | null>; until: number }>();

  constructor(private readonly db: Queryable) {}

  /** When the subject's tokens were revoked (ms), or null. Concurrent requests of one subject share one query. */
  revokedAt(tenantId: string, sub: string): Promise<number | null> {
    const key = tokenSubjectHash(tenantId, sub);
    const hit = this.seen.get(key);
    if (hit && hit.until > Date.now()) return hit.revokedAtMs;
    const revokedAtMs = this.db
      .query<{ revoked_at: Date }>(`SELECT revoked_at FROM revoked_subjects WHERE tenant_id = $1 AND subject_hash = $2`, [tenantId, key])
      .then((r) => (r.rows[0] ? r.rows[0].revoked_at.getTime() : null));
    if (this.seen.size >= 10_000) this.seen.clear();
    const entry = { revokedAtMs, until: Date.now() + REVOCATION_CACHE_MS };
    this.seen.set(key, entry);
    // a failed query is not remembered: the next request asks again
    revokedAtMs.catch(() => this.seen.get(key) === entry && this.seen.delete(key));
    return revokedAtMs;
  }

  forget(): void {
    this.seen.clear();
  }

  /** `verify`, refusing tokens of an erased subject issued before its erasure (401 token_revoked). */
  guard(verify: TokenVerifier): TokenVerifier {
    return async (token) => {
      const p = await verify(token);
      const at = await this.revokedAt(p.tenantId, p.sub);
      const iat = typeof p.claims.iat === 'number' ? p.claims.iat * 1000 : 0;
      if (at !== null && iat <= at) throw unauthorized('token_revoked', 'This token belongs to a subject whose data was erased; it is no longer accepted. Use a token issued to an existing user or agent.');
      return p;
    };
  }
}
