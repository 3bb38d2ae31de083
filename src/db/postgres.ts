import pg from 'pg';
import { logger } from '../telemetry/index.js';
import { assertChannelName, parseNumeric, TYPE_OIDS, type Db, type Queryable, type QueryResult } from './types.js';

export interface PostgresOptions {
  /** postgres:// connection string. */
  url: string;
  /** Pool size; default 10. */
  poolSize?: number;
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
  const pool = new pg.Pool({
    connectionString: options.url,
    max: options.poolSize ?? 10,
    types,
    application_name: 'agent-fabric',
  });
  // An idle client that dies (server restart, pg_terminate_backend) must not crash the process.
  pool.on('error', (err) => logger().warn({ err }, 'idle PostgreSQL connection failed; the pool replaces it'));
  const check = await pool.connect();
  check.release();

  const listeners = new Map<string, Set<(payload: string) => void>>();
  let listenClient: pg.Client | undefined;
  let closing = false;

  async function connectListener(): Promise<pg.Client> {
    if (listenClient) return listenClient;
    const client = new pg.Client({ connectionString: options.url, types, application_name: 'agent-fabric-listen' });
    client.on('notification', (msg) => {
      for (const fn of listeners.get(msg.channel) ?? []) {
        try {
          fn(msg.payload ?? '');
        } catch (err) {
          logger().error({ err, channel: msg.channel }, 'a NOTIFY listener threw; it stays subscribed');
        }
      }
    });
    client.on('error', (err) => {
      logger().warn({ err }, 'LISTEN connection lost; reconnecting');
      listenClient = undefined;
      client.end().catch(() => {});
      if (!closing) setTimeout(() => void resubscribe(), 1000).unref();
    });
    await client.connect();
    listenClient = client;
    return client;
  }

  async function resubscribe(): Promise<void> {
    try {
      const client = await connectListener();
      for (const channel of listeners.keys()) await client.query(`LISTEN ${channel}`);
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
    async transaction(fn) {
      const client = await pool.connect();
      let broken: Error | undefined;
      const onError = (err: Error) => (broken = err);
      client.on('error', onError);
      try {
        await client.query('BEGIN');
        const tx: Queryable = {
          query: async (text, params) => wrap(await client.query(text, params as unknown[])),
          // without parameters pg uses the simple protocol, which allows several statements
          exec: async (script) => void (await client.query(script)),
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
        client.off('error', onError);
        // A client whose connection failed is destroyed rather than returned to the pool.
        client.release(broken ?? undefined);
      }
    },
    async listen(channel, onPayload) {
      assertChannelName(channel);
      let set = listeners.get(channel);
      if (!set) {
        set = new Set();
        listeners.set(channel, set);
        await (await connectListener()).query(`LISTEN ${channel}`);
      }
      set.add(onPayload);
      return async () => {
        set.delete(onPayload);
        if (set.size === 0 && listeners.get(channel) === set) {
          listeners.delete(channel);
          await listenClient?.query(`UNLISTEN ${channel}`).catch(() => {});
        }
      };
    },
    async exec(script) {
      await pool.query(script);
    },
    async notify(channel, payload) {
      assertChannelName(channel);
      await pool.query('SELECT pg_notify($1, $2)', [channel, payload]);
    },
    async close() {
      closing = true;
      await listenClient?.end().catch(() => {});
      await pool.end();
    },
  };
}
