import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { logger } from '../telemetry/index.js';
import { withTransaction } from './transaction.js';
import type { Db, Queryable } from './types.js';

/** Where the numbered, append-only migrations live (the same path from src/ and dist/). */
export const MIGRATIONS_DIR = fileURLToPath(new URL('../../migrations/', import.meta.url));

/** Arbitrary constant: every fabric process migrating the same database takes this lock. */
const MIGRATION_LOCK_ID = 7_123_001;

export interface Migration {
  version: number;
  name: string;
  sql: string;
  checksum: string;
}

/** Reads `NNNN_name.sql` files in version order. */
export function loadMigrations(dir = MIGRATIONS_DIR): Migration[] {
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.sql'));
  const migrations = files.map((file) => {
    const m = /^(\d{4})_([a-z0-9_]+)\.sql$/.exec(file);
    if (!m) throw new Error(`migration file ${file} must be named NNNN_name.sql`);
    const sql = fs.readFileSync(`${dir}/${file}`, 'utf8');
    return { version: Number(m[1]), name: m[2]!, sql, checksum: createHash('sha256').update(sql).digest('hex') };
  });
  migrations.sort((a, b) => a.version - b.version);
  // Numbered 0001, 0002, … with neither gaps nor repeats: a gap means a lost file (branches that
  // reserved numbers in parallel are renumbered when they merge), a repeat a merge gone wrong.
  migrations.forEach((m, i) => {
    if (i > 0 && m.version === migrations[i - 1]!.version) throw new Error(`two migrations are numbered ${String(m.version).padStart(4, '0')}; renumber one`);
    if (m.version !== i + 1) throw new Error(`migrations must be numbered 0001, 0002, … without gaps; found ${m.version} at position ${i + 1} (is a migration file missing?)`);
  });
  return migrations;
}

async function appliedMigrations(q: Queryable): Promise<Map<number, string>> {
  const exists = await q.query<{ t: string | null }>(`SELECT to_regclass('schema_migrations')::text AS t`);
  if (!exists.rows[0]?.t) return new Map();
  const r = await q.query<{ version: number; checksum: string }>('SELECT version, checksum FROM schema_migrations');
  return new Map(r.rows.map((row) => [row.version, row.checksum]));
}

export interface MigrateResult {
  applied: number[];
  current: number;
}

/**
 * Applies pending migrations in one transaction under an advisory lock, so two processes
 * starting at once never migrate together, and a failing migration leaves nothing behind.
 * Refuses to run if an applied migration's file was edited.
 */
export async function migrate(db: Db, migrations = loadMigrations()): Promise<MigrateResult> {
  return withTransaction(
    db,
    async (tx) => {
      // Must come first so a concurrent migrator waits here rather than racing on DDL.
      await tx.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK_ID]);
      await tx.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
        version integer PRIMARY KEY,
        name text NOT NULL,
        checksum text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now())`);
      const applied = await appliedMigrations(tx);
      const done: number[] = [];
      for (const m of migrations) {
        const checksum = applied.get(m.version);
        if (checksum !== undefined) {
          if (checksum !== m.checksum)
            throw new Error(`migration ${m.version} (${m.name}) was edited after it was applied; shipped migrations are append-only — add a new one`);
          continue;
        }
        await tx.exec(m.sql);
        await tx.query('INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)', [m.version, m.name, m.checksum]);
        done.push(m.version);
      }
      const newest = Math.max(0, ...applied.keys());
      const known = migrations.at(-1)?.version ?? 0;
      if (newest > known) logger().warn({ newest, known }, 'the database schema is newer than this build of agent-fabric');
      if (done.length) logger().info({ applied: done }, 'migrations applied');
      return { applied: done, current: Math.max(known, newest) };
    },
    { name: 'migrate' },
  );
}

/** Versions that exist on disk but not in the database (empty when the schema is current). */
export async function pendingMigrations(db: Queryable, migrations = loadMigrations()): Promise<number[]> {
  const applied = await appliedMigrations(db);
  return migrations.filter((m) => !applied.has(m.version)).map((m) => m.version);
}
