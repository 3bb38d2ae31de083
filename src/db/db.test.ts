import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { freshDb, type TestDb } from '../../test/support/db.js';
import { ENGINE } from '../../test/support/engine.js';
import { acquireDirLock, DataDirLockedError } from './lockfile.js';
import { loadMigrations, migrate, pendingMigrations, withTransaction, type Queryable } from './index.js';

// The Db conformance suite: every engine must pass it unchanged.
describe(`Db conformance (${ENGINE})`, () => {
  let db: TestDb;
  before(async () => (db = await freshDb()));
  after(async () => db.close());

  it('runs parameterised queries and returns rows and counts', async () => {
    await db.exec('CREATE TABLE t (id int PRIMARY KEY, note text, big bigint, money numeric(14,6), doc jsonb, at timestamptz DEFAULT now())');
    const r = await db.query('INSERT INTO t (id, note, big, money, doc) VALUES ($1, $2, $3, $4, $5), ($6, $7, $8, $9, $10)', [
      1, 'a', 9_007_199_254_740_991, 0.125, JSON.stringify({ k: [1] }), 2, null, 0, 1, JSON.stringify(null),
    ]);
    assert.equal(r.rowCount, 2);
    const rows = (await db.query<{ id: number; big: number; money: number; doc: unknown; at: Date }>('SELECT * FROM t ORDER BY id')).rows;
    assert.equal(rows[0]!.big, 9_007_199_254_740_991, 'int8 arrives as a number');
    assert.equal(rows[0]!.money, 0.125, 'numeric arrives as a number');
    assert.deepEqual(rows[0]!.doc, { k: [1] }, 'jsonb arrives parsed');
    assert.ok(rows[0]!.at instanceof Date, 'timestamptz arrives as a Date');
    assert.equal((await db.query<{ n: number }>('SELECT count(*) AS n FROM t')).rows[0]!.n, 2);
  });

  it('commits a transaction as a whole', async () => {
    await db.transaction(async (tx) => {
      await tx.query('INSERT INTO t (id) VALUES (10)');
      await tx.query('INSERT INTO t (id) VALUES (11)');
    });
    assert.equal((await db.query('SELECT 1 FROM t WHERE id IN (10, 11)')).rows.length, 2);
  });

  it('rolls back everything when the function throws, and rethrows', async () => {
    await assert.rejects(
      withTransaction(db, async (tx) => {
        await tx.query('INSERT INTO t (id) VALUES (20)');
        throw new Error('boom');
      }),
      /boom/,
    );
    assert.equal((await db.query('SELECT 1 FROM t WHERE id = 20')).rows.length, 0);
  });

  it('rolls back on a failing statement (constraint) and the connection stays usable', async () => {
    await assert.rejects(
      db.transaction(async (tx) => {
        await tx.query('INSERT INTO t (id) VALUES (30)');
        await tx.query('INSERT INTO t (id) VALUES (30)');
      }),
      (err: { code?: string }) => err.code === '23505',
    );
    assert.equal((await db.query('SELECT 1 FROM t WHERE id = 30')).rows.length, 0);
    assert.equal((await db.query('SELECT 1 AS one')).rows.length, 1);
  });

  it('keeps concurrent transactions apart (no statement leaks into another open transaction)', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const slow = assert.rejects(
      db.transaction(async (tx) => {
        await tx.query('INSERT INTO t (id) VALUES (40)');
        await gate;
        throw new Error('abort slow');
      }),
    );
    const fast = db.query('INSERT INTO t (id) VALUES (41)');
    setTimeout(release, 50);
    await Promise.all([slow, fast]);
    const ids = (await db.query<{ id: number }>('SELECT id FROM t WHERE id IN (40, 41) ORDER BY id')).rows.map((r) => r.id);
    assert.deepEqual(ids, [41]);
  });

  it('delivers NOTIFY to listeners, and stops after unsubscribe', async () => {
    const got: string[] = [];
    const unsubscribe = await db.listen('fabric_test_channel', (p) => got.push(p));
    await db.notify('fabric_test_channel', 'one');
    await db.transaction(async (tx) => void (await tx.query(`SELECT pg_notify('fabric_test_channel', 'at-commit')`)));
    for (let i = 0; i < 50 && got.length < 2; i++) await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(got, ['one', 'at-commit']);
    await unsubscribe();
    await db.notify('fabric_test_channel', 'after');
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(got, ['one', 'at-commit']);
  });

  it('a LISTEN connection that drops is reported, re-established, reported back, and delivers again', { skip: ENGINE !== 'postgres' && 'PGlite listens in-process: nothing to drop' }, async () => {
    const got: string[] = [];
    const live: boolean[] = [];
    const unsubscribe = await db.listen('fabric_test_drop', (p) => got.push(p), (l) => live.push(l));
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    try {
      await db.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'agent-fabric-listen' AND datname = current_database()`);
      for (let i = 0; i < 250 && live.length < 2; i++) await sleep(20);
      assert.deepEqual(live, [false, true]);
      await db.notify('fabric_test_drop', 'again');
      for (let i = 0; i < 50 && got.length < 1; i++) await sleep(20);
      assert.deepEqual(got, ['again']);
    } finally {
      await unsubscribe();
    }
  });

  it('a listener that throws is logged, stays subscribed, and does not crash the process', async () => {
    const got: string[] = [];
    const unsubscribe = await db.listen('fabric_throwing', (p) => {
      got.push(p);
      throw new Error('listener bug');
    });
    await db.notify('fabric_throwing', 'a');
    await db.notify('fabric_throwing', 'b');
    for (let i = 0; i < 50 && got.length < 2; i++) await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(got, ['a', 'b']);
    await unsubscribe();
  });

  it('many concurrent listen() calls share one subscription per channel and all receive', async () => {
    const got: number[] = [];
    const subs = await Promise.all([1, 2, 3].map((n) => db.listen('fabric_concurrent', () => got.push(n))));
    await db.notify('fabric_concurrent', 'x');
    for (let i = 0; i < 50 && got.length < 3; i++) await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(got.sort(), [1, 2, 3]);
    await Promise.all(subs.map((u) => u()));
  });

  it('a statement issued after the transaction ended is refused', async () => {
    let leaked!: Queryable;
    await db.transaction(async (tx) => void (leaked = tx));
    await assert.rejects(leaked.query('INSERT INTO t (id) VALUES (50)'), /closed/i);
    assert.equal((await db.query('SELECT 1 FROM t WHERE id = 50')).rows.length, 0);
  });

  it('refuses channel names that are not plain identifiers', async () => {
    await assert.rejects(db.listen('x; DROP TABLE t', () => {}), /invalid channel/);
  });

  it('migrations are applied once: a second (and concurrent) run applies nothing', async () => {
    assert.deepEqual(await pendingMigrations(db), []);
    const [a, b] = await Promise.all([migrate(db), migrate(db)]);
    assert.deepEqual([a.applied, b.applied], [[], []]);
  });

  it('refuses to start when a shipped migration was edited', async () => {
    const edited = loadMigrations().map((m, i) => (i === 0 ? { ...m, checksum: 'x'.repeat(64) } : m));
    await assert.rejects(migrate(db, edited), /was edited after it was applied/);
  });
});

describe('data-dir lock file', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fabric-lock-'));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('a second holder gets a clear error naming the holder pid; release frees it', () => {
    fs.writeFileSync(path.join(dir, 'fabric.lock'), `${process.ppid}\n`); // a live process that is not us
    assert.throws(() => acquireDirLock(dir), (err: unknown) => err instanceof DataDirLockedError && err.message.includes(`pid ${process.ppid}`) && err.message.includes('--data-dir'));
    fs.rmSync(path.join(dir, 'fabric.lock'));
    const release = acquireDirLock(dir);
    assert.throws(() => acquireDirLock(dir), DataDirLockedError);
    release();
    acquireDirLock(dir)();
  });

  it('a lock carrying our own pid from a previous life (container restart) is taken over', () => {
    fs.writeFileSync(path.join(dir, 'fabric.lock'), `${process.pid}\n`);
    acquireDirLock(dir)();
  });

  it('a fresh unreadable lock is respected (it may be mid-write); an old one is taken over', () => {
    fs.writeFileSync(path.join(dir, 'fabric.lock'), '');
    assert.throws(() => acquireDirLock(dir), DataDirLockedError);
    const old = new Date(Date.now() - 60_000);
    fs.utimesSync(path.join(dir, 'fabric.lock'), old, old);
    acquireDirLock(dir)();
  });

  it('the data dir is private to this user', () => {
    fs.chmodSync(dir, 0o755);
    acquireDirLock(dir)();
    assert.equal(fs.statSync(dir).mode & 0o777, 0o700);
  });

  it('processes racing to take over a stale lock: exactly one wins', async () => {
    const race = fs.mkdtempSync(path.join(os.tmpdir(), 'fabric-race-'));
    fs.writeFileSync(path.join(race, 'fabric.lock'), '2147483646\n');
    const results = path.join(race, 'results');
    const stop = path.join(race, 'stop');
    // Every racer reports won/lost, then holds on until all have reported, so a late starter
    // cannot take a lock the winner already released.
    const script = `import fs from 'node:fs'; import { acquireDirLock } from ${JSON.stringify(new URL('./lockfile.ts', import.meta.url).pathname)};
      let won = false; try { acquireDirLock(${JSON.stringify(race)}); won = true; } catch {}
      fs.appendFileSync(${JSON.stringify(results)}, (won ? 'won' : 'lost') + '\\n');
      const until = Date.now() + 30000; while (!fs.existsSync(${JSON.stringify(stop)}) && Date.now() < until) await new Promise((r) => setTimeout(r, 20));`;
    const { spawn } = await import('node:child_process');
    const runs = Array.from({ length: 6 }, () => new Promise((resolve) => spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: 'inherit' }).on('close', resolve)));
    const lines = () => (fs.existsSync(results) ? fs.readFileSync(results, 'utf8').trim().split('\n') : []);
    for (let i = 0; i < 600 && lines().length < 6; i++) await new Promise((r) => setTimeout(r, 50));
    fs.writeFileSync(stop, '');
    await Promise.all(runs);
    const outcome = lines();
    fs.rmSync(race, { recursive: true, force: true });
    assert.equal(outcome.length, 6);
    assert.equal(outcome.filter((l) => l === 'won').length, 1);
  });

  it('a lock left by a dead process is taken over', () => {
    fs.writeFileSync(path.join(dir, 'fabric.lock'), '2147483646\n');
    const release = acquireDirLock(dir);
    assert.equal(fs.readFileSync(path.join(dir, 'fabric.lock'), 'utf8').trim(), String(process.pid));
    release();
    assert.equal(fs.existsSync(path.join(dir, 'fabric.lock')), false);
  });
});
