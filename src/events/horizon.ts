import type { Queryable } from '../db/index.js';
import { logger } from '../telemetry/index.js';

/** One stored event as a stream sends it (plus `tenant_id`, used for filtering only). */
export interface StreamedEvent {
  id: number;
  tenant_id: string;
  agent_id: string | null;
  event_type: string;
  subject_type: string;
  subject_id: string;
  data: unknown;
  created_at: string;
}

interface EventRow extends Omit<StreamedEvent, 'created_at'> {
  created_at: Date;
}

export const EVENT_COLUMNS = 'id, tenant_id, agent_id, event_type, subject_type, subject_id, data, created_at';

export function toStreamed(r: EventRow): StreamedEvent {
  return { ...r, created_at: r.created_at.toISOString() };
}

export interface HorizonOptions {
  /** How long an id must have been taken before a hole below it may be declared settled (default 100 ms). */
  settleMs: number;
  /** Longest wait for a hole to fill before it is skipped with a warning (default 60 s). */
  maxGapWaitMs: number;
  /** Rows read per scan. */
  pageSize: number;
}

/** A visible id `upTo` seen with holes below it; `barrier` is a snapshot xmax taken once `settleMs` passed. */
interface Hole {
  upTo: number;
  seenAt: number;
  barrier?: bigint;
}

/**
 * The settled horizon of `system_events`: the highest id H such that every id ≤ H is either
 * committed (and visible) or will never be (rolled back, or never used).
 *
 * Why it is needed: ids come from a sequence when the INSERT runs, but rows become visible when
 * their transaction commits. Two concurrent transactions can take ids 10 and 11 and commit 11
 * first; a stream that sent 11 and then asked for `id > 11` would never send 10. So streams
 * only send rows up to the horizon, and the horizon never passes a hole until the hole is
 * settled:
 *
 * - a row right after the horizon (id = H + 1) settles at once;
 * - for a hole, we note the highest visible id above it (`upTo`); after `settleMs` (by then the
 *   transaction that took the missing id has its xid — PostgreSQL assigns it in the same INSERT,
 *   microseconds after nextval) we take the snapshot's xmax as a barrier; once the snapshot
 *   xmin reaches the barrier, every transaction that could hold an id ≤ upTo has ended, so every
 *   id ≤ upTo is settled. Rows are read in the same statement as the snapshot, so whatever
 *   committed is visible to that read.
 * - a hole kept open longer than `maxGapWaitMs` (a transaction that holds an event id that long,
 *   or an unrelated transaction that keeps the snapshot xmin back) is skipped with a warning; a
 *   row committed after that is not streamed live (it is still in the table).
 *
 * Rolled-back ids thus delay streams by about `settleMs`; out-of-order commits by the time the
 * slower transaction takes to commit.
 */
export class Horizon {
  /** Settled horizon, or null until the first scan settles the ids taken before it. */
  value: number | null = null;
  private initTarget: number | null = null;
  private settledTo = -1;
  private holes: Hole[] = [];

  constructor(
    private readonly db: Queryable,
    private readonly opts: HorizonOptions,
  ) {}

  /** Forgets everything (no one is streaming); the next scan starts again from the newest id. */
  reset(): void {
    this.value = null;
    this.initTarget = null;
    this.settledTo = -1;
    this.holes = [];
  }

  /** True while a hole waits to settle (scan again after `settleMs`). */
  get waiting(): boolean {
    return this.value === null || this.holes.length > 0;
  }

  /**
   * Reads past the horizon and advances it. Returns the newly settled rows in id order and
   * whether a full page was read (scan again at once).
   */
  async scan(): Promise<{ rows: StreamedEvent[]; more: boolean }> {
    const before = Date.now();
    if (this.value === null) return this.init(before);
    const r = await this.db.query<EventRow & { xmin: string; xmax: string }>(
      `SELECT pg_snapshot_xmin(s.snap)::text AS xmin, pg_snapshot_xmax(s.snap)::text AS xmax, e.*
         FROM (SELECT pg_current_snapshot() AS snap) s
         LEFT JOIN LATERAL (SELECT ${EVENT_COLUMNS} FROM system_events WHERE id > $1 ORDER BY id LIMIT $2) e ON true
        ORDER BY e.id`,
      [this.value, this.opts.pageSize],
    );
    const head = r.rows[0]!;
    this.settle(BigInt(head.xmin), BigInt(head.xmax), before);
    const visible = r.rows.filter((row) => row.id !== null);
    const settled: StreamedEvent[] = [];
    for (const row of visible) {
      if (row.id !== this.value + 1 && row.id - 1 > this.settledTo) break;
      this.value = row.id;
      settled.push(toStreamed(row));
    }
    const full = visible.length === this.opts.pageSize;
    if (settled.length < visible.length) {
      const upTo = visible[visible.length - 1]!.id;
      if (!this.holes.some((h) => h.upTo >= upTo)) this.holes.push({ upTo, seenAt: Date.now() });
    } else if (!full && this.settledTo > this.value) {
      this.value = this.settledTo; // a settled hole at the end (e.g. a rolled-back last id)
    }
    return { rows: settled, more: full && settled.length === visible.length };
  }

  private async init(before: number): Promise<{ rows: StreamedEvent[]; more: boolean }> {
    const r = await this.db.query<{ xmin: string; xmax: string; max_id: number }>(
      `SELECT pg_snapshot_xmin(s.snap)::text AS xmin, pg_snapshot_xmax(s.snap)::text AS xmax,
              (SELECT coalesce(max(id), 0) FROM system_events) AS max_id
         FROM (SELECT pg_current_snapshot() AS snap) s`,
    );
    const head = r.rows[0]!;
    if (this.initTarget === null) {
      this.initTarget = Number(head.max_id);
      this.holes.push({ upTo: this.initTarget, seenAt: Date.now() });
      return { rows: [], more: false };
    }
    this.settle(BigInt(head.xmin), BigInt(head.xmax), before);
    if (this.settledTo < this.initTarget) return { rows: [], more: false };
    this.value = this.initTarget;
    return { rows: [], more: true };
  }

  /** Settles the holes whose barrier the snapshot (taken after `now`) has passed. */
  private settle(xmin: bigint, xmax: bigint, now: number): void {
    for (const h of this.holes) {
      if (now - h.seenAt < this.opts.settleMs) continue;
      h.barrier ??= xmax;
      const expired = now - h.seenAt > this.opts.maxGapWaitMs;
      if (xmin < h.barrier && !expired) continue;
      if (xmin < h.barrier)
        logger().warn({ up_to: h.upTo, waited_ms: now - h.seenAt }, 'event stream: skipping unsettled event ids; a transaction held them too long');
      this.settledTo = Math.max(this.settledTo, h.upTo);
    }
    this.holes = this.holes.filter((h) => h.upTo > this.settledTo);
  }
}
