/**
 * bench/audit — what the hash chain costs an audit append. The same database, two tables:
 * audit_log (the chain trigger: lock the tenant's head row, hash, update the head) and
 * audit_plain, a copy of its columns without triggers (the insert as it was before 0014).
 * Appends alternate between the two, one at a time, each in its own transaction as callers
 * make them (BEGIN, recordAudit's INSERT, COMMIT); the table shows the INSERT alone and the
 * whole transaction. On PostgreSQL a second measure runs 16 writers at once, all in one tenant
 * (they queue on its chain head) and spread over 16 tenants, for appends per second (two
 * rounds per side, alternating, best of each).
 *
 *   npm run bench:audit
 *   env: BENCH_ENGINES=pglite,postgres, BENCH_N=2000 (appends per side), BENCH_PG_URL
 */
import { randomBytes } from 'node:crypto';
import { recordAudit, verifyChain, type AuditEntry } from '../src/audit/index.js';
import { migrate, openPglite, openPostgres, withTransaction, type Db, type Queryable } from '../src/db/index.js';
import { createLogger, setLogger } from '../src/telemetry/index.js';
import { adminQuery, dbUrl } from './lib/db.js';
import { fmt, nowUs, percentile } from './lib/stats.js';

setLogger(createLogger({ level: 'warn' }));
const N = Number(process.env.BENCH_N ?? 2000);
const ENGINES = (process.env.BENCH_ENGINES ?? 'pglite,postgres').split(',').map((s) => s.trim());
const WRITERS = 16;

const entry = (i: number, tenantId = 'bench'): AuditEntry => ({
  tenantId,
  actor: { sub: 'bench-admin', role: 'admin' },
  action: 'agent.update',
  targetType: 'agent',
  targetId: `agent-${i}`,
  before: { model: 'gpt-4o-mini', tools: ['search'], max_concurrency: 4 },
  after: { model: 'gpt-4o', tools: ['search', 'code'], max_concurrency: 8 },
});

/** recordAudit's statement into the trigger-less copy. */
async function plainInsert(q: Queryable, e: AuditEntry): Promise<void> {
  await q.query(
    `INSERT INTO audit_plain (tenant_id, actor_sub, actor_role, action, target_type, target_id, before, after, request_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
    [e.tenantId, e.actor.sub, e.actor.role, e.action, e.targetType, e.targetId, JSON.stringify(e.before), JSON.stringify(e.after), null],
  );
}

type Append = (q: Queryable, e: AuditEntry) => Promise<void>;

async function oneAtATime(db: Db): Promise<void> {
  const sides: [string, Append][] = [
    ['chained (audit_log)', recordAudit],
    ['unchained (no triggers)', plainInsert],
  ];
  const insertUs = sides.map(() => [] as number[]);
  const txUs = sides.map(() => [] as number[]);
  for (let i = 0; i < N + 200; i++) {
    for (let s = 0; s < sides.length; s++) {
      const t0 = nowUs();
      let ins = 0;
      await withTransaction(db, async (tx) => {
        const a = nowUs();
        await sides[s]![1](tx, entry(i));
        ins = nowUs() - a;
      });
      if (i >= 200) {
        insertUs[s]!.push(ins);
        txUs[s]!.push(nowUs() - t0);
      }
    }
  }
  console.log(`\n${db.engine}: ${N} appends per side, one at a time, alternating (µs)\n`);
  console.log('| table | INSERT p50 | INSERT p99 | transaction p50 | transaction p99 |');
  console.log('| --- | ---: | ---: | ---: | ---: |');
  sides.forEach(([name], s) =>
    console.log(`| ${name} | ${fmt(percentile(insertUs[s]!, 50))} | ${fmt(percentile(insertUs[s]!, 99))} | ${fmt(percentile(txUs[s]!, 50))} | ${fmt(percentile(txUs[s]!, 99))} |`),
  );
  const d50 = percentile(insertUs[0]!, 50) - percentile(insertUs[1]!, 50);
  console.log(`\nchain cost per append (INSERT p50 difference): ${fmt(d50)} µs`);
}

async function concurrent(db: Db): Promise<void> {
  console.log(`\n${db.engine}: ${WRITERS} writers at once, ${N} appends in all (appends/s)\n`);
  console.log('| tenants | chained | unchained | ratio |');
  console.log('| --- | ---: | ---: | ---: |');
  for (const tenants of [1, WRITERS]) {
    const rate = async (append: Append) => {
      let next = 0;
      const t0 = nowUs();
      await Promise.all(
        Array.from({ length: WRITERS }, async (_, w) => {
          while (next < N) {
            const i = next++;
            await withTransaction(db, (tx) => append(tx, entry(i, `bench-${w % tenants}`)));
          }
        }),
      );
      return N / ((nowUs() - t0) / 1e6);
    };
    // two rounds, alternating sides, best of each: the first run after a switch pays for cold pages
    const chained = Math.max(await rate(recordAudit), 0);
    const plain = Math.max(await rate(plainInsert), await rate(plainInsert));
    const chained2 = Math.max(chained, await rate(recordAudit));
    console.log(`| ${tenants} | ${fmt(chained2)} | ${fmt(plain)} | ${fmt(chained2 / plain, 2)}× |`);
  }
}

async function main(): Promise<void> {
  for (const engine of ENGINES) {
    let db: Db;
    let drop = async () => {};
    if (engine === 'pglite') db = await openPglite();
    else {
      const name = `bench_audit_${process.pid}_${randomBytes(3).toString('hex')}`;
      try {
        await adminQuery(`CREATE DATABASE ${name}`);
      } catch (err) {
        console.log(`\npostgres: skipped (${(err as Error).message})`);
        continue;
      }
      db = await openPostgres({ url: dbUrl(name), poolSize: WRITERS, connectTimeoutMs: 5000, statementTimeoutMs: 60_000 });
      drop = () => adminQuery(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    }
    try {
      await migrate(db);
      await db.exec(`CREATE TABLE audit_plain (LIKE audit_log INCLUDING DEFAULTS INCLUDING IDENTITY)`);
      await oneAtATime(db);
      if (engine === 'postgres') await concurrent(db);
      const t0 = nowUs();
      const v = await verifyChain(db, 'bench');
      const ms = (nowUs() - t0) / 1000;
      console.log(`\nverify: ${v.rows} rows of tenant bench ${v.ok ? 'intact' : 'BROKEN'} in ${fmt(ms)} ms (${fmt(v.rows / (ms / 1000))} rows/s)`);
    } finally {
      await db.close();
      await drop();
    }
  }
}

await main();
