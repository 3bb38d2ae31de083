import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { AuditExports, chainHash, recordAudit, verifyAudit, verifyChain } from '../src/audit/index.js';
import { createBlobStore } from '../src/files/index.js';
import { loadMigrations, migrate, openPglite, openPostgres, withTransaction, type Db } from '../src/db/index.js';
import { startTestApp, TEST_SECRET, type TestApp } from './support/app.js';
import type { TestDb } from './support/db.js';
import { ENGINE, PG_ADMIN_URL, PG_TEMPLATE_DB, PGLITE_TEMPLATE, pgUrl } from './support/engine.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const actor = { sub: 'tester', role: 'admin' };

/** Writes `n` audit rows into `tenant`'s chain (outside any transaction, like the sandbox's egress denials). */
async function seed(db: Db, tenant: string, n: number): Promise<number[]> {
  for (let i = 1; i <= n; i++) await recordAudit(db, { tenantId: tenant, actor, action: 'test.event', targetType: 'thing', targetId: `t${i}`, after: { i, nested: { b: 'x', a: [1, 2.5, 'é'] } } });
  const r = await db.query<{ id: number }>(`SELECT id FROM audit_log WHERE tenant_id = $1 ORDER BY chain_seq`, [tenant]);
  return r.rows.map((x) => Number(x.id));
}

/** Runs `sql` with the append-only trigger (and optionally the chain trigger) disabled: the documented maintenance escape. */
async function tamper(db: Db, sql: string, params: unknown[] = [], opts: { chainTrigger?: boolean } = {}): Promise<void> {
  await withTransaction(db, async (q) => {
    await q.query('ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only');
    if (opts.chainTrigger === false) await q.query('ALTER TABLE audit_log DISABLE TRIGGER audit_log_chain');
    await q.query(sql, params);
    await q.query('ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only');
    await q.query('ALTER TABLE audit_log ENABLE TRIGGER audit_log_chain');
  });
}

describe(`audit log API and exports (${ENGINE})`, () => {
  let t: TestApp;
  let agentA: string;
  let agentB: string;
  const taskId = randomUUID();
  before(async () => {
    t = await startTestApp();
    assert.equal((await t.app.inject({ method: 'POST', url: '/api/tenants', headers: await t.auth('platform_admin'), payload: { id: 'acme', name: 'Acme' } })).statusCode, 201);
    const provision = async (name: string, tenant = 'default') =>
      (await t.app.inject({ method: 'POST', url: '/api/agents/provision', headers: await t.auth('admin', { tenant, sub: `admin-of-${tenant}` }), payload: { name, model: 'm' } })).json().agent.id as string;
    agentA = await provision('a');
    agentB = await provision('b');
    await provision('other', 'acme');
    await t.app.inject({ method: 'PATCH', url: `/api/agents/${agentA}`, headers: await t.auth('operator', { sub: 'op-1' }), payload: { model: 'm2' } });
    await recordAudit(t.db, { tenantId: 'default', actor: { sub: agentB, role: 'agent' }, action: 'sandbox.egress.denied', targetType: 'session', targetId: 's1', after: { task_id: taskId, host: 'evil.example' } });
  });
  after(async () => t.close());

  const get = async (url: string, role: Parameters<TestApp['auth']>[0] = 'admin', opts: { tenant?: string } = {}) => t.app.inject({ method: 'GET', url, headers: await t.auth(role, opts) });
  type Ev = { id: number; tenant_id: string | null; actor_sub: string; action: string; target_id: string; created_at: string; chain_seq: number; hash: string; after: unknown };
  const events = async (qs: string, role: Parameters<TestApp['auth']>[0] = 'admin', opts: { tenant?: string } = {}) => {
    const res = await get(`/api/audit${qs}`, role, opts);
    assert.equal(res.statusCode, 200, res.body);
    return res.json().events as Ev[];
  };

  it("lists the tenant's events newest first, with who, what, target, before/after, request id and chain position", async () => {
    const all = await events('');
    assert.ok(all.length >= 4);
    assert.ok(all.every((e) => e.tenant_id === 'default'));
    assert.deepEqual(all.map((e) => e.id), [...all.map((e) => e.id)].sort((a, b) => b - a));
    const update = all.find((e) => e.action === 'agent.update')!;
    assert.equal(update.actor_sub, 'op-1');
    assert.match(update.created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
    assert.match(update.hash, /^[0-9a-f]{64}$/);
    const raw = (await t.db.query<{ request_id: string | null }>(`SELECT request_id FROM audit_log WHERE id = $1`, [update.id])).rows[0]!;
    assert.ok(raw.request_id, 'the request id is recorded');
  });

  it('filters by actor, agent, task, action (exact or prefix*) and time', async () => {
    assert.deepEqual((await events('?actor=op-1')).map((e) => e.action), ['agent.update']);
    const aboutA = await events(`?agent_id=${agentA}`);
    assert.deepEqual(aboutA.map((e) => e.action).sort(), ['agent.provision', 'agent.update']);
    const byB = await events(`?agent_id=${agentB.toUpperCase()}`);
    assert.deepEqual(byB.map((e) => e.action).sort(), ['agent.provision', 'sandbox.egress.denied'], 'its target or its actor');
    assert.deepEqual((await events(`?task_id=${taskId}`)).map((e) => e.action), ['sandbox.egress.denied']);
    assert.equal((await events('?action=agent.provision')).length, 2);
    assert.equal((await events('?action=agent.*')).length, 3);
    const all = await events('');
    const newest = all[0]!;
    assert.deepEqual((await events(`?since=${encodeURIComponent(newest.created_at)}`)).map((e) => e.id), [newest.id]);
    assert.ok((await events(`?until=${encodeURIComponent(newest.created_at)}`)).every((e) => e.id !== newest.id));
    for (const bad of ['?action=DROP TABLE', '?since=yesterday', '?limit=0', '?colour=red', '?cursor=bm9wZQ']) {
      const res = await get(`/api/audit${bad.replace(' ', '%20')}`);
      assert.equal(res.statusCode, 400, bad);
      assert.ok(res.json().error.code && res.json().error.message, bad);
    }
  });

  it('pages with limit and next_cursor without repeats or gaps', async () => {
    const all = await events('');
    const seen: number[] = [];
    let cursor: string | null = null;
    do {
      const res = await get(`/api/audit?limit=2${cursor ? `&cursor=${cursor}` : ''}`);
      const body = res.json() as { events: Ev[]; next_cursor: string | null };
      assert.ok(body.events.length <= 2);
      seen.push(...body.events.map((e) => e.id));
      cursor = body.next_cursor;
    } while (cursor);
    assert.deepEqual(seen, all.map((e) => e.id));
  });

  it('only tenant admins and platform_admin may read it; agents and other roles get 403; tenants are isolated', async () => {
    for (const role of ['agent', 'operator', 'member', 'viewer'] as const) {
      const res = await get('/api/audit', role);
      assert.equal(res.statusCode, 403, role);
      assert.equal(res.json().error.code, 'forbidden');
      const exp = await t.app.inject({ method: 'POST', url: '/api/audit/exports', headers: await t.auth(role), payload: {} });
      assert.equal(exp.statusCode, 403, role);
    }
    assert.equal((await t.app.inject({ method: 'GET', url: '/api/audit' })).statusCode, 401);
    const acme = await events('', 'admin', { tenant: 'acme' });
    assert.ok(acme.length >= 1 && acme.every((e) => e.tenant_id === 'acme'));
    assert.deepEqual(await events(`?agent_id=${agentA}`, 'admin', { tenant: 'acme' }), []);
    const refused = await get('/api/audit?all_tenants=true', 'admin');
    assert.equal(refused.statusCode, 403);
    assert.match(refused.json().error.message, /platform_admin/);
    const everyone = await events('?all_tenants=true&limit=1000', 'platform_admin');
    const tenants = new Set(everyone.map((e) => e.tenant_id));
    assert.ok(tenants.has('default') && tenants.has('acme'), 'platform_admin sees across tenants');
    const viaHeader = await t.app.inject({ method: 'GET', url: '/api/audit', headers: { ...(await t.auth('platform_admin')), 'x-fabric-tenant': 'acme' } });
    assert.ok((viaHeader.json().events as Ev[]).every((e) => e.tenant_id === 'acme'));
  });

  async function exportOf(payload: object, tenant = 'default') {
    const headers = await t.auth('admin', { tenant });
    const res = await t.app.inject({ method: 'POST', url: '/api/audit/exports', headers, payload });
    assert.equal(res.statusCode, 202, res.body);
    assert.equal(res.json().export.status, 'running');
    const id = res.json().export.id as string;
    assert.equal(res.headers.location, `/api/audit/exports/${id}`);
    for (let i = 0; i < 200; i++) {
      const job = (await t.app.inject({ method: 'GET', url: `/api/audit/exports/${id}`, headers })).json().export;
      if (job.status !== 'running') return job as { id: string; status: string; row_count: number; size: number; sha256: string; download_url: string; format: string };
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error('export did not finish');
  }

  it("exports JSON lines into the tenant's storage, downloadable by signed URL without a token", async () => {
    const job = await exportOf({ format: 'jsonl', action: 'agent.*' });
    assert.equal(job.status, 'completed');
    assert.equal(job.row_count, 3);
    const res = await t.app.inject({ method: 'GET', url: job.download_url });
    assert.equal(res.statusCode, 200, res.body);
    assert.match(res.headers['content-type'] as string, /application\/x-ndjson/);
    assert.match(res.headers['content-disposition'] as string, /attachment/);
    assert.equal(res.rawPayload.length, job.size);
    assert.equal(createHash('sha256').update(res.rawPayload).digest('hex'), job.sha256);
    const lines = res.body.trimEnd().split('\n').map((l) => JSON.parse(l) as Ev);
    assert.deepEqual(lines.map((e) => e.action).sort(), ['agent.provision', 'agent.provision', 'agent.update']);
    assert.ok(lines.every((e) => e.tenant_id === 'default' && /^[0-9a-f]{64}$/.test(e.hash)));
    assert.ok(fs.existsSync(path.join(t.config.files.dir!, 'default', 'system', 'audit-exports', job.id)), 'stored in the tenant system area');
  });

  it('exports CSV with a header row and quoted JSON cells; altered URLs and other tenants are refused', async () => {
    const job = await exportOf({ format: 'csv' });
    const res = await t.app.inject({ method: 'GET', url: job.download_url });
    assert.equal(res.statusCode, 200);
    assert.match(res.headers['content-type'] as string, /text\/csv/);
    const rows = res.body.trimEnd().split('\r\n');
    assert.equal(rows[0], 'id,tenant_id,created_at,actor_sub,actor_role,action,target_type,target_id,request_id,before,after,chain_seq,hash');
    assert.equal(rows.length - 1, job.row_count);
    assert.ok(rows.some((r) => r.includes(`""task_id"":""${taskId}""`)), 'JSON cells are quoted with doubled quotes');
    const altered = job.download_url.replace(/sig=./, (m) => (m.endsWith('A') ? 'sig=B' : 'sig=A'));
    const bad = await t.app.inject({ method: 'GET', url: altered });
    assert.equal(bad.statusCode, 403);
    assert.equal(bad.json().error.code, 'url_invalid');
    const fileUrl = await t.app.inject({ method: 'GET', url: job.download_url.replace('/audit-exports/', '/files/') });
    assert.equal(fileUrl.statusCode, 403, 'an export URL does not open a file');
    // a URL signed 901 s ago by any process with the same secret has expired
    const other = new AuditExports({ db: t.db, blobs: createBlobStore(t.config), signingSecret: TEST_SECRET });
    const old = await other.get('default', job.id, Date.now() - 901_000);
    await other.close();
    const expired = await t.app.inject({ method: 'GET', url: old.download_url! });
    assert.equal(expired.statusCode, 403);
    assert.equal(expired.json().error.code, 'url_expired');
    const foreign = await t.app.inject({ method: 'GET', url: `/api/audit/exports/${job.id}`, headers: await t.auth('admin', { tenant: 'acme' }) });
    assert.equal(foreign.statusCode, 404);
    const acme = await exportOf({ format: 'jsonl' }, 'acme');
    const body = (await t.app.inject({ method: 'GET', url: acme.download_url })).body;
    assert.ok(body.trimEnd().split('\n').every((l) => (JSON.parse(l) as Ev).tenant_id === 'acme'));
    const logged = await events(`?action=audit.export&actor=test-admin`);
    assert.ok(logged.some((e) => e.target_id === job.id && (e.after as { format: string }).format === 'csv'), 'an export is itself audited');
    const badFormat = await t.app.inject({ method: 'POST', url: '/api/audit/exports', headers: await t.auth('admin'), payload: { format: 'xml' } });
    assert.equal(badFormat.statusCode, 400);
  });
});

describe(`audit hash chain (${ENGINE})`, () => {
  let t: TestApp;
  let db: TestDb;
  before(async () => {
    t = await startTestApp();
    db = t.db;
  });
  after(async () => t.close());

  it('verifies a clean chain, and the table refuses UPDATE, DELETE and TRUNCATE', async () => {
    await seed(db, 'clean', 5);
    const r = await verifyChain(db, 'clean');
    assert.equal(r.ok, true, JSON.stringify(r));
    assert.equal(r.rows, 5);
    assert.equal(r.head.seq, 5);
    for (const sql of [`UPDATE audit_log SET action = 'x' WHERE tenant_id = 'clean'`, `DELETE FROM audit_log WHERE tenant_id = 'clean'`, 'TRUNCATE audit_log']) {
      await assert.rejects(db.query(sql), /append-only/, sql);
    }
    assert.ok((await verifyAudit(db)).every((c) => c.ok));
  });

  it('detects a row edited directly in the database, at that row', async () => {
    const ids = await seed(db, 'edited', 5);
    await tamper(db, `UPDATE audit_log SET after = jsonb_set(after, '{i}', '99') WHERE id = $1`, [ids[2]]);
    const r = await verifyChain(db, 'edited');
    assert.equal(r.ok, false);
    assert.equal(r.broken!.id, ids[2]);
    assert.match(r.broken!.reason, /edited/);
    assert.equal(r.rows, 2, 'the rows before it verified');
    // an edit of the time alone (a microsecond) is caught too
    const ids2 = await seed(db, 'edited-time', 3);
    await tamper(db, `UPDATE audit_log SET created_at = created_at + interval '1 microsecond' WHERE id = $1`, [ids2[0]]);
    assert.equal((await verifyChain(db, 'edited-time')).broken!.id, ids2[0]);
  });

  it('detects a deleted row at the row after it, and a deleted last row at the head', async () => {
    const ids = await seed(db, 'deleted', 5);
    await tamper(db, `DELETE FROM audit_log WHERE id = $1`, [ids[1]]);
    const r = await verifyChain(db, 'deleted');
    assert.equal(r.broken!.id, ids[2]);
    assert.match(r.broken!.reason, /position 2 is missing.*deleted/);
    const tail = await seed(db, 'deleted-tail', 3);
    await tamper(db, `DELETE FROM audit_log WHERE id = $1`, [tail[2]]);
    const h = await verifyChain(db, 'deleted-tail');
    assert.equal(h.broken!.id, null);
    assert.match(h.broken!.reason, /head is at position 3 but the last row is at 2/);
  });

  it('detects a forged row inserted in the middle (even with a correctly computed hash) at the forged row', async () => {
    const ids = await seed(db, 'forged', 5);
    const prev = (await db.query<{ hash: string }>(`SELECT hash FROM audit_log WHERE id = $1`, [ids[1]])).rows[0]!.hash;
    // insert at position 3 with prev_hash of row 2, then give it the hash its content really has
    await tamper(
      db,
      `INSERT INTO audit_log (tenant_id, actor_sub, actor_role, action, target_type, target_id, chain_seq, prev_hash, hash)
       VALUES ('forged', 'mallory', 'admin', 'agent.delete', 'agent', 'x', 3, $1, 'pending')`,
      [prev],
      { chainTrigger: false },
    );
    const forged = (await db.query<{ id: number; content: string }>(`SELECT id, fabric_audit_content(a) AS content FROM audit_log a WHERE actor_sub = 'mallory'`)).rows[0]!;
    await tamper(db, `UPDATE audit_log SET hash = $2 WHERE id = $1`, [forged.id, chainHash(prev, forged.content)]);
    const r = await verifyChain(db, 'forged');
    assert.equal(r.broken!.id, Number(forged.id));
    assert.match(r.broken!.reason, /position 3 appears twice: a row was inserted/);
    // an unsealed row (chain trigger off, no hash) is named too
    await seed(db, 'unsealed', 2);
    await tamper(db, `INSERT INTO audit_log (tenant_id, actor_sub, actor_role, action, target_type, target_id) VALUES ('unsealed', 'm', 'admin', 'x', 'y', 'z')`, [], { chainTrigger: false });
    assert.match((await verifyChain(db, 'unsealed')).broken!.reason, /not sealed/);
  });

  it('a rolled-back writer leaves no gap', async () => {
    await seed(db, 'rollback', 2);
    await assert.rejects(
      withTransaction(db, async (tx) => {
        await recordAudit(tx, { tenantId: 'rollback', actor, action: 'test.event', targetType: 'thing', targetId: 'lost' });
        throw new Error('boom');
      }),
    );
    await seed(db, 'rollback', 1);
    const r = await verifyChain(db, 'rollback');
    assert.equal(r.ok, true, JSON.stringify(r));
    assert.equal(r.head.seq, 3);
  });

  it('50 parallel provisions and 100 parallel writes outside transactions in 3 tenants still make valid chains', async () => {
    const headers = await t.auth('admin');
    const res = await Promise.all(Array.from({ length: 50 }, (_, i) => t.app.inject({ method: 'POST', url: '/api/agents/provision', headers, payload: { name: `p${i}`, model: 'm' } })));
    assert.ok(res.every((r) => r.statusCode === 201));
    await Promise.all(
      Array.from({ length: 100 }, (_, i) => recordAudit(db, { tenantId: ['c1', 'c2', null][i % 3]!, actor, action: 'test.parallel', targetType: 'thing', targetId: String(i) })),
    );
    const d = await verifyChain(db, 'default');
    assert.equal(d.ok, true, JSON.stringify(d));
    assert.ok(d.rows >= 50);
    for (const c of ['c1', 'c2', null]) assert.equal((await verifyChain(db, c)).ok, true, String(c));
  });

  it('verify on a live database: writers appending meanwhile do not make it report a break', async () => {
    await seed(db, 'live', 3);
    let stop = false;
    const writers = Array.from({ length: 4 }, async () => {
      while (!stop) await recordAudit(db, { tenantId: 'live', actor, action: 'test.live', targetType: 'thing', targetId: 'x' });
    });
    try {
      for (let i = 0; i < 5; i++) {
        const [r] = await verifyAudit(db, { tenantId: 'live' });
        assert.equal(r!.ok, true, JSON.stringify(r));
      }
    } finally {
      stop = true;
      await Promise.all(writers);
    }
  });

  it('seals rows written before the chain migration', async () => {
    const { db: old, close } = await emptyDb();
    try {
      await migrate(old, loadMigrations().filter((m) => m.version < 14));
      for (const tenant of ['a', 'b', null, 'a'])
        await old.query(`INSERT INTO audit_log (tenant_id, actor_sub, actor_role, action, target_type, target_id, after) VALUES ($1, 'u', 'admin', 'old.event', 't', '1', '{"x": 1.50}')`, [tenant]);
      await migrate(old);
      const reports = await verifyAudit(old);
      assert.deepEqual(reports.map((r) => [r.tenant_id, r.rows, r.ok]), [[null, 1, true], ['a', 2, true], ['b', 1, true]]);
      await recordAudit(old, { tenantId: 'a', actor, action: 'new.event', targetType: 't', targetId: '2' });
      assert.equal((await verifyChain(old, 'a')).rows, 3);
    } finally {
      await close();
    }
  });

  it('`agent-fabric audit verify` exits 0 on an intact chain and 1 naming the first broken row', async () => {
    const { env, close, db: cliDb } = await cliDatabase();
    try {
      const ids = await seed(cliDb, 'cli', 3);
      await cliDb.close();
      const ok = await runCli(['audit', 'verify', ...env.args], env.env);
      assert.equal(ok.code, 0, ok.out + ok.err);
      assert.match(ok.out, /ok {6}tenant cli: 3 rows/);
      assert.match(ok.out, /audit chain intact/);
      const again = await env.reopen();
      await tamper(again, `UPDATE audit_log SET target_id = 'changed' WHERE id = $1`, [ids[1]]);
      await again.close();
      const bad = await runCli(['audit', 'verify', '--tenant', 'cli', ...env.args], env.env);
      assert.equal(bad.code, 1, bad.out + bad.err);
      assert.match(bad.out, new RegExp(`BROKEN  tenant cli at audit_log id ${ids[1]} \\(position 2\\): the row content does not match its hash`));
      const usage = await runCli(['audit', 'verify', '--tenant', 'Not A Tenant', ...env.args], env.env);
      assert.equal(usage.code, 2);
    } finally {
      await close();
    }
  });
});

/** A database with no migrations applied, on the engine under test. */
async function emptyDb(): Promise<{ db: Db; close(): Promise<void> }> {
  if (ENGINE === 'pglite') {
    const db = await openPglite();
    return { db, close: () => db.close() };
  }
  const name = `fabric_test_${randomBytes(6).toString('hex')}`;
  await admin(`CREATE DATABASE ${name}`);
  const db = await openPostgres({ url: pgUrl(name), poolSize: 2, connectTimeoutMs: 5000, statementTimeoutMs: 30_000 });
  return {
    db,
    async close() {
      await db.close();
      await admin(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    },
  };
}

async function admin(sql: string): Promise<void> {
  const c = new pg.Client({ connectionString: PG_ADMIN_URL });
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}

/** A migrated database the CLI can open: a PGlite data dir from the template, or a PostgreSQL database. */
async function cliDatabase() {
  if (ENGINE === 'pglite') {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fabric-audit-cli-'));
    const open = () => openPglite({ dataDir: dir, ...(fs.existsSync(path.join(dir, 'pgdata')) ? {} : { loadDataDir: new Blob([fs.readFileSync(PGLITE_TEMPLATE!)]) }) });
    const db = await open();
    return { db, env: { args: ['--data-dir', dir], env: {} as Record<string, string>, reopen: open }, close: async () => fs.rmSync(dir, { recursive: true, force: true }) };
  }
  const name = `fabric_test_${randomBytes(6).toString('hex')}`;
  await admin(`CREATE DATABASE ${name} TEMPLATE ${PG_TEMPLATE_DB}`);
  const open = () => openPostgres({ url: pgUrl(name), poolSize: 2, connectTimeoutMs: 5000, statementTimeoutMs: 30_000 });
  return { db: await open(), env: { args: [] as string[], env: { DATABASE_URL: pgUrl(name) } as Record<string, string>, reopen: open }, close: () => admin(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`) };
}

function runCli(args: string[], extra: Record<string, string>): Promise<{ code: number | null; out: string; err: string }> {
  const env: NodeJS.ProcessEnv = { ...process.env, FABRIC_LOG_LEVEL: 'warn' };
  for (const k of ['FABRIC_JWT_SECRET', 'DATABASE_URL', 'FABRIC_DATA_DIR', 'NODE_TEST_CONTEXT']) delete env[k];
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], { cwd: ROOT, env: { ...env, ...extra }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, out, err })));
}
