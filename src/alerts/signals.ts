import { readQuotaUsage, type QuotaUsage } from '../budget/index.js';
import type { Queryable } from '../db/index.js';
import { readDeadLetterCounts, readQueueCounts, type QueueCounts } from '../queue/index.js';
import { readActiveAgentCounts } from '../tenancy/index.js';

/** What the table gauges and the per-agent / per-tenant alert rules read: one query each, every tenant. */
export interface TableSignals {
  quotas: QuotaUsage[];
  queues: QueueCounts[];
  deadLetters: { tenant_id: string; dead_lettered: number }[];
  activeAgents: { tenant_id: string; active: number }[];
}

export async function readTableSignals(q: Queryable): Promise<TableSignals> {
  // one after another: PGlite runs one statement at a time anyway, and a pool is not hogged by a scrape
  const quotas = await readQuotaUsage(q);
  const queues = await readQueueCounts(q);
  const deadLetters = await readDeadLetterCounts(q);
  const activeAgents = await readActiveAgentCounts(q);
  return { quotas, queues, deadLetters, activeAgents };
}

/**
 * One read of the signals shared by every gauge of a scrape and reused for `ttlMs`, so a fast
 * scraper (or several) cannot hammer the database: at most one read per ttl per process.
 */
export class CachedSignals {
  private pending: Promise<TableSignals> | undefined;
  private readAt = 0;

  constructor(
    private readonly db: Queryable,
    private readonly ttlMs: number,
  ) {}

  read(): Promise<TableSignals> {
    if (this.pending && (Date.now() - this.readAt < this.ttlMs || this.readAt === 0)) return this.pending;
    this.readAt = 0;
    const p: Promise<TableSignals> = readTableSignals(this.db).then(
      (s) => {
        // with no ttl, the read still serves every gauge that asked while it ran
        this.readAt = Date.now();
        return s;
      },
      (err: unknown) => {
        this.pending = undefined;
        throw err;
      },
    );
    this.pending = p;
    return p;
  }
}
