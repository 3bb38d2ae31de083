import path from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import { vector } from '@electric-sql/pglite-pgvector';
import { coalescedNotifier } from './coalesce.js';
import { safeListener } from './listeners.js';
import { acquireDirLock } from './lockfile.js';
import { assertChannelName, parseNumeric, TYPE_OIDS, type Db, type Queryable, type QueryResult } from './types.js';

export interface PgliteOptions {
  /** Data directory; the database lives in `<dataDir>/pgdata`. Omit for an in-memory database. */
  dataDir?: string;
  /** A data-dir tarball (from `dumpDataDir`) to start from, e.g. a migrated test template. */
  loadDataDir?: Blob;
}

const parsers = { [TYPE_OIDS.int8]: parseNumeric, [TYPE_OIDS.numeric]: parseNumeric };

/** Opens the embedded engine. A data dir is locked against other processes while open. */
export async function openPglite(options: PgliteOptions = {}): Promise<Db & { dump(): Promise<Blob> }> {
  const release = options.dataDir ? acquireDirLock(options.dataDir) : () => {};
  let pg: PGlite;
  try {
    pg = await PGlite.create({
      ...(options.dataDir ? { dataDir: path.join(options.dataDir, 'pgdata') } : {}),
      ...(options.loadDataDir ? { loadDataDir: options.loadDataDir } : {}),
      parsers,
      // pgvector for semantic memory (migrations/0008 creates it when present)
      extensions: { vector },
    });
  } catch (err) {
    release();
    throw err;
  }
  // PGlite has one connection. Its own mutex lets a caller that re-acquires at once (a busy
  // worker loop) barge ahead of waiting ones, which starved API requests under load; this
  // queue hands the connection out strictly in call order.
  let tail: Promise<unknown> = Promise.resolve();
  const inTurn = <T>(fn: () => Promise<T>): Promise<T> => {
    const turn = tail.then(fn, fn);
    tail = turn.catch(() => {});
    return turn;
  };
  const run = async <R>(q: Pick<PGlite, 'query'>, text: string, params?: readonly unknown[]): Promise<QueryResult<R>> => {
    const r = await q.query<R>(text, params as unknown[] | undefined);
    return { rows: r.rows, rowCount: r.affectedRows ?? r.rows.length };
  };
  return {
    engine: 'pglite',
    query: (text, params) => inTurn(() => run(pg, text, params)),
    exec: (script) => inTurn(async () => void (await pg.exec(script))),
    // PGlite serialises transactions and plain queries on one mutex, so a transaction
    // here never sees another caller's statements interleaved.
    transaction: (fn) =>
      inTurn(() => pg.transaction((tx) => {
        const q: Queryable = {
          query: (text, params) => run(tx, text, params),
          exec: async (script) => void (await tx.exec(script)),
        };
        return fn(q);
      })),
    async listen(channel, onPayload) {
      assertChannelName(channel);
      const unsub = await pg.listen(channel, safeListener(channel, onPayload));
      return async () => unsub();
    },
    async notify(channel, payload) {
      assertChannelName(channel);
      await inTurn(() => pg.query('SELECT pg_notify($1, $2)', [channel, payload]));
    },
    notifySoon: coalescedNotifier(
      (channel) => inTurn(async () => void (await pg.query('SELECT pg_notify($1, $2)', [channel, '']))),
      () => pg.closed,
    ),
    async dump() {
      return pg.dumpDataDir('none');
    },
    async close() {
      try {
        if (!pg.closed) await pg.close();
      } finally {
        release();
      }
    },
  };
}
