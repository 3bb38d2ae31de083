/** Rows and count of one statement. */
export interface QueryResult<R> {
  rows: R[];
  rowCount: number;
}

/** Anything that runs SQL: the database itself or an open transaction. */
export interface Queryable {
  query<R = Record<string, unknown>>(text: string, params?: readonly unknown[]): Promise<QueryResult<R>>;
  /** Runs a script of several statements without parameters (migrations). */
  exec(script: string): Promise<void>;
}

declare const txBrand: unique symbol;
/**
 * An open transaction. Only `withTransaction()` hands one out, so a function that writes
 * several tables (and takes a `Tx`) cannot be called outside one (FR-07).
 */
export interface Tx extends Queryable {
  readonly [txBrand]: true;
  /**
   * Announces `channel` (an empty NOTIFY) once this transaction has committed. Notices are
   * coalesced per process and sent outside the transaction: a NOTIFY inside it would take
   * PostgreSQL's commit-order lock and serialise every writer's commit.
   */
  notifyAfterCommit(channel: string): void;
}

export type DbEngine = 'pglite' | 'postgres';

/**
 * The one database surface the fabric uses, over PGlite (embedded) or PostgreSQL (`pg`).
 * Use `withTransaction()` rather than `transaction()` so rollbacks are logged and counted.
 */
export interface Db extends Queryable {
  readonly engine: DbEngine;
  /** Runs `fn` in BEGIN … COMMIT; any throw rolls back and rethrows. */
  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T>;
  /**
   * Subscribes to a NOTIFY channel; resolves to an unsubscribe function. `onLive` hears when
   * the subscription is lost (false: the LISTEN connection dropped, notices from now on are
   * missed) and back (true: delivered again; those sent in between are lost for good) — for a
   * cache that must not trust its entries across the gap. PGlite is in-process and never drops.
   */
  listen(channel: string, onPayload: (payload: string) => void, onLive?: (live: boolean) => void): Promise<() => Promise<void>>;
  /** Sends NOTIFY on `channel` (delivered at commit when called inside a transaction's SQL). */
  notify(channel: string, payload: string): Promise<void>;
  /**
   * Sends an empty NOTIFY on `channel` soon, coalescing calls: however many arrive while one
   * is pending or in flight, at most one more is sent after it, so a listener always hears of
   * the latest change.
   */
  notifySoon(channel: string): void;
  close(): Promise<void>;
}

/** Postgres type OIDs whose text form we parse the same way on both engines. */
export const TYPE_OIDS = { int8: 20, numeric: 1700 } as const;

/** int8 and numeric arrive as numbers on both engines (counters and USD amounts fit a double). */
export function parseNumeric(text: string): number {
  return Number(text);
}

/** Checks that a LISTEN/NOTIFY channel name is a plain identifier (it is interpolated into SQL). */
export function assertChannelName(channel: string): void {
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(channel)) throw new Error(`invalid channel name: ${channel}`);
}
