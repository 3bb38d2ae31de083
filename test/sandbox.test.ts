import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { detectSandboxHost, missingFor, prepareSandboxRoot } from '../src/sandbox/index.js';
import type { Worker } from '../src/worker/index.js';
import { countRows, startTestApp, type TestApp } from './support/app.js';
import { testSandboxExecutor } from './support/sandbox.js';
import { ENGINE } from './support/engine.js';
import { provisionAgent, startWorker, submit, terminal, waitForTask } from './support/queue.js';

/** The parts of a session record (GET /api/agents/:id/sessions) the tests read. */
interface Session {
  id: string;
  status: string;
  artifacts: { name: string; size: number; file_id?: string; error?: { code: string; message: string } }[];
  wipe: { verified: boolean; files: number };
  usage: { wallSeconds: number; peakMemoryBytes: number; oomKilled: boolean };
  error: { code: string };
}

const host = detectSandboxHost();
const skip = missingFor('container', host);

/** Agent programs, written to a world-readable code dir (mounted read-only at /agent). */
const PROGRAMS: Record<string, string> = {
  'echo.js': `
    const fs = require('fs');
    const task = JSON.parse(fs.readFileSync(0, 'utf8'));
    const ws = process.env.FABRIC_WORKSPACE;
    fs.writeFileSync(ws + '/out/report.txt', 'hello from ' + task.id);
    console.error('working on', task.type);
    fs.writeFileSync(ws + '/result.json', JSON.stringify({ payload: task.payload, uid: process.getuid(), cwd: process.cwd(),
      env: Object.keys(process.env).sort(), token: (process.env.FABRIC_TOKEN || '').split('.').length }));`,
  'sleeper.js': `
    const fs = require('fs');
    fs.writeFileSync(process.env.FABRIC_WORKSPACE + '/out/partial.txt', 'written before the timeout');
    setTimeout(() => {}, 60000);`,
};

describe(`sandboxed execution (${ENGINE})`, { skip }, () => {
  let t: TestApp;
  let worker: Worker;
  let root: string;
  let codeDir: string;
  before(async () => {
    t = await startTestApp();
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'fabric-sandbox-test-'));
    codeDir = path.join(root, 'code');
    fs.mkdirSync(codeDir, { mode: 0o755 });
    fs.chmodSync(root, 0o755);
    const dirs = prepareSandboxRoot(path.join(root, 'sandbox'));
    for (const [name, src] of Object.entries(PROGRAMS)) fs.writeFileSync(path.join(codeDir, name), src, { mode: 0o644 });
    const executor = testSandboxExecutor(t, dirs, { uidBase: 300_000, uidCount: 100, keepArtifacts: true });
    worker = await startWorker(t, executor);
  });
  after(async () => {
    await worker?.stop(1000);
    await t?.close();
    if (root) fs.rmSync(root, { recursive: true, force: true });
  });

  const agent = (level: 'process' | 'container', program: string, extra: Record<string, unknown> = {}) =>
    provisionAgent(t, { isolation: { level, memory_mb: 128, ...extra }, entrypoint: { command: ['node', path.join(level === 'container' ? '/agent' : codeDir, program)], code_dir: codeDir } });

  const sessions = async (agentId: string) =>
    (await t.app.inject({ method: 'GET', url: `/api/agents/${agentId}/sessions`, headers: await t.auth('admin') })).json().sessions as Session[];

  for (const level of ['process', 'container'] as const) {
    it(`${level}: the task arrives on stdin, result.json is the result, out/ is kept, the workspace is wiped with evidence`, async () => {
      const id = await agent(level, 'echo.js');
      const task = (await submit(t, { agent_id: id, type: 'echo', payload: { n: 7 } })).json().task;
      const done = await waitForTask(t, task.id, terminal, 20_000);
      assert.equal(done.status, 'completed', JSON.stringify(done.error));
      const result = done.result as { payload: unknown; uid: number; env: string[]; token: number };
      assert.deepEqual(result.payload, { n: 7 });
      assert.ok(result.uid >= 300_000, `runs as its own unprivileged uid, got ${result.uid}`);
      for (const k of ['FABRIC_API_URL', 'FABRIC_TOKEN', 'FABRIC_TASK_ID', 'FABRIC_AGENT_ID', 'FABRIC_SESSION_ID', 'OPENAI_BASE_URL', 'OPENAI_API_KEY']) assert.ok(result.env.includes(k), k);
      assert.ok(!result.env.includes('DATABASE_URL') && !result.env.includes('FABRIC_JWT_SECRET'), 'a clean environment');
      assert.equal(result.token, 3);
      const [s] = await sessions(id);
      assert.equal(s!.status, 'completed');
      assert.deepEqual(s!.artifacts.map(({ name, size }) => ({ name, size })), [{ name: 'report.txt', size: `hello from ${task.id}`.length }]);
      // the artifact is now the agent's file, tied to the task and charged to its storage quota
      const file = await t.app.inject({ method: 'GET', url: `/api/agents/${id}/files/${s!.artifacts[0]!.file_id}`, headers: await t.auth('agent', { sub: id }) });
      assert.equal(file.body, `hello from ${task.id}`);
      const listed = (await t.app.inject({ method: 'GET', url: `/api/agents/${id}/files?task_id=${task.id}`, headers: await t.auth('admin') })).json().files;
      assert.deepEqual(listed.map((f: { id: string }) => f.id), [s!.artifacts[0]!.file_id]);
      assert.equal(s!.wipe.verified, true);
      assert.ok(s!.wipe.files >= 2, 'the wipe counted the result and the artifact');
      assert.ok(s!.usage.wallSeconds > 0 && s!.usage.peakMemoryBytes > 0);
      // the attempt's compute is metered as the session's wall time, with the task's outcome
      const metered = await t.db.query<{ quantity: string; session_id: string }>(`SELECT quantity::text, session_id::text FROM agent_quota_usage WHERE task_id = $1 AND dimension = 'compute'`, [task.id]);
      assert.equal(metered.rows.length, 1);
      assert.equal(metered.rows[0]!.session_id, s!.id);
      assert.equal(Number(metered.rows[0]!.quantity), Math.round(s!.usage.wallSeconds * 1000));
    });
  }

  it('an artifact that does not fit the storage quota is reported in the session record and the task log, not dropped silently', async () => {
    const id = await provisionAgent(t, {
      isolation: { level: 'process', memory_mb: 128 },
      entrypoint: { command: ['node', path.join(codeDir, 'echo.js')], code_dir: codeDir },
      quota: { storage_limit_bytes: 5 },
    });
    const task = (await submit(t, { agent_id: id, type: 'echo' })).json().task;
    assert.equal((await waitForTask(t, task.id, terminal, 20_000)).status, 'completed');
    const [s] = await sessions(id);
    assert.equal(s!.artifacts[0]!.name, 'report.txt');
    assert.equal(s!.artifacts[0]!.file_id, undefined);
    assert.equal(s!.artifacts[0]!.error?.code, 'storage_quota_exceeded');
    const logs = await t.db.query<{ data: { lines: string[] } }>(`SELECT data FROM system_events WHERE subject_id = $1 AND event_type = 'task.log'`, [task.id]);
    assert.ok(logs.rows.flatMap((r) => r.data.lines).some((l) => /artifact out\/report.txt .* was not kept: storage_quota_exceeded/.test(l)));
    assert.equal(await countRows(t.db, 'agent_files', 'agent_id = $1', [id]), 0);
  });

  it('timeout: a program that sleeps past timeout_seconds is killed, ends timed_out, and keeps what it wrote to out/', async () => {
    const id = await agent('container', 'sleeper.js');
    const task = (await submit(t, { agent_id: id, type: 'sleep', timeout_seconds: 1 })).json().task;
    const done = await waitForTask(t, task.id, terminal, 20_000);
    assert.equal(done.status, 'timed_out');
    const [s] = await sessions(id);
    assert.equal(s!.status, 'timed_out');
    assert.deepEqual(s!.artifacts.map((a: { name: string }) => a.name), ['partial.txt']);
    const partial = await t.app.inject({ method: 'GET', url: `/api/agents/${id}/files/${s!.artifacts[0]!.file_id}`, headers: await t.auth('admin') });
    assert.equal(partial.statusCode, 200, partial.body);
    assert.equal(partial.body, 'written before the timeout');
    assert.equal(s!.wipe.verified, true);
  });
});
