import pg from 'pg';
import { logger } from '../telemetry/index.js';
import { coalescedNotifier } from './coalesce.js';
import { safeListener } from './listeners.js';
import { assertChannelName, parseNumeric, TYPE_OIDS, type Db, type Queryable, type QueryResult } from './types.js';

export interface PostgresOptions {
  /** postgres:// connection string. */
  url: string;
  /** Connections in the pool. */
  poolSize: number;
  /** How long to wait for a connection before failing (the API answers 503). */
  connectTimeoutMs: number;
  /** Longest a single statement may run. */
  statementTimeoutMs: number;
}

const types = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === TYPE_OIDS.int8 || oid === TYPE_OIDS.numeric
      ? parseNumeric
      : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
};

function wrap<R>(r: pg.QueryResult): QueryResult<R> {
  return { rows: r.rows as R[], rowCount: r.rowCount ?? r.rows.length };
}

/** Opens a pooled PostgreSQL connection through `pg`. */
export async function openPostgres(options: PostgresOptions): Promise<Db> {
  const connection = {
    connectionString: options.url,
    types,
    connectionTimeoutMillis: options.connectTimeoutMs,
    // Pinned per session so a server or database default (DateStyle, TimeZone) cannot change
    // how timestamps parse or how keyset cursors print.
    options: `-c DateStyle=ISO,MDY -c TimeZone=UTC -c statement_timeout=${options.statementTimeoutMs}`,
  };
  const pool = new pg.Pool({ ...connection, max: options.poolSize, application_name: 'agent-fabric' });
  // An idle client that dies (server restart, pg_terminate_backend) must not crash the process.
  pool.on('error', (err) => logger().warn({ err }, 'idle PostgreSQL connection failed; the pool replaces it'));
  const check = await pool.connect();
  check.release();

  const listeners = new Map<string, Set<(payload: string) => void>>();
  /** Who wants to hear that the LISTEN connection dropped or came back (listen's onLive). */
  const liveHooks = new Set<(live: boolean) => void>();
  const tellLive = (live: boolean) => {
    for (const hook of liveHooks)
      try {
        hook(live);
      } catch (err) {
        logger().warn({ err }, 'a LISTEN state hook failed');
      }
  };
  let listenClient: Promise<pg.Client> | undefined;
  let current: pg.Client | undefined;
  let closing = false;

  /** The one LISTEN connection, opened once even when many callers ask at the same time. */
  function listenConnection(): Promise<pg.Client> {
    listenClient ??= (async () => {
      const client = new pg.Client({ ...connection, application_name: 'agent-fabric-listen' });
      client.on('notification', (msg) => {
        for (const fn of listeners.get(msg.channel) ?? []) fn(msg.payload ?? '');
      });
      client.on('error', (err) => {
        logger().warn({ err }, 'LISTEN connection lost; reconnecting');
        void client.end().catch(() => {});
        if (current !== client) return; // an old connection: already replaced
        listenClient = undefined;
        tellLive(false);
        if (!closing) setTimeout(() => void resubscribe(), 1000).unref();
      });
      try {
        await client.connect();
      } catch (err) {
        listenClient = undefined;
        throw err;
      }
      current = client;
      return client;
    })();
    return listenClient;
  }

  async function resubscribe(): Promise<void> {
    try {
      const client = await listenConnection();
      for (const channel of listeners.keys()) await client.query(`LISTEN ${channel}`);
      tellLive(true);
    } catch (err) {
      logger().warn({ err }, 'LISTEN reconnect failed; retrying');
      if (!closing) setTimeout(() => void resubscribe(), 2000).unref();
    }
  }

  return {
    engine: 'postgres',
    async query(text, params) {
      return wrap(await pool.query(text, params as unknown[] | undefined));
    },
    async exec(script) {
      await pool.query(script);
    },
    async transaction(fn) {
      const client = await pool.connect();
      let broken: Error | undefined;
      let finished = false;
      const onError = (err: Error) => (broken = err);
      client.on('error', onError);
      // A statement issued after the transaction ended (a missing await) must not run on a
      // connection that is back in the pool, inside someone else's transaction.
      const guard = () => {
        if (finished) throw new Error('Transaction is closed: a statement was issued after it committed or rolled back (missing await?)');
      };
      try {
        await client.query('BEGIN');
        const tx: Queryable = {
          query: async (text, params) => (guard(), wrap(await client.query(text, params as unknown[]))),
          // without parameters pg uses the simple protocol, which allows several statements
          exec: async (script) => (guard(), void (await client.query(script))),
        };
        const result = await fn(tx);
        await client.query('COMMIT');
        return result;
      } catch (err) {
        try {
          await client.query('ROLLBACK');
        } catch (rollbackErr) {
          broken ??= rollbackErr as Error;
        }
        throw err;
      } finally {
        finished = true;
        client.off('error', onError);
        // A client whose connection failed is destroyed rather than returned to the pool.
        client.release(broken ?? undefined);
      }
    },
    async listen(channel, onPayload, onLive) {
      assertChannelName(channel);
      const listener = safeListener(channel, onPayload);
      let set = listeners.get(channel);
      if (!set) {
        await (await listenConnection()).query(`LISTEN ${channel}`);
        set = listeners.get(channel) ?? new Set(); // another caller may have registered meanwhile
        listeners.set(channel, set);
      }
      set.add(listener);
      if (onLive) liveHooks.add(onLive);
      const subscribed = set;
      return async () => {
        subscribed.delete(listener);
        if (onLive) liveHooks.delete(onLive);
        if (subscribed.size === 0 && listeners.get(channel) === subscribed) {
          listeners.delete(channel);
          const client = await listenClient?.catch(() => undefined);
          await client?.query(`UNLISTEN ${channel}`).catch(() => {});
        }
      };
    },
    async notify(channel, payload) {
      assertChannelName(channel);
      await pool.query('SELECT pg_notify($1, $2)', [channel, payload]);
    },
    notifySoon: coalescedNotifier(
      async (channel) => void (await pool.query('SELECT pg_notify($1, $2)', [channel, ''])),
      () => closing,
    ),
    async close() {
      closing = true;
      const client = await listenClient?.catch(() => undefined);
      await client?.end().catch(() => {});
      await pool.end();
    },
  };
}
