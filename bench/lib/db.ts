import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { openPglite, openPostgres, type Db } from '../../src/db/index.js';

/** The PostgreSQL server benches create their databases on. */
export const PG_ADMIN_URL = process.env.BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

/** One statement on the admin database (CREATE / DROP DATABASE). */
export async function adminQuery(sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: PG_ADMIN_URL, connectionTimeoutMillis: 3000 });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

/** The URL of database `name` on the bench server. */
export function dbUrl(name: string): string {
  const u = new URL(PG_ADMIN_URL);
  u.pathname = `/${name}`;
  return u.toString();
}

/** A fresh database of the engine (PGlite in memory, or a new PostgreSQL database named `<prefix>_<pid>_<hex>`) and how to drop it. */
export async function openBenchDb(engine: string, prefix: string): Promise<{ db: Db; drop(): Promise<void> }> {
  if (engine === 'pglite') {
    const db = await openPglite();
    return { db, drop: async () => db.close() };
  }
  const name = `${prefix}_${process.pid}_${randomBytes(3).toString('hex')}`;
  await adminQuery(`CREATE DATABASE ${name}`);
  const db = await openPostgres({ url: dbUrl(name), poolSize: 10, connectTimeoutMs: 5000, statementTimeoutMs: 30_000 });
  return { db, drop: async () => (await db.close(), await adminQuery(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)) };
}
