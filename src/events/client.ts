import type { ServerResponse } from 'node:http';
import type { Queryable } from '../db/index.js';
import { logger } from '../telemetry/index.js';
import { EVENT_COLUMNS, toStreamed, type Horizon, type StreamedEvent } from './horizon.js';

/** What a `Client` needs from its hub. */
export interface ClientHost {
  readonly db: Queryable;
  readonly horizon: Horizon;
  readonly pageSize: number;
  readonly maxBufferedBytes: number;
  detach(client: Client): void;
}

/** Which events one stream receives; always within one tenant. */
export interface EventFilter {
  tenantId: string;
  /** A UUID (the column is uuid). */
  agentId?: string;
  subjectType?: string;
  subjectId?: string;
}

/** One SSE frame: `id`, `event` and the event as JSON on one `data` line. */
export function formatEventFrame(e: StreamedEvent): string {
  const data = { id: e.id, event_type: e.event_type, subject_type: e.subject_type, subject_id: e.subject_id, agent_id: e.agent_id, data: e.data, created_at: e.created_at };
  return `id: ${e.id}\nevent: ${e.event_type.replace(/[\r\n]/g, ' ')}\ndata: ${JSON.stringify(data)}\n\n`;
}

function matches(f: EventFilter, e: StreamedEvent): boolean {
  return (
    e.tenant_id === f.tenantId &&
    (f.agentId === undefined || e.agent_id === f.agentId) &&
    (f.subjectType === undefined || e.subject_type === f.subjectType) &&
    (f.subjectId === undefined || e.subject_id === f.subjectId)
  );
}

type Mode = 'waiting' | 'catchup' | 'live' | 'stalled' | 'closed';

/**
 * One SSE connection. `cursor`: every matching event with id ≤ cursor has been written. It
 * reads the backlog from the database up to the hub's horizon, page by page, until it has
 * reached the horizon; then it goes live and the hub hands it each newly settled row. A
 * connection that cannot keep up (too many unsent bytes) drops back to reading from the
 * database once its socket drains, so buffering per connection stays bounded.
 */
export class Client {
  mode: Mode = 'waiting';
  sent = 0;

  constructor(
    private readonly hub: ClientHost,
    readonly res: ServerResponse,
    private readonly filter: EventFilter,
    private cursor: number | null,
  ) {}

  async catchUp(): Promise<void> {
    this.mode = 'catchup';
    const { db, horizon, pageSize } = this.hub;
    try {
      for (;;) {
        if (this.mode !== 'catchup' || horizon.value === null) return;
        const h = horizon.value;
        this.cursor ??= h;
        if (this.cursor >= h) {
          this.mode = 'live';
          return;
        }
        const where = ['tenant_id = $1', 'id > $2', 'id <= $3'];
        const params: unknown[] = [this.filter.tenantId, this.cursor, h];
        for (const [col, v] of [['agent_id', this.filter.agentId], ['subject_type', this.filter.subjectType], ['subject_id', this.filter.subjectId]] as const)
          if (v !== undefined) where.push(`${col} = $${params.push(v)}`);
        const r = await db.query<Parameters<typeof toStreamed>[0]>(
          `SELECT ${EVENT_COLUMNS} FROM system_events WHERE ${where.join(' AND ')} ORDER BY id LIMIT $${params.push(pageSize)}`,
          params,
        );
        if (this.mode !== 'catchup') return;
        for (const row of r.rows) {
          if (this.full()) return this.stall();
          this.write(formatEventFrame(toStreamed(row)));
          this.sent++;
          this.cursor = row.id;
        }
        if (r.rows.length < pageSize) this.cursor = h;
      }
    } catch (err) {
      logger().warn({ err, tenant_id: this.filter.tenantId }, 'event stream: reading the backlog failed; closing the stream (the client resumes with Last-Event-ID)');
      this.close();
    }
  }

  /** Live delivery of rows the horizon just passed (`upTo` = the new horizon). */
  deliver(rows: readonly StreamedEvent[], upTo: number): void {
    if (this.mode !== 'live' || this.cursor === null) return;
    for (const e of rows) {
      if (e.id <= this.cursor || !matches(this.filter, e)) continue;
      if (this.full()) return this.stall();
      this.write(formatEventFrame(e));
      this.sent++;
      this.cursor = e.id;
    }
    this.cursor = Math.max(this.cursor, upTo);
  }

  heartbeat(): void {
    if (this.mode !== 'closed' && !this.full()) this.write(': keepalive\n\n');
  }

  /** Too much unsent: over the limit and past the socket's high-water mark (so 'drain' will follow). */
  private full(): boolean {
    return this.res.writableNeedDrain && this.res.writableLength >= this.hub.maxBufferedBytes;
  }

  /** Stops writing; once the socket drains, catches up from the database (nothing is kept in memory meanwhile). */
  private stall(): void {
    this.mode = 'stalled';
    this.res.once('drain', () => {
      if (this.mode === 'stalled') void this.catchUp();
    });
  }

  private write(chunk: string): void {
    if (!this.res.writableEnded && !this.res.destroyed) this.res.write(chunk);
  }

  close(): void {
    if (this.mode === 'closed') return;
    this.mode = 'closed';
    if (!this.res.writableEnded) this.res.end();
    this.hub.detach(this);
  }
}
