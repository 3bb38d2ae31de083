import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { detectSandboxHost, missingFor, prepareSandboxRoot } from '../src/sandbox/index.js';
import type { Worker } from '../src/worker/index.js';
import { setQuota } from './support/budget.js';
import { testSandboxExecutor } from './support/sandbox.js';
import { ENGINE } from './support/engine.js';
import { gatewayAgent, metered, PROVIDER_KEY, startGatewayApp, type GatewayApp } from './support/gateway.js';
import { startWorker, submit, terminal, waitForTask } from './support/queue.js';

const host = detectSandboxHost();
const skip = missingFor('container', host);

/** The "done when": the summarizer example calls a model through the gateway from inside its container sandbox. */
describe(`model gateway from a container sandbox (${ENGINE})`, { skip }, () => {
  let t: GatewayApp;
  let worker: Worker;
  let root: string;
  let codeDir: string;
  before(async () => {
    t = await startGatewayApp();
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'fabric-gateway-sandbox-'));
    fs.chmodSync(root, 0o755);
    codeDir = path.join(root, 'summarizer');
    fs.mkdirSync(codeDir, { mode: 0o755 });
    fs.copyFileSync(path.resolve('examples/summarizer/agent.mjs'), path.join(codeDir, 'agent.mjs'));
    fs.chmodSync(path.join(codeDir, 'agent.mjs'), 0o644);
    const dirs = prepareSandboxRoot(path.join(root, 'sandbox'));
    const executor = testSandboxExecutor(t, dirs, { uidBase: 310_000, uidCount: 50, apiUrl: t.base, keepArtifacts: true });
    worker = await startWorker(t, executor);
  });
  after(async () => {
    await worker?.stop(1000);
    await t?.close();
    if (root) fs.rmSync(root, { recursive: true, force: true });
  });

  const summarizer = (quota?: Record<string, unknown>) =>
    gatewayAgent(t, {
      isolation: { level: 'container', memory_mb: 256 },
      entrypoint: { command: ['node', '/agent/agent.mjs'], code_dir: codeDir },
      ...(quota ? { quota } : {}),
    });
  const logLines = async (taskId: string) =>
    (await t.db.query<{ data: { lines: string[] } }>(`SELECT data FROM system_events WHERE subject_id = $1 AND event_type = 'task.log' ORDER BY id`, [taskId])).rows.flatMap((r) => r.data.lines);

  it('the summarizer calls the model through the gateway with its session token; its tokens show in GET /api/agents/:id/quota', async () => {
    const agent = await summarizer();
    const before = t.fake.requests.length;
    const task = (await submit(t, { agent_id: agent, type: 'summarize', payload: { text: 'Followed up with the FBX lead about pricing. They want a demo next week.' } })).json().task;
    const done = await waitForTask(t, task.id, terminal, 60_000);
    assert.equal(done.status, 'completed', JSON.stringify(done.error));
    const result = done.result as { summary: string; model: string };
    assert.equal(result.model, 'gpt-4o-mini', (await logLines(task.id)).join('\n'));
    assert.match(result.summary, /^\[fake\] Followed up with the FBX lead/);
    assert.equal(t.fake.requests.length - before, 1);
    assert.equal(t.fake.requests.at(-1)!.authorization, `Bearer ${PROVIDER_KEY}`);
    await metered(t, task.id, 1);
    const rows = await t.db.query<{ tokens: string; session_id: string }>(
      `SELECT (input_tokens + output_tokens)::text AS tokens, session_id::text FROM agent_quota_usage WHERE task_id = $1 AND dimension = 'tokens'`,
      [task.id],
    );
    assert.equal(rows.rows.length, 1);
    const sessions = (await t.app.inject({ method: 'GET', url: `/api/agents/${agent}/sessions`, headers: await t.auth('admin') })).json().sessions;
    assert.equal(rows.rows[0]!.session_id, sessions[0].id, 'attributed to the sandbox session');
    const quota = (await t.app.inject({ method: 'GET', url: `/api/agents/${agent}/quota`, headers: await t.auth('admin') })).json().quota;
    assert.equal(quota.monthly_tokens_used, Number(rows.rows[0]!.tokens));
    assert.ok(quota.monthly_cost_used_micros > 0);
    // the sandbox never saw the provider key: its environment holds only the session token
    assert.ok(!(await logLines(task.id)).some((l) => l.includes(PROVIDER_KEY)));
  });

  it('an agent whose budget is exhausted is refused before any upstream call (and falls back, as the example does)', async () => {
    const agent = await summarizer({ monthly_token_limit: 1000, overage_policy: 'block' });
    await setQuota(t, agent, { monthly_tokens_used: 1000 });
    const before = t.fake.requests.length;
    const task = (await submit(t, { agent_id: agent, type: 'summarize', payload: { text: 'Budget is gone. Nothing should reach the provider.' } })).json().task;
    const done = await waitForTask(t, task.id, terminal, 60_000);
    assert.equal(t.fake.requests.length, before, 'the provider saw no request');
    assert.ok((await logLines(task.id)).some((l) => l.includes('model call failed (429)')));
    assert.equal((done.result as { model: string } | null)?.model ?? done.status, 'extractive (no model reached)');
    const events = await t.db.query(`SELECT 1 FROM system_events WHERE event_type = 'model.call' AND subject_id = $1`, [task.id]);
    assert.equal(events.rows.length, 0, 'no call was made');
  });
});
