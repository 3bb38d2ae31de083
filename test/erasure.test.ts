import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { verifyAudit } from '../src/audit/index.js';
import { mintToken } from '../src/auth/index.js';
import { ERASURE_COVERAGE, ErasureService, SUBJECT_COLUMN_PATTERN } from '../src/compliance/index.js';
import type { Queryable } from '../src/db/index.js';
import { S3BlobStore, type BlobStore } from '../src/files/index.js';
import type { Worker } from '../src/worker/index.js';
import { startTestApp, tokenOptions, type TestApp } from './support/app.js';
import { ENGINE } from './support/engine.js';
import { multipartBody } from './support/multipart.js';
import { startLocalS3, type LocalS3 } from './support/s3.js';
import { provisionAgent, scriptedExecutor, startWorker, submit, terminal, waitForTask } from './support/queue.js';

/** Every (table, column, hits) of the database whose text form contains `needle` (case-insensitive). */
async function scanDb(db: Queryable, needle: string): Promise<{ table: string; column: string; hits: number }[]> {
  const cols = await db.query<{ table_name: string; column_name: string }>(
    `SELECT c.table_name, c.column_name FROM information_schema.columns c
       JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name AND t.table_type = 'BASE TABLE'
      WHERE c.table_schema = 'public' AND c.data_type IN ('text', 'jsonb', 'json', 'character varying', 'uuid', 'ARRAY', 'bytea')
      ORDER BY 1, 2`,
  );
  const out = [];
  for (const { table_name: table, column_name: column } of cols.rows) {
    const expr = column === 'embedding' ? `encode("${column}", 'escape')` : `"${column}"::text`;
    const r = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM "${table}" WHERE strpos(lower(${expr}), $1) > 0`, [needle.toLowerCase()]);
    if (r.rows[0]!.n > 0) out.push({ table, column, hits: r.rows[0]!.n });
  }
  return out;
}

/** Files under `dir` whose path or content contains `needle`. */
function scanDir(dir: string, needle: string): string[] {
  const hits: string[] = [];
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (p.toLowerCase().includes(needle.toLowerCase()) || fs.readFileSync(p).toString('latin1').toLowerCase().includes(needle.toLowerCase())) hits.push(p);
    }
  };
  if (fs.existsSync(dir)) walk(dir);
  return hits;
}

async function waitErased(t: TestApp, id: string, timeoutMs = 20_000) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const res = await t.app.inject({ method: 'GET', url: `/api/erasure-requests/${id}`, headers: await t.auth('admin') });
    assert.equal(res.statusCode, 200, res.body);
    const r = res.json().erasure_request;
    if (r.status === 'completed') return r;
    if (Date.now() > until) throw new Error(`erasure ${id} did not complete: ${res.body}`);
    await new Promise((s) => setTimeout(s, 100));
  }
}

describe(`data erasure (${ENGINE})`, () => {
  let t: TestApp;
  let worker: Worker;
  const mark = (who: string) => `zqx${who}${randomBytes(5).toString('hex')}`;
  const MARK_A = mark('a');
  const MARK_B = mark('b');
  const MARK_U = mark('u');
  let agentA: string;
  let agentB: string;
  let userU: string;
  let hangTask: string;
  let usageBefore: unknown;

  /** What GET /api/usage says the tenant consumed and owes (the projection, which moves with time, left out). */
  async function usage() {
    const r = (await t.app.inject({ method: 'GET', url: '/api/usage', headers: await t.auth('admin') })).json();
    return { totals: [r.totals.cost_micros, r.totals.overage_charge_micros, r.totals.total_micros], dimensions: r.dimensions.map((d: { dimension: string; consumed: number; cost_micros: number }) => [d.dimension, d.consumed, d.cost_micros]) };
  }

  /** Plants `m` in every store of agent `id`: task payload, result and log, usage, KV, semantic memory, a file (name and bytes), a policy decision, a gateway call. */
  async function plant(id: string, m: string): Promise<string> {
    const res = await submit(t, { agent_id: id, type: 'work', payload: { marker: m } });
    assert.equal(res.statusCode, 201, res.body);
    const taskId: string = res.json().task.id;
    const done = await waitForTask(t, taskId, terminal);
    assert.equal(done.status, 'completed');
    const admin = await t.auth('admin');
    assert.equal((await t.app.inject({ method: 'PUT', url: `/api/agents/${id}/memory/note`, headers: admin, payload: { value: { m } } })).statusCode, 200);
    assert.equal((await t.app.inject({ method: 'POST', url: `/api/agents/${id}/memory/embed`, headers: admin, payload: { text: `remember ${m} please` } })).statusCode, 201);
    const form = multipartBody([['task_id', taskId]], { filename: `${m}.txt`, content: `secret ${m}` });
    const up = await t.app.inject({ method: 'POST', url: `/api/agents/${id}/files`, headers: { ...admin, ...form.headers }, payload: form.payload });
    assert.equal(up.statusCode, 201, up.body);
    const check = await t.app.inject({ method: 'POST', url: '/api/policy/check', headers: admin, payload: { action: 'tool.call', resource: 'shell', context: { note: m }, agent_id: id, task_id: taskId } });
    assert.equal(check.statusCode, 200, check.body);
    // a gateway call, as the gateway settles one: usage metered and a model.call event
    await t.db.query(`SELECT fabric_gateway_settle('default', $1, $2, $3, $4, $5, NULL)`, [
      taskId,
      id,
      `gw-${randomUUID()}`,
      JSON.stringify({ dimension: 'tokens', model: 'm', input_tokens: 7, output_tokens: 3, quantity: 10, cost_micros: 99, key: `gw-usage-${randomUUID()}` }),
      JSON.stringify({ model: 'm', note: m }),
    ]);
    return taskId;
  }

  /** User U, created by an admin with an Idempotency-Key: the stored response names U. */
  const USER_KEY = `create-user-${randomUUID()}`;
  const createUserU = async () =>
    t.app.inject({
      method: 'POST',
      url: '/api/users',
      headers: { ...(await t.auth('admin')), 'idempotency-key': USER_KEY },
      payload: { email: `${MARK_U}@example.com`, name: `Name ${MARK_U}`, role: 'operator' },
    });

  before(async () => {
    t = await startTestApp({ config: { policies: { cacheSeconds: 0, approvalExpiresSeconds: 3600, logFlushMs: 20 } } });
    worker = await startWorker(t, scriptedExecutor({
      work: (task, ctx) => {
        const m = (task.payload as { marker: string }).marker;
        ctx.log(`working on ${m}`);
        ctx.reportUsage({ model: 'm', input_tokens: 10, output_tokens: 5, cost_micros: 1234 });
        return { echo: m };
      },
      hang: (_task, ctx) => {
        ctx.reportUsage({ compute_ms: 0 }); // its stop adds no spend, so usage before and after compare exactly
        return new Promise((_res, rej) => ctx.signal.addEventListener('abort', () => rej(new Error('stopped'))));
      },
    }));
    const u = await createUserU();
    assert.equal(u.statusCode, 201, u.body);
    userU = u.json().user.id;
    agentA = await provisionAgent(t, { description: `agent of ${MARK_A}`, tools: [`tool-${MARK_A}`] });
    agentB = await provisionAgent(t, { description: `agent of ${MARK_B}`, owner_user_id: userU });
    await plant(agentA, MARK_A);
    await plant(agentB, MARK_B);
    // a task user U submitted (to agent B), and a task of A that is running when the erasure comes
    const byUser = await t.app.inject({ method: 'POST', url: '/api/tasks', headers: await t.auth('operator', { sub: userU }), payload: { agent_id: agentB, type: 'work', payload: { marker: MARK_U } } });
    assert.equal(byUser.statusCode, 201, byUser.body);
    await waitForTask(t, byUser.json().task.id, terminal);
    const hang = await submit(t, { agent_id: agentA, type: 'hang', payload: { marker: MARK_A } });
    hangTask = hang.json().task.id;
    assert.equal((await waitForTask(t, hangTask, (x) => x.status === 'running')).status, 'running');
    await new Promise((s) => setTimeout(s, 100)); // the decision log's batch
    usageBefore = await usage();
  });

  after(async () => {
    await worker?.stop(1000);
    await t?.close();
  });

  it('every column that can name a user or an agent is handled by the erasure plan', async () => {
    const cols = await t.db.query<{ table_name: string; column_name: string }>(
      `SELECT c.table_name, c.column_name FROM information_schema.columns c
         JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name AND t.table_type = 'BASE TABLE'
        WHERE c.table_schema = 'public' ORDER BY 1, 2`,
    );
    const all = new Set(cols.rows.map((c) => `${c.table_name}.${c.column_name}`));
    const refs = [...all].filter((k) => SUBJECT_COLUMN_PATTERN.test(k.split('.')[1]!));
    const missing = refs.filter((k) => !(k in ERASURE_COVERAGE));
    assert.deepEqual(missing, [], `columns naming users or agents that erasure does not handle: add them to src/compliance/erasure-coverage.ts and erase them`);
    const stale = Object.keys(ERASURE_COVERAGE).filter((k) => !all.has(k));
    assert.deepEqual(stale, [], 'the erasure plan names columns that do not exist');
  });

  it('only a tenant admin may request or read erasures; unknown subjects are 404', async () => {
    for (const role of ['operator', 'member', 'viewer'] as const) {
      const r = await t.app.inject({ method: 'POST', url: '/api/erasure-requests', headers: await t.auth(role), payload: { subject_type: 'agent', subject_id: agentB } });
      assert.equal(r.statusCode, 403, r.body);
    }
    const asAgent = await t.app.inject({
      method: 'POST',
      url: '/api/erasure-requests',
      headers: { authorization: `Bearer ${await mintToken(tokenOptions, { sub: agentB, role: 'agent', tenant: 'default' })}` },
      payload: { subject_type: 'agent', subject_id: agentB },
    });
    assert.equal(asAgent.statusCode, 403);
    const other = await t.app.inject({ method: 'POST', url: '/api/erasure-requests', headers: await t.auth('admin'), payload: { subject_type: 'agent', subject_id: agentB, tenant_id: 'other' } });
    assert.equal(other.statusCode, 403, 'a tenant admin may not name another tenant');
    for (const [type, id] of [['agent', randomUUID()], ['user', randomUUID()], ['agent', 'not-a-uuid'], ['user', agentB]]) {
      const r = await t.app.inject({ method: 'POST', url: '/api/erasure-requests', headers: await t.auth('admin'), payload: { subject_type: type, subject_id: id } });
      assert.equal(r.statusCode, 404, r.body);
      assert.equal(r.json().error.code, 'not_found');
    }
    assert.equal((await t.app.inject({ method: 'GET', url: `/api/erasure-requests/${randomUUID()}`, headers: await t.auth('admin') })).statusCode, 404);
    assert.equal(await t.db.query(`SELECT 1 FROM erasure_requests`).then((r) => r.rows.length), 0);
  });

  it('erasing an agent cancels its running task, then leaves nothing of it but anonymised billing rows and the audit log', async () => {
    const agentToken = await mintToken(tokenOptions, { sub: agentA, role: 'agent', tenant: 'default' });
    assert.equal((await t.app.inject({ method: 'GET', url: `/api/agents/${agentA}/memory/note`, headers: { authorization: `Bearer ${agentToken}` } })).statusCode, 200);
    const usageRowsA = await t.db.query<{ n: string; cost: string }>(`SELECT sum(quantity)::text AS n, sum(cost_micros)::text AS cost FROM agent_quota_usage WHERE agent_id = $1`, [agentA]);
    const res = await t.app.inject({ method: 'POST', url: '/api/erasure-requests', headers: await t.auth('admin'), payload: { subject_type: 'agent', subject_id: agentA.toUpperCase() } });
    assert.equal(res.statusCode, 202, res.body);
    const id: string = res.json().erasure_request.id;
    assert.equal(res.headers.location, `/api/erasure-requests/${id}`);
    const done = await waitErased(t, id);
    assert.equal(done.subject_id, null);
    assert.deepEqual(done.steps_done, ['freeze', 'drain', 'files', 'memory', 'tasks', 'identity']);
    assert.equal(done.evidence.freeze.tasks_cancelled, 1, 'the running task was asked to stop');
    assert.equal(done.evidence.files.files, 1);
    assert.equal(done.evidence.memory.memory_kv, 1);
    assert.equal(done.evidence.memory.semantic_memories, 1);
    assert.equal(done.evidence.tasks.tasks, 2);
    assert.ok(done.evidence.tasks.usage_anonymised >= 4, 'usage rows of the work task and the gateway call were anonymised');
    assert.equal(done.evidence.identity.agent, 1);

    // nothing of the agent in any column of any table, nor in storage (audit_log aside: below)
    for (const needle of [MARK_A, agentA]) {
      const hits = (await scanDb(t.db, needle)).filter((h) => h.table !== 'audit_log');
      assert.deepEqual(hits, [], `found ${needle} after erasure`);
      assert.deepEqual(scanDir(t.config.files.dir!, needle), []);
    }
    // the billing rows are kept, anonymised: same amounts under the pseudonym, so the tenant's usage reconciles
    const pseud = await t.db.query<{ n: string; cost: string }>(
      `SELECT sum(quantity)::text AS n, sum(cost_micros)::text AS cost FROM agent_quota_usage WHERE agent_id = (SELECT pseudonym FROM erasure_requests WHERE id = $1) AND task_id IS NULL`,
      [id],
    );
    assert.deepEqual(pseud.rows[0], usageRowsA.rows[0]);
    assert.deepEqual(await usage(), usageBefore);

    // the audit log keeps its rows about the agent (and they still verify), and records the erasure
    const audit = await t.db.query<{ action: string; text: string }>(`SELECT action, (to_jsonb(a) - 'hash' - 'prev_hash')::text AS text FROM audit_log a ORDER BY id`);
    const about = audit.rows.filter((r) => r.text.toLowerCase().includes(agentA) || r.text.includes(MARK_A)).map((r) => r.action);
    assert.deepEqual(about.sort(), ['agent.provision', 'erasure.request'].sort());
    const complete = audit.rows.filter((r) => r.action === 'erasure.complete');
    assert.equal(complete.length, 1);
    assert.ok(complete[0]!.text.includes(id));
    for (const chain of await verifyAudit(t.db)) assert.ok(chain.ok, JSON.stringify(chain));

    // the agent's old tokens are refused
    const refused = await t.app.inject({ method: 'GET', url: `/api/agents/${agentA}/memory/note`, headers: { authorization: `Bearer ${agentToken}` } });
    assert.equal(refused.statusCode, 401);
    assert.equal(refused.json().error.code, 'token_revoked');

    // a second request for the same subject is the same request
    const again = await t.app.inject({ method: 'POST', url: '/api/erasure-requests', headers: await t.auth('admin'), payload: { subject_type: 'agent', subject_id: agentA } });
    assert.equal(again.statusCode, 200, again.body);
    assert.equal(again.json().erasure_request.id, id);
    assert.equal(again.json().erasure_request.status, 'completed');
  });

  it("another agent's data is untouched", async () => {
    const hits = new Map((await scanDb(t.db, MARK_B)).map((h) => [`${h.table}.${h.column}`, h.hits]));
    for (const where of ['agents.description', 'tasks.payload', 'tasks.result', 'system_events.data', 'agent_memory_kv.value', 'semantic_memories.text', 'agent_files.name', 'policy_decisions.context'])
      assert.ok(hits.get(where), `agent B's ${where} is gone`);
    assert.equal(scanDir(t.config.files.dir!, MARK_B).length, 1, "agent B's file bytes are gone");
    const kv = await t.app.inject({ method: 'GET', url: `/api/agents/${agentB}/memory/note`, headers: await t.auth('admin') });
    assert.deepEqual(kv.json().value, { m: MARK_B });
  });

  it('erasing a user removes its identity, blanks the tasks it submitted, anonymises its usage and refuses its tokens', async () => {
    const userToken = await t.token('operator', { sub: userU });
    assert.equal((await t.app.inject({ method: 'GET', url: '/api/agents', headers: { authorization: `Bearer ${userToken}` } })).statusCode, 200);
    const res = await t.app.inject({ method: 'POST', url: '/api/erasure-requests', headers: await t.auth('platform_admin'), payload: { subject_type: 'user', subject_id: userU, tenant_id: 'default' } });
    assert.equal(res.statusCode, 202, res.body);
    const done = await waitErased(t, res.json().erasure_request.id);
    assert.equal(done.evidence.user_data.user, 1);
    assert.equal(done.evidence.user_data.agents_unowned, 1);
    assert.equal(done.evidence.user_data.tasks_blanked, 1);
    for (const needle of [MARK_U, userU]) {
      const hits = (await scanDb(t.db, needle)).filter((h) => h.table !== 'audit_log');
      assert.deepEqual(hits, [], `found ${needle} after erasure`);
    }
    const b = await t.db.query<{ owner_user_id: string | null }>(`SELECT owner_user_id FROM agents WHERE id = $1`, [agentB]);
    assert.equal(b.rows[0]!.owner_user_id, null);
    const refused = await t.app.inject({ method: 'GET', url: '/api/agents', headers: { authorization: `Bearer ${userToken}` } });
    assert.equal(refused.statusCode, 401);
    assert.equal(refused.json().error.code, 'token_revoked');
    assert.deepEqual(await usage(), usageBefore);
    for (const chain of await verifyAudit(t.db)) assert.ok(chain.ok, JSON.stringify(chain));
    // the admin's retry of the request that created U is neither replayed (it named U) nor run again (U would be back)
    const retry = await createUserU();
    assert.deepEqual([retry.statusCode, retry.json().error.code], [410, 'idempotency_response_erased']);
    assert.deepEqual((await scanDb(t.db, MARK_U)).filter((h) => h.table !== 'audit_log'), [], 'the retry created nothing');
  });
});

describe(`erasure over S3 storage, finished after a failed step (${ENGINE})`, () => {
  let s3: LocalS3;
  let t: TestApp;
  let erasure: ErasureService;
  let failDeletes = 1;
  const MARK = `zqxs3${randomBytes(5).toString('hex')}`;

  before(async () => {
    s3 = await startLocalS3();
    const store = new S3BlobStore(s3.config);
    // the storage provider is down for the first delete: the files step fails, the request stays running
    const flaky: BlobStore = {
      kind: 's3',
      put: (k, b) => store.put(k, b),
      get: (k) => store.get(k),
      delete: async (k) => {
        if (failDeletes-- > 0) throw new Error('storage unavailable');
        return store.delete(k);
      },
      close: () => store.close(),
    };
    const files = { maxBytes: 1024 * 1024, storage: 's3' as const, dir: undefined, s3: s3.config, urlSigningSecret: undefined };
    t = await startTestApp({ config: { files }, withDb: (db) => ({ erasure: (erasure = new ErasureService({ db, blobs: flaky })) }) });
  });

  after(async () => {
    await erasure?.close();
    await t?.close();
    await s3?.stop();
  });

  it("deletes the agent's bytes from the bucket, and a request cut short is finished by resume()", async () => {
    const agent = await provisionAgent(t, { description: MARK });
    const form = multipartBody([], { filename: `${MARK}.txt`, content: `secret ${MARK}` });
    const up = await t.app.inject({ method: 'POST', url: `/api/agents/${agent}/files`, headers: { ...(await t.auth('admin')), ...form.headers }, payload: form.payload });
    assert.equal(up.statusCode, 201, up.body);
    assert.ok(scanDir(s3.dir, MARK).length > 0, 'the bytes are in the bucket');

    const res = await t.app.inject({ method: 'POST', url: '/api/erasure-requests', headers: await t.auth('admin'), payload: { subject_type: 'agent', subject_id: agent } });
    assert.equal(res.statusCode, 202, res.body);
    const id: string = res.json().erasure_request.id;
    await erasure.idle();
    const stopped = (await t.app.inject({ method: 'GET', url: `/api/erasure-requests/${id}`, headers: await t.auth('admin') })).json().erasure_request;
    assert.equal(stopped.status, 'running');
    assert.deepEqual(stopped.steps_done, ['freeze', 'drain']);
    assert.equal(stopped.last_error, 'storage unavailable');
    assert.equal(stopped.subject_id, agent);

    // as after a restart: the lease has passed, the compliance loop resumes it where it stopped
    await t.db.query(`UPDATE erasure_requests SET locked_until = now() - interval '1 second' WHERE id = $1`, [id]);
    assert.equal(await erasure.resume(), 1);
    const done = await waitErased(t, id);
    assert.deepEqual(done.steps_done, ['freeze', 'drain', 'files', 'memory', 'tasks', 'identity']);
    assert.equal(done.last_error, null);
    assert.equal(done.evidence.files.files, 1);
    assert.deepEqual(scanDir(s3.dir, MARK), [], 'no bytes of the agent are left in the bucket');
    assert.deepEqual(scanDir(s3.dir, agent), []);
    for (const needle of [MARK, agent]) assert.deepEqual((await scanDb(t.db, needle)).filter((h) => h.table !== 'audit_log'), []);
  });
});
