import { httpRequestsTotal, tasksTotal, transactionsTotal } from './metrics.js';
import { EMBED_LATENCY_BUCKETS, memoryEmbedLatency } from './monitor-metrics.js';

/** Attempt outcomes that count as errors for the error-rate rule (a retry after a failure included). */
export const FAILED_ATTEMPT_STATUSES: ReadonlySet<string> = new Set(['failed', 'timed_out', 'dead_lettered', 'waiting']);

/** Counts of one stretch of time, from this process's counters. */
export interface WindowCounts {
  tx_commit: number;
  tx_rollback: number;
  http_total: number;
  http_5xx: number;
  task_total: number;
  task_failed: number;
  /** Cumulative embed latency bucket counts, one per EMBED_LATENCY_BUCKETS bound and +Inf last. */
  embed_buckets: number[];
}

/** What a process reports for the rate rules: the alert window and the trailing baseline before it. */
export interface WindowStats {
  window: WindowCounts;
  baseline: WindowCounts;
}

interface Snapshot extends WindowCounts {
  at: number;
}

const ZERO = (): WindowCounts => ({ tx_commit: 0, tx_rollback: 0, http_total: 0, http_5xx: 0, task_total: 0, task_failed: 0, embed_buckets: EMBED_LATENCY_BUCKETS.map(() => 0).concat(0) });

/** Current totals of the counters the rate rules use. */
async function readCounters(): Promise<Snapshot> {
  const s: Snapshot = { at: Date.now(), ...ZERO() };
  for (const v of (await transactionsTotal.get()).values) {
    if (v.labels.outcome === 'commit') s.tx_commit += v.value;
    else if (v.labels.outcome === 'rollback') s.tx_rollback += v.value;
  }
  for (const v of (await httpRequestsTotal.get()).values) {
    s.http_total += v.value;
    if (String(v.labels.status).startsWith('5')) s.http_5xx += v.value;
  }
  for (const v of (await tasksTotal.get()).values) {
    s.task_total += v.value;
    if (FAILED_ATTEMPT_STATUSES.has(String(v.labels.status))) s.task_failed += v.value;
  }
  for (const v of (await memoryEmbedLatency.get()).values) {
    if (v.metricName !== 'agent_fabric_memory_embed_latency_seconds_bucket') continue;
    const le = v.labels.le === '+Inf' ? Number.POSITIVE_INFINITY : Number(v.labels.le);
    const i = le === Number.POSITIVE_INFINITY ? EMBED_LATENCY_BUCKETS.length : EMBED_LATENCY_BUCKETS.indexOf(le);
    if (i >= 0) s.embed_buckets[i] = v.value;
  }
  return s;
}

function minus(a: WindowCounts, b: WindowCounts): WindowCounts {
  return {
    tx_commit: a.tx_commit - b.tx_commit,
    tx_rollback: a.tx_rollback - b.tx_rollback,
    http_total: a.http_total - b.http_total,
    http_5xx: a.http_5xx - b.http_5xx,
    task_total: a.task_total - b.task_total,
    task_failed: a.task_failed - b.task_failed,
    embed_buckets: a.embed_buckets.map((x, i) => x - (b.embed_buckets[i] ?? 0)),
  };
}

/** Adds counts of several processes (the fleet's window). */
export function sumCounts(all: readonly WindowCounts[]): WindowCounts {
  return all.reduce<WindowCounts>(
    (acc, c) => ({
      tx_commit: acc.tx_commit + c.tx_commit,
      tx_rollback: acc.tx_rollback + c.tx_rollback,
      http_total: acc.http_total + c.http_total,
      http_5xx: acc.http_5xx + c.http_5xx,
      task_total: acc.task_total + c.task_total,
      task_failed: acc.task_failed + c.task_failed,
      embed_buckets: acc.embed_buckets.map((x, i) => x + (c.embed_buckets[i] ?? 0)),
    }),
    ZERO(),
  );
}

/**
 * Sliding windows over this process's prom-client counters: `sample()` keeps a snapshot of their
 * totals (the alert runtime calls it every evaluation); `stats()` is the difference between the
 * latest snapshot and the ones a window (and a baseline) ago. Nothing on the hot paths changes:
 * the counters they already increment are the source.
 */
export class CounterWindows {
  private snapshots: Snapshot[] = [];

  constructor(
    private readonly windowMs: number,
    private readonly baselineMs: number,
  ) {}

  /** Takes a snapshot of the counters now and forgets the ones older than window + baseline. */
  async sample(): Promise<void> {
    const s = await readCounters();
    this.snapshots.push(s);
    const keepFrom = s.at - this.windowMs - this.baselineMs;
    // keep one snapshot at or before the oldest edge, so a full baseline stays measurable
    while (this.snapshots.length > 2 && this.snapshots[1]!.at <= keepFrom) this.snapshots.shift();
  }

  /** The latest snapshot at or before `t`, else the oldest one. */
  private at(t: number): Snapshot {
    let found = this.snapshots[0]!;
    for (const s of this.snapshots) if (s.at <= t) found = s;
    return found;
  }

  /** Counts over the window and the baseline before it (zeros before the first sample). */
  stats(): WindowStats {
    const last = this.snapshots[this.snapshots.length - 1];
    if (!last) return { window: ZERO(), baseline: ZERO() };
    const windowStart = this.at(last.at - this.windowMs);
    const baselineStart = this.at(last.at - this.windowMs - this.baselineMs);
    return { window: minus(last, windowStart), baseline: minus(windowStart, baselineStart) };
  }
}
