import type { ServerResponse } from 'node:http';
import type { Db } from '../db/index.js';
import { logger } from '../telemetry/index.js';
import { Client, type ClientHost, type EventFilter } from './client.js';
import { Horizon } from './horizon.js';

import { EVENTS_CHANNEL as CHANNEL } from './channel.js';

export interface EventHubOptions {
  /** Interval of the `: keepalive` comment; each tick also rescans, covering a NOTIFY lost on reconnect (default 15 000). */
  heartbeatMs?: number;
  /** See `Horizon`: how long a hole below a visible id is given before its barrier is taken (default 100). */
  settleMs?: number;
  /** See `Horizon`: longest wait for a hole before it is skipped (default 60 000). */
  maxGapWaitMs?: number;
  /** Rows per query, for the horizon scan and for a stream's backlog (default 200). */
  pageSize?: number;
  /**
   * A stream with more unsent bytes than this (and past the socket's high-water mark) stops
   * being written to and catches up from the database once drained, so buffering per
   * connection stays under about this plus one frame (default 256 KiB).
   */
  maxBufferedBytes?: number;
}

/**
 * Live system events for SSE clients, one per app: ONE `LISTEN fabric_events` for all
 * clients, started with the first. A notice only says "something committed": the hub then
 * scans `system_events` past its settled horizon (see `Horizon` for why ids may commit out of
 * order and how that is handled) and fans the settled rows out in memory. Scans are
 * single-flight, so a burst of notices costs one or two queries whatever the client count.
 * With no client left the hub forgets its horizon and scans nothing until the next one.
 */
export class EventHub implements ClientHost {
  readonly heartbeatMs: number;
  readonly maxBufferedBytes: number;
  readonly pageSize: number;
  readonly horizon: Horizon;
  private readonly settleMs: number;
  private readonly clients = new Set<Client>();
  private listening: Promise<() => Promise<void>> | undefined;
  private loop: Promise<void> | undefined;
  private again = false;
  private retry: NodeJS.Timeout | undefined;
  private ticker: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    readonly db: Db,
    options: EventHubOptions = {},
  ) {
    this.heartbeatMs = options.heartbeatMs ?? 15_000;
    this.maxBufferedBytes = options.maxBufferedBytes ?? 256 * 1024;
    this.settleMs = options.settleMs ?? 100;
    this.pageSize = options.pageSize ?? 200;
    this.horizon = new Horizon(db, { settleMs: this.settleMs, maxGapWaitMs: options.maxGapWaitMs ?? 60_000, pageSize: this.pageSize });
  }

  /** Open streams (the test hook for leaks). */
  get clientCount(): number {
    return this.clients.size;
  }

  /** Subscribes to the channel once; call before answering 200 so a failure is a normal error response. */
  async prepare(): Promise<void> {
    if (this.closed) throw new Error('the event hub is closed');
    this.listening ??= this.db.listen(CHANNEL, () => this.kick(), (live) => live && this.kick());
    try {
      await this.listening;
    } catch (err) {
      this.listening = undefined;
      throw err;
    }
  }

  /**
   * Streams events matching `filter` with id > `afterId` (null: only events after now) to
   * `res`, whose SSE headers are already written: the stored backlog first, then live. Ends
   * when the client goes away or the hub closes. Call `prepare()` first.
   */
  attach(res: ServerResponse, filter: EventFilter, afterId: number | null): { sent(): number } {
    const client = new Client(this, res, filter, afterId);
    if (this.closed) {
      client.close();
      return { sent: () => 0 };
    }
    this.clients.add(client);
    res.on('close', () => client.close());
    this.ticker ??= setInterval(() => this.tick(), this.heartbeatMs).unref();
    if (this.horizon.value !== null) void client.catchUp();
    this.kick();
    return { sent: () => client.sent };
  }

  /** Ends every stream and unsubscribes. */
  async close(): Promise<void> {
    this.closed = true;
    for (const c of [...this.clients]) c.close();
    clearTimeout(this.retry);
    await this.loop;
    const unlisten = await this.listening?.catch(() => undefined);
    this.listening = undefined;
    await unlisten?.();
  }

  /** Called by a `Client` as it closes. */
  detach(client: Client): void {
    this.clients.delete(client);
    if (this.clients.size > 0) return;
    clearInterval(this.ticker);
    this.ticker = undefined;
    if (!this.loop) this.horizon.reset(); // else the loop resets it when it ends
  }

  private tick(): void {
    for (const c of this.clients) c.heartbeat();
    this.kick();
  }

  /** Scans now, or right after the scan in flight. */
  private kick(): void {
    if (this.closed || this.clients.size === 0) return;
    if (this.loop) {
      this.again = true;
      return;
    }
    clearTimeout(this.retry);
    this.retry = undefined;
    this.loop = this.run().finally(() => {
      this.loop = undefined;
      if (this.clients.size === 0) this.horizon.reset();
      else if (this.again) this.kick(); // a notice came in as the loop was ending
    });
  }

  private async run(): Promise<void> {
    try {
      for (;;) {
        if (this.closed || this.clients.size === 0) return;
        this.again = false;
        const wasReady = this.horizon.value !== null;
        const { rows, more } = await this.horizon.scan();
        const h = this.horizon.value;
        if (h !== null) for (const c of this.clients) if (c.mode === 'live') c.deliver(rows, h);
        if (!wasReady && h !== null) for (const c of this.clients) if (c.mode === 'waiting') void c.catchUp();
        if (more || this.again) continue;
        if (this.horizon.waiting) this.schedule(this.settleMs);
        return;
      }
    } catch (err) {
      logger().warn({ err }, 'event stream: scanning system_events failed; retrying in 1 s');
      this.again = false;
      this.schedule(1000);
    }
  }

  private schedule(ms: number): void {
    if (this.closed || this.retry) return;
    this.retry = setTimeout(() => {
      this.retry = undefined;
      this.kick();
    }, ms).unref();
  }
}

/** The hub of one app over `db`. */
export function createEventHub(db: Db, options?: EventHubOptions): EventHub {
  return new EventHub(db, options);
}
