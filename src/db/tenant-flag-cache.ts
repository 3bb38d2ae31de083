import type { Queryable } from './types.js';

/**
 * Per process: a yes/no fact about a tenant (has budgets? has a subscription?) that decides
 * whether a submit needs a transaction at all. Trusted for `ttlMs` (a change made by another
 * process is seen that late); a change made here is forgotten at once.
 */
export class TenantFlagCache {
  private readonly seen = new Map<string, { has: boolean; until: number }>();

  /** `existsSql` answers one row `{has: boolean}` for `$1` = the tenant id. */
  constructor(
    private readonly existsSql: string,
    private readonly ttlMs = 5000,
  ) {}

  async has(q: Queryable, tenantId: string): Promise<boolean> {
    const hit = this.seen.get(tenantId);
    if (hit && hit.until > Date.now()) return hit.has;
    const r = await q.query<{ has: boolean }>(this.existsSql, [tenantId]);
    if (this.seen.size > 10_000) this.seen.clear();
    this.seen.set(tenantId, { has: r.rows[0]!.has, until: Date.now() + this.ttlMs });
    return r.rows[0]!.has;
  }

  forget(tenantId: string): void {
    this.seen.delete(tenantId);
  }
}
