import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { verifyAudit } from '../src/audit/index.js';
import { ErasureService, startComplianceRuntime, sweepRetention } from '../src/compliance/index.js';
import { createBlobStore, type BlobStore } from '../src/files/index.js';
import { registry } from '../src/telemetry/index.js';
import { countRows, startTestApp, type TestApp } from './support/app.js';
import { ENGINE } from './support/engine.js';
import { multipartBody } from './support/multipart.js';
import { provisionAgent, submit } from './support/queue.js';

/** agent_fabric_retention_deleted_total of one kind (0 before the first deletion). */
async function deletedMetric(kind: string): Promise<number> {
  const m = (await registry.getSingleMetric('agent_fabric_retention_deleted_total')?.get())?.values.find((v) => v.labels.kind === kind);
  return m?.value ?? 0;
}

describe(`retention (${ENGINE})`, () => {
  let t: TestApp;
  let blobs: BlobStore;
  let agent: string;
  let taskId: string;
  const files: Record<string, string> = {};

  async function upload(name: string, withTask: boolean): Promise<string> {
    const form = multipartBody(withTask ? [['task_id', taskId]] : [], { filename: name, content: `bytes of ${name}` });
    const res = await t.app.inject({ method: 'POST', url: `/api/agents/${agent}/files`, headers: { ...(await t.auth('admin')), ...form.headers }, payload: form.payload });
    assert.equal(res.statusCode, 201, res.body);
    return res.json().file.id;
  }

  /** Moves rows of `table` matching `where` `days` into the past. */
  const age = (table: string, column: string, where: string, params: unknown[], days: number) =>
    t.db.query(`UPDATE ${table} SET ${column} = ${column} - make_interval(days => ${days}) WHERE ${where}`, params);

  const blobCount = () => {
    let n = 0;
    const walk = (d: string) => fs.readdirSync(d, { withFileTypes: true }).forEach((e) => (e.isDirectory() ? e.name !== '.tmp' && walk(path.join(d, e.name)) : n++));
    walk(t.config.files.dir!);
    return n;
  };

  before(async () => {
    t = await startTestApp();
    blobs = createBlobStore(t.config);
    agent = await provisionAgent(t);
    taskId = (await submit(t, { agent_id: agent, type: 'work' })).json().task.id;
    files.oldArtifact = await upload('old-artifact.txt', true);
    files.midArtifact = await upload('mid-artifact.txt', true);
    files.oldPlain = await upload('old-notes.txt', false);
    await age('agent_files', 'created_at', 'id = $1 OR id = $2', [files.oldArtifact, files.oldPlain], 20);
    await age('agent_files', 'created_at', 'id = $1', [files.midArtifact], 10);
    for (const [type, days] of [['task.log', 20], ['task.log', 10], ['model.call', 20], ['task.completed', 20]] as const) {
      await t.db.query(`INSERT INTO system_events (tenant_id, agent_id, event_type, subject_type, subject_id, data, created_at) VALUES ('default', $1, $2, 'task', $3, '{"lines": ["code"]}', now() - make_interval(days => $4))`, [
        agent,
        type,
        taskId,
        days,
      ]);
    }
    const check = await t.app.inject({ method: 'POST', url: '/api/policy/check', headers: await t.auth('admin'), payload: { action: 'tool.call', resource: 'x', agent_id: agent } });
    assert.equal(check.statusCode, 200);
    for (let i = 0; i < 50 && (await countRows(t.db, 'policy_decisions')) === 0; i++) await new Promise((r) => setTimeout(r, 50));
    await age('policy_decisions', 'decided_at', 'true', [], 20);
    const exp = await t.app.inject({ method: 'POST', url: '/api/audit/exports', headers: await t.auth('admin'), payload: {} });
    assert.equal(exp.statusCode, 202, exp.body);
    for (let i = 0; i < 100 && (await countRows(t.db, 'audit_exports', `status = 'completed'`)) === 0; i++) await new Promise((r) => setTimeout(r, 50));
    await age('audit_exports', 'created_at', 'true', [], 20);
  });

  after(async () => {
    await blobs?.close();
    await t?.close();
  });

  it('the default (FABRIC_RETENTION_DAYS, 14) hard-deletes older artifacts, logs, gateway call detail, decisions and exports — rows and bytes — with evidence', async () => {
    const storageBefore = Number((await t.db.query<{ b: string }>(`SELECT storage_used_bytes::text AS b FROM agent_quotas WHERE agent_id = $1`, [agent])).rows[0]!.b);
    const oldSize = Number((await t.db.query<{ s: string }>(`SELECT size::text AS s FROM agent_files WHERE id = $1`, [files.oldArtifact])).rows[0]!.s);
    const blobsBefore = blobCount();
    const metricBefore = await deletedMetric('artifacts');
    // two sweeps at once: each tenant is swept by one of them (the other skips it or finds nothing)
    const [a, b] = await Promise.all([sweepRetention({ db: t.db, blobs, defaultDays: t.config.retention.days }), sweepRetention({ db: t.db, blobs, defaultDays: 14 })]);
    const deleted = [...a, ...b].filter((s) => s.tenant_id === 'default').reduce((n, s) => n + s.deleted.artifacts, 0);
    assert.equal(deleted, 1);
    const sweep = [...a, ...b].find((s) => s.tenant_id === 'default' && s.deleted.artifacts === 1)!;
    assert.deepEqual(sweep.deleted, { artifacts: 1, task_logs: 1, model_calls: 1, policy_decisions: 1, audit_exports: 1 });
    assert.equal(sweep.retention_days, 14);

    const left = (await t.db.query<{ id: string }>(`SELECT id FROM agent_files WHERE agent_id = $1`, [agent])).rows.map((r) => r.id).sort();
    assert.deepEqual(left, [files.midArtifact, files.oldPlain].sort(), 'the old artifact is gone; a younger artifact and a file no task produced stay');
    assert.equal(blobCount(), blobsBefore - 2, "the artifact's and the export's bytes are gone");
    assert.equal(await blobs.get(`default/${agent}/${files.oldArtifact}`), undefined);
    const storageAfter = Number((await t.db.query<{ b: string }>(`SELECT storage_used_bytes::text AS b FROM agent_quotas WHERE agent_id = $1`, [agent])).rows[0]!.b);
    assert.equal(storageAfter, storageBefore - oldSize, "the agent's storage charge gave the bytes back");
    assert.equal(await countRows(t.db, 'system_events', `event_type = 'task.log'`), 1);
    assert.equal(await countRows(t.db, 'system_events', `event_type = 'model.call'`), 0);
    assert.equal(await countRows(t.db, 'system_events', `event_type = 'task.completed'`), 1, 'task state events are not logs');
    assert.equal(await countRows(t.db, 'policy_decisions'), 0);
    assert.equal(await countRows(t.db, 'audit_exports'), 0);

    const audit = await t.db.query<{ after: { deleted: Record<string, number>; retention_days: number } }>(`SELECT after FROM audit_log WHERE action = 'retention.sweep' AND tenant_id = 'default'`);
    assert.equal(audit.rows.length, 1, 'one audit row for the sweep that deleted something');
    assert.deepEqual(audit.rows[0]!.after.deleted, sweep.deleted);
    assert.equal(await deletedMetric('artifacts'), metricBefore + 1);
    for (const chain of await verifyAudit(t.db)) assert.ok(chain.ok, JSON.stringify(chain));

    const again = await sweepRetention({ db: t.db, blobs, defaultDays: 14 });
    assert.equal(again.find((s) => s.tenant_id === 'default')!.deleted.artifacts, 0);
    assert.equal(await countRows(t.db, 'audit_log', `action = 'retention.sweep'`), 1, 'a sweep that deletes nothing writes no audit row');
  });

  it("the server's compliance loop sweeps on its own", async () => {
    const old = await upload('loop-artifact.txt', true);
    await age('agent_files', 'created_at', 'id = $1', [old], 30);
    const erasure = new ErasureService({ db: t.db, blobs: createBlobStore(t.config) });
    const loop = startComplianceRuntime({ db: t.db, blobs, erasure, defaultDays: 14, sweepSeconds: 0.1 });
    try {
      for (let i = 0; i < 100 && (await countRows(t.db, 'agent_files', 'id = $1', [old])) > 0; i++) await new Promise((r) => setTimeout(r, 50));
      assert.equal(await countRows(t.db, 'agent_files', 'id = $1', [old]), 0);
    } finally {
      await loop.stop();
      await erasure.close();
    }
  });

  it("a tenant's own retention overrides the default (admin only, audited)", async () => {
    const member = await t.app.inject({ method: 'PUT', url: '/api/retention', headers: await t.auth('operator'), payload: { retention_days: 7 } });
    assert.equal(member.statusCode, 403);
    const bad = await t.app.inject({ method: 'PUT', url: '/api/retention', headers: await t.auth('admin'), payload: { retention_days: 0 } });
    assert.equal(bad.statusCode, 400);
    const set = await t.app.inject({ method: 'PUT', url: '/api/retention', headers: await t.auth('admin'), payload: { retention_days: 7 } });
    assert.equal(set.statusCode, 200, set.body);
    assert.deepEqual(set.json(), { retention_days: 7, tenant_override: 7, default_days: 14 });
    assert.equal(await countRows(t.db, 'audit_log', `action = 'retention.update'`), 1);
    const swept = (await sweepRetention({ db: t.db, blobs, defaultDays: 14 })).find((s) => s.tenant_id === 'default')!;
    assert.equal(swept.retention_days, 7);
    assert.equal(swept.deleted.artifacts, 1);
    assert.equal(swept.deleted.task_logs, 1);
    assert.equal(await countRows(t.db, 'agent_files', 'id = $1', [files.midArtifact]), 0);
    const cleared = await t.app.inject({ method: 'PUT', url: '/api/retention', headers: await t.auth('admin'), payload: { retention_days: null } });
    assert.deepEqual(cleared.json(), { retention_days: 14, tenant_override: null, default_days: 14 });
    assert.deepEqual((await t.app.inject({ method: 'GET', url: '/api/retention', headers: await t.auth('admin') })).json(), cleared.json());
  });
});
