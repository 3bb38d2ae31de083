import { randomUUID } from 'node:crypto';
import { countTokens, type ExhaustedLimit, type MeterResult } from '../budget/index.js';
import type { Db } from '../db/index.js';
import { EVENTS_CHANNEL } from '../events/index.js';
import { currentContext, logger } from '../telemetry/index.js';
import type { Caller } from './caller.js';
import { meteredCall, refusal, RESERVATION_GRACE_MS, type CallRecord, type WorstCase } from './ledger.js';

/**
 * Per-agent credit leases (migration 0015, bench/README.md "Gateway"): the process reserves a
 * slice of an agent's headroom in one statement and admits that agent's calls against it in
 * memory, then settles ended calls in batches — one statement and one commit for all that
 * ended within `settleDelayMs` — instead of a reservation and a settle per call.
 *
 * Why "never overspend" still holds. A lease is an ordinary open reservation row: taking or
 * growing it runs the reservation rule (every `block` quota and budget covering the agent must
 * keep used + reserved ≤ hard limit) under the same row locks as a per-call reservation, so the
 * leases of every process together never hold more than the limits allow. In memory a call is
 * admitted only if its worst case fits in what the row holds minus the worst cases of this
 * process's calls on it that are not yet settled (`tokens - holdTokens`); a call that does not
 * fit grows the lease by what is missing (or is refused with 429 quota_exceeded, nothing sent).
 * A call's hold is dropped only once its settle has committed, which moves its actual use from
 * the row's `reserved` to `used` — so at every instant the row covers every admitted call's
 * worst case, as per-call reservations did. Calls of one agent in one process admit one at a
 * time (a JS turn), and one grow per agent is in flight at once.
 *
 * A crash loses no budget: the row has an expiry (call timeout + 2 min grace), and the
 * reservation sweeper releases it like any expired reservation. Calls answered but not yet
 * settled when a process dies (at most `settleDelayMs` of them) go unmetered, as an unsettled
 * call did before; their worst cases come back with the lease.
 */
interface Lease {
  key: string;
  tenantId: string;
  agentId: string;
  /** What the lease row holds, as of the last statement of this process that changed it. */
  tokens: number;
  cost: bigint;
  /** Worst cases of admitted calls whose settle has not committed. */
  holdTokens: number;
  holdCost: bigint;
  holds: number;
  /** When the row expires (ms since the epoch): a call whose deadline comes later grows it first. */
  expiresAt: number;
  /** No new calls: it is handed back once its holds are settled. */
  closed: boolean;
  /** Its hand-back is queued or done. */
  released: boolean;
  idle?: NodeJS.Timeout;
}

/** A call admitted against a lease: its worst case, held until its settle commits. */
export interface Hold {
  lease: Lease;
  tokens: number;
  cost: bigint;
}

export interface CreditLeaseOptions {
  /** A lease asks for this many times the worst case of the call that takes it. */
  leaseCalls: number;
  /** Handed back after this long without calls (0: as soon as its calls are settled). */
  idleMs: number;
  /** Calls ending within this long are settled in one statement. */
  settleDelayMs: number;
  /** Longest call (FABRIC_GATEWAY_TIMEOUT_MS): a lease row outlives it by the grace. */
  timeoutMs: number;
}

interface SettleItem {
  hold: Hold;
  call: Record<string, unknown>;
  counted: { agentId: string; item: NonNullable<ReturnType<typeof meteredCall>['item']> } | null;
  done: (r: MeterResult) => void;
  failed: (err: unknown) => void;
}

const MAX_BATCH = 256;
const LEASE_GRACE_MS = 2 * RESERVATION_GRACE_MS;

export class CreditLeases {
  private readonly leases = new Map<string, Lease>();
  private readonly growing = new Map<string, Promise<void>>();
  private queue: SettleItem[] = [];
  private releases: Lease[] = [];
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;
  private closed = false;

  constructor(private readonly db: Db, private readonly o: CreditLeaseOptions) {}

  /** Holds the call's worst case against the agent's lease (taken or grown as needed); throws 429 quota_exceeded. */
  async admit(tenantId: string, agentId: string, worst: WorstCase, deadline: number): Promise<Hold> {
    const id = `${tenantId}/${agentId}`;
    for (;;) {
      const lease = this.leases.get(id);
      if (lease && !lease.closed && lease.expiresAt >= deadline + RESERVATION_GRACE_MS && lease.tokens - lease.holdTokens >= worst.tokens && lease.cost - lease.holdCost >= worst.costMicros) {
        lease.holdTokens += worst.tokens;
        lease.holdCost += worst.costMicros;
        lease.holds++;
        clearTimeout(lease.idle);
        return { lease, tokens: worst.tokens, cost: worst.costMicros };
      }
      const pending = this.growing.get(id);
      if (pending) {
        // someone else is growing it: then look again (their refusal is theirs, not ours)
        await pending.catch(() => {});
        continue;
      }
      const grow = this.grow(id, tenantId, agentId, lease, worst).finally(() => this.growing.delete(id));
      this.growing.set(id, grow);
      await grow;
    }
  }

  /** Gives back a hold whose call never went upstream (refused by policy): nothing was written for it. */
  async unhold(h: Hold): Promise<void> {
    this.drop(h);
    const lease = h.lease;
    if (lease.holds > 0 || lease.released) return;
    if (this.o.idleMs > 0 && !lease.closed && !this.closed) return this.maybeRelease(lease);
    // idleMs 0: the lease goes back before the refusal is answered
    this.retire(lease);
    lease.released = true;
    await this.write([], [lease]).catch(() => {});
  }

  /** Meters the call (batched with others) and drops its hold once that committed. */
  settle(h: Hold, caller: Caller, key: string, c: CallRecord): Promise<MeterResult> {
    const { item, event } = meteredCall(caller, key, c);
    return new Promise((done, failed) => {
      this.queue.push({
        hold: h,
        call: { tenant: caller.tenantId, task: caller.taskId, agent: caller.agentId, lease: h.lease.key, usage: item, event, request_id: currentContext().request_id ?? null },
        counted: item ? { agentId: caller.agentId, item } : null,
        done,
        failed,
      });
      this.schedule();
    });
  }

  /** Settles what is queued and hands every lease back (leases with calls still in flight are left to the sweeper). */
  async close(): Promise<void> {
    this.closed = true;
    for (const lease of this.leases.values()) {
      clearTimeout(lease.idle);
      lease.closed = true;
      if (lease.holds === 0 && !lease.released) {
        lease.released = true;
        this.releases.push(lease);
      }
    }
    this.leases.clear();
    clearTimeout(this.timer);
    this.timer = undefined;
    while (this.flushing || this.queue.length > 0 || this.releases.length > 0) await (this.flushing ?? this.flush());
  }

  private async grow(id: string, tenantId: string, agentId: string, lease: Lease | undefined, worst: WorstCase): Promise<void> {
    const expiresAt = Date.now() + this.o.timeoutMs + LEASE_GRACE_MS;
    const want = { tokens: worst.tokens * this.o.leaseCalls, cost: worst.costMicros * BigInt(this.o.leaseCalls) };
    if (lease && !lease.closed) {
      // what is missing, not the whole worst case: the lease already holds the rest
      const need = { tokens: Math.max(0, worst.tokens - (lease.tokens - lease.holdTokens)), costMicros: maxBig(0n, worst.costMicros - (lease.cost - lease.holdCost)) };
      const r = await this.take(lease, need, want, expiresAt, worst);
      if (!r.stale) return;
      // swept, or the budgets covering the agent changed: a new lease, this one handed back when drained
      this.retire(lease);
      this.maybeRelease(lease);
    }
    const fresh: Lease = { key: `gwlease:${randomUUID()}`, tenantId, agentId, tokens: 0, cost: 0n, holdTokens: 0, holdCost: 0n, holds: 0, expiresAt, closed: false, released: false };
    await this.take(fresh, worst, want, expiresAt, worst);
    this.leases.set(id, fresh);
  }

  private async take(lease: Lease, need: WorstCase, want: { tokens: number; cost: bigint }, expiresAt: number, worst: WorstCase): Promise<{ stale: boolean }> {
    let row: { granted_tokens: number; granted_cost: string; stale: boolean };
    try {
      const r = await this.db.query<typeof row>('SELECT granted_tokens, granted_cost::text, stale FROM fabric_gateway_lease($1, $2, $3, $4, $5, $6, $7, $8)', [
        lease.tenantId,
        lease.agentId,
        lease.key,
        need.tokens,
        String(need.costMicros),
        want.tokens,
        String(want.cost),
        new Date(expiresAt),
      ]);
      row = r.rows[0]!;
    } catch (raw) {
      throw refusal(raw, worst);
    }
    if (row.stale) return { stale: true };
    lease.tokens += Number(row.granted_tokens);
    lease.cost += BigInt(row.granted_cost);
    lease.expiresAt = Math.max(lease.expiresAt, expiresAt);
    return { stale: false };
  }

  private drop(h: Hold): void {
    const l = h.lease;
    l.holdTokens -= h.tokens;
    l.holdCost -= h.cost;
    l.holds--;
  }

  /** A drained lease goes back when it is closed, or after idleMs without calls. */
  private maybeRelease(lease: Lease): void {
    if (lease.holds > 0) return;
    if (lease.closed || this.closed) return void this.release(lease);
    clearTimeout(lease.idle);
    lease.idle = setTimeout(() => {
      if (lease.holds === 0 && !lease.closed) {
        this.retire(lease);
        this.release(lease);
      }
    }, this.o.idleMs).unref();
  }

  /** No new calls on it (the next call takes a new lease); it goes back once drained. */
  private retire(lease: Lease): void {
    lease.closed = true;
    clearTimeout(lease.idle);
    const id = `${lease.tenantId}/${lease.agentId}`;
    if (this.leases.get(id) === lease) this.leases.delete(id);
  }

  private release(lease: Lease): void {
    if (lease.released) return;
    lease.released = true;
    this.releases.push(lease);
    this.schedule();
  }

  private schedule(): void {
    if (this.timer || this.flushing) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (!this.flushing) void this.flush(); // else it reschedules when done
    }, this.closed ? 0 : this.o.settleDelayMs);
  }

  private flush(): Promise<void> {
    const items = this.queue.splice(0, MAX_BATCH);
    // with idleMs 0 a lease whose last calls are in this batch goes back in the same statement
    if (this.o.idleMs === 0 || this.closed) {
      const left = new Map<Lease, number>();
      for (const it of items) left.set(it.hold.lease, (left.get(it.hold.lease) ?? it.hold.lease.holds) - 1);
      for (const [lease, n] of left)
        if (n === 0 && !lease.released) {
          this.retire(lease);
          lease.released = true;
          this.releases.push(lease);
        }
    }
    const releases = this.releases.splice(0);
    const run = this.write(items, releases)
      .catch(async () => {
        // one bad call (say its task was deleted) must not leave the others unmetered: each alone
        if (items.length > 1) for (const it of items) await this.write([it], []).catch(() => {});
        if (items.length > 0 && releases.length > 0) await this.write([], releases).catch(() => {});
      })
      .finally(() => {
        this.flushing = undefined;
        if (this.queue.length > 0 || this.releases.length > 0) this.schedule();
      });
    this.flushing = run;
    return run;
  }

  private async write(items: SettleItem[], releases: Lease[]): Promise<void> {
    if (items.length === 0 && releases.length === 0) return;
    let out: { released_tokens: number; released_cost: number; exhausted: ExhaustedLimit | null; stopped: boolean; agent_id: string | null }[];
    try {
      const r = await this.db.query<{ r: typeof out }>('SELECT fabric_gateway_settle_leased($1::jsonb, $2::jsonb) AS r', [
        JSON.stringify(items.map((i) => i.call)),
        JSON.stringify(releases.map((l) => ({ tenant: l.tenantId, key: l.key }))),
      ]);
      out = r.rows[0]!.r;
    } catch (err) {
      if (items.length === 1) {
        // its hold is dropped: the lease row keeps it reserved until the lease goes back or expires
        this.drop(items[0]!.hold);
        this.maybeRelease(items[0]!.hold.lease);
        items[0]!.failed(err);
      } else if (items.length === 0) logger().warn({ err }, 'gateway: handing back a credit lease failed; the reservation sweeper frees it at its expiry');
      throw err;
    }
    if (items.length > 0) this.db.notifySoon(EVENTS_CHANNEL);
    items.forEach((it, i) => {
      const res = out[i]!;
      const l = it.hold.lease;
      l.tokens -= Number(res.released_tokens);
      l.cost -= BigInt(res.released_cost);
      this.drop(it.hold);
      if (it.counted) countTokens(l.tenantId, res.agent_id ?? it.counted.agentId, [it.counted.item]);
      it.done({ exhausted: res.exhausted, stopped: res.stopped });
    });
    for (const it of items) this.maybeRelease(it.hold.lease);
  }
}

const maxBig = (a: bigint, b: bigint) => (a > b ? a : b);
