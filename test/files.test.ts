import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadConfig } from '../src/config/index.js';
import { deriveUrlSigningKey, signDownloadUrl } from '../src/files/index.js';
import { countRows, startTestApp, TEST_SECRET, type TestApp } from './support/app.js';
import { ENGINE } from './support/engine.js';
import { multipartBody, type FilePart } from './support/multipart.js';
import { provisionAgent, submit } from './support/queue.js';

// Per-agent files over HTTP (isolation-runtime-prd §3.1), on the local provider; the providers
// themselves pass test/files-conformance.test.ts, restarts are in test/files-restart.test.ts.

/** Every file under `dir` (blobs and partial writes), with empty directories ignored. */
function filesUnder(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? filesUnder(path.join(dir, e.name)) : [path.join(dir, e.name)]));
}

async function startFilesApp(files: { maxBytes?: number } = {}): Promise<{ t: TestApp; dir: string }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fabric-files-'));
  const base = loadConfig({ FABRIC_JWT_SECRET: TEST_SECRET });
  const t = await startTestApp({ config: { files: { ...base.files, dir, ...files } } });
  return { t, dir };
}

async function upload(t: TestApp, agentId: string, headers: Record<string, string>, file: FilePart = { content: 'hello' }, fields: [string, string][] = []) {
  const body = multipartBody(fields, file);
  return t.app.inject({ method: 'POST', url: `/api/agents/${agentId}/files`, headers: { ...headers, ...body.headers }, payload: body.payload });
}

const asAgent = (t: TestApp, id: string) => t.auth('agent', { sub: id });
const storageUsed = async (t: TestApp, agentId: string) =>
  (await t.db.query<{ used: number }>('SELECT storage_used_bytes AS used FROM agent_quotas WHERE agent_id = $1', [agentId])).rows[0]!.used;

describe(`files: upload, read, delete, access (${ENGINE})`, () => {
  let t: TestApp;
  let dir: string;
  before(async () => ({ t, dir } = await startFilesApp()));
  after(async () => {
    await t?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('an agent uploads a file to its own storage (201 with id, size, sha256) and reads it back', async () => {
    const id = await provisionAgent(t);
    const me = await asAgent(t, id);
    const r = await upload(t, id, me, { content: 'quarterly numbers', filename: 'report.txt', contentType: 'text/plain' });
    assert.equal(r.statusCode, 201, r.body);
    const file = r.json().file;
    assert.deepEqual(Object.keys(file).sort(), ['content_type', 'created_at', 'id', 'name', 'sha256', 'size', 'task_id']);
    assert.equal(file.name, 'report.txt');
    assert.equal(file.size, 17);
    assert.equal(file.sha256, createHash('sha256').update('quarterly numbers').digest('hex'));
    assert.equal(file.task_id, null);
    assert.equal(await storageUsed(t, id), 17);
    const got = await t.app.inject({ method: 'GET', url: `/api/agents/${id}/files/${file.id}`, headers: me });
    assert.equal(got.statusCode, 200);
    assert.equal(got.body, 'quarterly numbers');
    assert.equal(got.headers['content-type'], 'text/plain');
    assert.equal(got.headers['content-length'], '17');
    assert.equal(got.headers['content-disposition'], `attachment; filename="report.txt"; filename*=UTF-8''report.txt`);
    assert.equal(got.headers['x-content-type-options'], 'nosniff');
  });

  it('the name field wins over the filename; odd names are safe in content-disposition; bad types become octet-stream', async () => {
    const id = await provisionAgent(t);
    const me = await asAgent(t, id);
    const r = await upload(t, id, me, { content: 'x', filename: 'C:\\tmp\\ignored.bin', contentType: 'text/html; charset=utf-8' }, [['name', 'rapport "final" é.html']]);
    assert.equal(r.statusCode, 201, r.body);
    assert.equal(r.json().file.name, 'rapport "final" é.html');
    assert.equal(r.json().file.content_type, 'text/html');
    const got = await t.app.inject({ method: 'GET', url: `/api/agents/${id}/files/${r.json().file.id}`, headers: me });
    assert.equal(got.headers['content-disposition'], `attachment; filename="rapport _final_ _.html"; filename*=UTF-8''rapport%20%22final%22%20%C3%A9.html`);
    assert.match(String(got.headers['content-security-policy']), /sandbox/);
    const plain = await upload(t, id, me, { content: 'y', filename: '../../etc/passwd', contentType: 'not a type' });
    assert.equal(plain.json().file.name, 'passwd');
    assert.equal(plain.json().file.content_type, 'application/octet-stream');
    assert.equal((await upload(t, id, me, { content: 'z' }, [['name', 'a/b']])).json().error.code, 'invalid_file_name');
  });

  it('a token whose sub is another agent gets 403 on upload; an admin or operator may upload for the agent; a viewer may not', async () => {
    const a = await provisionAgent(t);
    const b = await provisionAgent(t);
    const r = await upload(t, a, await asAgent(t, b));
    assert.equal(r.statusCode, 403, r.body);
    assert.equal(r.json().error.code, 'forbidden');
    assert.equal((await upload(t, a, await t.auth('admin'))).statusCode, 201);
    assert.equal((await upload(t, a, await t.auth('operator'))).statusCode, 201);
    assert.equal((await upload(t, a, await t.auth('viewer'))).statusCode, 403);
    assert.equal(await countRows(t.db, 'agent_files', 'agent_id = $1', [a]), 2);
  });

  it("agent B's token gets 403 on agent A's file: content, URL, delete and listing", async () => {
    const a = await provisionAgent(t);
    const b = await provisionAgent(t);
    const file = (await upload(t, a, await asAgent(t, a))).json().file;
    const bAuth = await asAgent(t, b);
    for (const [method, url] of [
      ['GET', `/api/agents/${a}/files/${file.id}`],
      ['GET', `/api/agents/${a}/files/${file.id}/url`],
      ['DELETE', `/api/agents/${a}/files/${file.id}`],
      ['GET', `/api/agents/${a}/files`],
    ] as const) {
      const r = await t.app.inject({ method, url, headers: bAuth });
      assert.equal(r.statusCode, 403, `${method} ${url}: ${r.body}`);
    }
    // B asking for A's file under its own id finds nothing: files are scoped by agent in the SQL
    assert.equal((await t.app.inject({ method: 'GET', url: `/api/agents/${b}/files/${file.id}`, headers: bAuth })).statusCode, 404);
    assert.equal((await t.app.inject({ method: 'GET', url: `/api/agents/${a}/files/${file.id}`, headers: await t.auth('viewer') })).statusCode, 200);
  });

  it("another tenant's admin gets 404 for the agent and its files", async () => {
    const a = await provisionAgent(t);
    const file = (await upload(t, a, await asAgent(t, a))).json().file;
    const pa = await t.auth('platform_admin');
    assert.equal((await t.app.inject({ method: 'POST', url: '/api/tenants', headers: pa, payload: { id: 'files-other', name: 'Other' } })).statusCode, 201);
    const other = await t.auth('admin', { tenant: 'files-other' });
    assert.equal((await upload(t, a, other)).statusCode, 404);
    assert.equal((await t.app.inject({ method: 'GET', url: `/api/agents/${a}/files/${file.id}`, headers: other })).statusCode, 404);
    assert.equal((await t.app.inject({ method: 'GET', url: `/api/agents/${a}/files`, headers: other })).statusCode, 404);
  });

  it('delete removes the file and its bytes and frees the quota; a second delete is 404', async () => {
    const id = await provisionAgent(t);
    const me = await asAgent(t, id);
    const file = (await upload(t, id, me, { size: 4000 })).json().file;
    assert.equal(await storageUsed(t, id), 4000);
    const before = filesUnder(dir).length;
    const del = await t.app.inject({ method: 'DELETE', url: `/api/agents/${id}/files/${file.id}`, headers: me });
    assert.equal(del.statusCode, 200, del.body);
    assert.equal(del.json().file.id, file.id);
    assert.equal(await storageUsed(t, id), 0);
    assert.equal(filesUnder(dir).length, before - 1);
    assert.equal((await t.app.inject({ method: 'GET', url: `/api/agents/${id}/files/${file.id}`, headers: me })).statusCode, 404);
    assert.equal((await t.app.inject({ method: 'DELETE', url: `/api/agents/${id}/files/${file.id}`, headers: me })).statusCode, 404);
  });

  it('bad uploads get a 4xx with a code saying what to do, and store nothing', async () => {
    const id = await provisionAgent(t);
    const me = await asAgent(t, id);
    const json = await t.app.inject({ method: 'POST', url: `/api/agents/${id}/files`, headers: me, payload: { file: 'x' } });
    assert.equal(json.statusCode, 415);
    assert.match(json.json().error.message, /multipart\/form-data/);
    const none = multipartBody([['name', 'x']]);
    assert.equal((await t.app.inject({ method: 'POST', url: `/api/agents/${id}/files`, headers: { ...me, ...none.headers }, payload: none.payload })).json().error.code, 'file_missing');
    assert.equal((await upload(t, id, me, { content: 'x' }, [['color', 'red']])).json().error.code, 'unknown_field');
    assert.equal((await upload(t, id, me, { content: 'x', field: 'upload' })).json().error.code, 'unknown_field');
    assert.equal((await upload(t, id, me, { content: 'x' }, [['task_id', 'nope']])).json().error.code, 'invalid_task_id');
    const other = await provisionAgent(t);
    const othersTask = (await submit(t, { agent_id: other, type: 'x' })).json().task.id;
    const r = await upload(t, id, me, { content: 'x' }, [['task_id', othersTask]]);
    assert.equal(r.statusCode, 400);
    assert.equal(r.json().error.code, 'unknown_task');
    const broken = await t.app.inject({ method: 'POST', url: `/api/agents/${id}/files`, headers: { ...me, 'content-type': 'multipart/form-data; boundary=zzz' }, payload: '--zzz\r\ncontent-disposition: form-data; name="file"; filename="a"\r\n\r\nabc' });
    assert.equal(broken.statusCode, 400, broken.body);
    assert.equal(broken.json().error.code, 'invalid_multipart');
    assert.equal(await countRows(t.db, 'agent_files', 'agent_id = $1', [id]), 0);
    assert.equal(await storageUsed(t, id), 0);
    assert.deepEqual(filesUnder(path.join(dir, 'default', id)), []);
  });
});

describe(`files: size limit (${ENGINE})`, () => {
  let t: TestApp;
  let dir: string;
  before(async () => ({ t, dir } = await startFilesApp()));
  after(async () => {
    await t?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a file over 50 MB gets 413 file_too_large naming the limit; nothing is stored and no partial file is left on disk', async () => {
    assert.equal(t.config.files.maxBytes, 50 * 1024 * 1024, 'the default limit is 50 MB');
    const id = await provisionAgent(t);
    const r = await upload(t, id, await asAgent(t, id), { size: 50 * 1024 * 1024 + 1 });
    assert.equal(r.statusCode, 413, r.body);
    assert.equal(r.json().error.code, 'file_too_large');
    assert.match(r.json().error.message, /52428800 bytes \(50 MB\)/);
    assert.equal(await countRows(t.db, 'agent_files', 'agent_id = $1', [id]), 0);
    assert.equal(await storageUsed(t, id), 0);
    assert.deepEqual(filesUnder(dir), [], 'no blob and no partial write left');
  });

  it('a file of exactly the limit is stored (configurable: FABRIC_FILES_MAX_BYTES)', async () => {
    const small = await startFilesApp({ maxBytes: 1000 });
    try {
      const id = await provisionAgent(small.t);
      const me = await asAgent(small.t, id);
      const ok = await upload(small.t, id, me, { size: 1000 });
      assert.equal(ok.statusCode, 201, ok.body);
      assert.equal((await upload(small.t, id, me, { size: 1001 })).statusCode, 413);
      assert.equal(filesUnder(small.dir).length, 1);
    } finally {
      await small.t.close();
      fs.rmSync(small.dir, { recursive: true, force: true });
    }
    assert.equal(loadConfig({ FABRIC_FILES_MAX_BYTES: '1000' }).files.maxBytes, 1000);
  });
});

describe(`files: storage quota (${ENGINE})`, () => {
  let t: TestApp;
  let dir: string;
  before(async () => ({ t, dir } = await startFilesApp()));
  after(async () => {
    await t?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('the default storage quota of a new agent is 5 GiB', async () => {
    const id = await provisionAgent(t);
    const r = await t.db.query<{ limit: number }>('SELECT storage_limit_bytes AS limit FROM agent_quotas WHERE agent_id = $1', [id]);
    assert.equal(r.rows[0]!.limit, 5 * 1024 ** 3);
  });

  it('an upload past storage_limit_bytes gets 429 storage_quota_exceeded and stores nothing; deleting frees room', async () => {
    const id = await provisionAgent(t, { quota: { storage_limit_bytes: 1000 } });
    const me = await asAgent(t, id);
    const first = await upload(t, id, me, { size: 600 });
    assert.equal(first.statusCode, 201);
    const blobs = filesUnder(dir).length;
    const r = await upload(t, id, me, { size: 500 });
    assert.equal(r.statusCode, 429, r.body);
    assert.equal(r.json().error.code, 'storage_quota_exceeded');
    assert.match(r.json().error.message, /600 of 1000 bytes used/);
    assert.equal(r.json().error.storage_limit_bytes, 1000);
    assert.equal(await storageUsed(t, id), 600);
    assert.equal(await countRows(t.db, 'agent_files', 'agent_id = $1', [id]), 1);
    assert.equal(filesUnder(dir).length, blobs, 'nothing stored, no partial file');
    assert.equal((await upload(t, id, me, { size: 400 })).statusCode, 201, 'exactly filling the quota is allowed');
    assert.equal((await upload(t, id, me, { size: 0 })).statusCode, 201, 'an empty file fits a full quota');
    assert.equal((await upload(t, id, me, { size: 1 })).statusCode, 429);
    await t.app.inject({ method: 'DELETE', url: `/api/agents/${id}/files/${first.json().file.id}`, headers: me });
    assert.equal(await storageUsed(t, id), 400);
    assert.equal((await upload(t, id, me, { size: 500 })).statusCode, 201);
  });

  it('concurrent uploads racing for the last bytes: exactly as many succeed as fit, and usage is exact', async () => {
    const id = await provisionAgent(t, { quota: { storage_limit_bytes: 10_000 } });
    const me = await asAgent(t, id);
    const results = await Promise.all(Array.from({ length: 30 }, () => upload(t, id, me, { size: 1000 })));
    const codes = results.map((r) => r.statusCode);
    assert.equal(codes.filter((c) => c === 201).length, 10, `codes: ${codes.join(',')}`);
    assert.equal(codes.filter((c) => c === 429).length, 20, `codes: ${codes.join(',')}`);
    assert.equal(await storageUsed(t, id), 10_000);
    assert.equal(await countRows(t.db, 'agent_files', 'agent_id = $1', [id]), 10);
    assert.equal(filesUnder(path.join(dir, 'default', id)).length, 10, 'exactly the recorded files are on disk');
    const sum = await t.db.query<{ n: number }>('SELECT coalesce(sum(size), 0)::bigint AS n FROM agent_files WHERE agent_id = $1', [id]);
    assert.equal(sum.rows[0]!.n, 10_000);
  });

  it('overage_policy alert_only lets the upload through, and records the overage', async () => {
    const id = await provisionAgent(t, { quota: { storage_limit_bytes: 100, overage_policy: 'alert_only' } });
    const r = await upload(t, id, await asAgent(t, id), { size: 150 });
    assert.equal(r.statusCode, 201, r.body);
    assert.equal(await storageUsed(t, id), 150);
    assert.equal(await countRows(t.db, 'system_events', `event_type = 'agent.storage_quota_exceeded' AND agent_id = $1`, [id]), 1);
  });
});

describe(`files: signed download URLs (${ENGINE})`, () => {
  let t: TestApp;
  let dir: string;
  let agent: string;
  let file: { id: string; size: number };
  const key = deriveUrlSigningKey(TEST_SECRET);
  before(async () => {
    ({ t, dir } = await startFilesApp());
    agent = await provisionAgent(t);
    file = (await upload(t, agent, await asAgent(t, agent), { content: 'signed bytes', filename: 'out.csv', contentType: 'text/csv' })).json().file;
  });
  after(async () => {
    await t?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const getUrl = async () => {
    const before = Date.now();
    const r = await t.app.inject({ method: 'GET', url: `/api/agents/${agent}/files/${file.id}/url`, headers: await t.auth('admin') });
    return { r, before, after: Date.now() };
  };
  const fetchPath = (u: string) => t.app.inject({ method: 'GET', url: u });
  const pathOf = (url: string) => {
    const u = new URL(url);
    return u.pathname + u.search;
  };

  it('expires in exactly 900 seconds, reveals no storage path, and downloads without a token', async () => {
    const { r, before, after } = await getUrl();
    assert.equal(r.statusCode, 200, r.body);
    const { url, expires_at, expires_in } = r.json();
    assert.equal(expires_in, 900);
    const expires = Number(new URL(url).searchParams.get('expires'));
    assert.equal(Date.parse(expires_at), expires * 1000);
    assert.ok([Math.floor(before / 1000) + 900, Math.floor(after / 1000) + 900].includes(expires), 'the second it was issued + 900');
    assert.ok(!url.includes(dir) && !url.includes(agent) && !url.includes('default/'), `no storage path in ${url}`);
    const got = await fetchPath(pathOf(url));
    assert.equal(got.statusCode, 200, got.body);
    assert.equal(got.body, 'signed bytes');
    assert.equal(got.headers['content-type'], 'text/csv');
    assert.match(String(got.headers['content-disposition']), /filename="out.csv"/);
  });

  it('is still good 899 s after it was issued and refused with 403 url_expired at 900 s', async () => {
    const now = Date.now();
    const almost = signDownloadUrl(key, file.id, now - 899_000);
    assert.equal((await fetchPath(almost.path)).statusCode, 200);
    const old = signDownloadUrl(key, file.id, now - 900_000);
    const r = await fetchPath(old.path);
    assert.equal(r.statusCode, 403, r.body);
    assert.equal(r.json().error.code, 'url_expired');
  });

  it('a tampered URL (signature, expiry, file id) gets 403 url_invalid', async () => {
    const { r } = await getUrl();
    const u = new URL(r.json().url);
    const sig = u.searchParams.get('sig')!;
    const variants = [
      `${u.pathname}?expires=${Number(u.searchParams.get('expires')) + 3600}&sig=${sig}`,
      `${u.pathname}?expires=${u.searchParams.get('expires')}&sig=${sig.slice(0, -2)}${sig.endsWith('AA') ? 'BB' : 'AA'}`,
      `${u.pathname}?expires=${u.searchParams.get('expires')}`,
      `/files/${agent}?expires=${u.searchParams.get('expires')}&sig=${sig}`,
      `${u.pathname}?expires=abc&sig=${sig}`,
    ];
    for (const v of variants) {
      const res = await fetchPath(v);
      assert.equal(res.statusCode, 403, `${v}: ${res.body}`);
      assert.equal(res.json().error.code, 'url_invalid');
    }
    const other = deriveUrlSigningKey('another-secret-that-is-long-enough-0123456789');
    assert.equal((await fetchPath(signDownloadUrl(other, file.id).path)).json().error.code, 'url_invalid');
  });

  it("a deleted file's URL gets 404", async () => {
    const f = (await upload(t, agent, await asAgent(t, agent), { content: 'soon gone' })).json().file;
    const url = (await t.app.inject({ method: 'GET', url: `/api/agents/${agent}/files/${f.id}/url`, headers: await asAgent(t, agent) })).json().url;
    await t.app.inject({ method: 'DELETE', url: `/api/agents/${agent}/files/${f.id}`, headers: await t.auth('admin') });
    const r = await fetchPath(pathOf(url));
    assert.equal(r.statusCode, 404, r.body);
  });
});

describe(`files: listing (${ENGINE})`, () => {
  let t: TestApp;
  let dir: string;
  before(async () => ({ t, dir } = await startFilesApp()));
  after(async () => {
    await t?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('lists newest first, filters by task_id, since and until, and pages with a cursor', async () => {
    const id = await provisionAgent(t);
    const me = await asAgent(t, id);
    const task = (await submit(t, { agent_id: id, type: 'x' })).json().task.id;
    const made: { id: string; created_at: string; task_id: string | null }[] = [];
    for (let i = 0; i < 7; i++) {
      const fields: [string, string][] = i % 3 === 0 ? [['task_id', task]] : [];
      const r = await upload(t, id, me, { content: `file ${i}` }, fields);
      assert.equal(r.statusCode, 201, r.body);
      made.push(r.json().file);
      await new Promise((res) => setTimeout(res, 5));
    }
    const newestFirst = made.map((f) => f.id).reverse();
    const list = async (q: string, headers = me) => {
      const r = await t.app.inject({ method: 'GET', url: `/api/agents/${id}/files${q}`, headers });
      assert.equal(r.statusCode, 200, r.body);
      return r.json() as { files: { id: string }[]; next_cursor: string | null };
    };
    assert.deepEqual((await list('')).files.map((f) => f.id), newestFirst);
    assert.deepEqual((await list('', await t.auth('viewer'))).files.map((f) => f.id), newestFirst, 'people of the tenant may list (US-02)');
    assert.deepEqual((await list(`?task_id=${task}`)).files.map((f) => f.id), [made[6]!.id, made[3]!.id, made[0]!.id]);
    const since = encodeURIComponent(made[2]!.created_at);
    const until = encodeURIComponent(made[5]!.created_at);
    assert.deepEqual((await list(`?since=${since}&until=${until}`)).files.map((f) => f.id), [made[4]!.id, made[3]!.id, made[2]!.id]);
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const page = await list(`?limit=3${cursor ? `&cursor=${cursor}` : ''}`);
      seen.push(...page.files.map((f) => f.id));
      cursor = page.next_cursor;
      pages++;
    } while (cursor);
    assert.deepEqual(seen, newestFirst);
    assert.equal(pages, 3);
    const bad = await t.app.inject({ method: 'GET', url: `/api/agents/${id}/files?since=${until}&until=${since}`, headers: me });
    assert.equal(bad.json().error.code, 'invalid_time_range');
    assert.equal((await t.app.inject({ method: 'GET', url: `/api/agents/${id}/files?cursor=garbage`, headers: me })).json().error.code, 'invalid_cursor');
    assert.equal((await t.app.inject({ method: 'GET', url: `/api/agents/${id}/files?since=yesterday`, headers: me })).statusCode, 400);
  });
});
