import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { loadConfig } from '../src/config/index.js';
import type { Worker } from '../src/worker/index.js';
import { startTestApp, type TestApp } from './support/app.js';
import { ENGINE } from './support/engine.js';
import { provisionAgent, scriptedExecutor, startWorker, submit, terminal, waitForTask } from './support/queue.js';

const timeouts = { profiles: { default: 600, java: 1800, huge: 99_999 }, ceilingSeconds: 3600 };

describe(`timeout profiles and the hard ceiling (${ENGINE})`, () => {
  let t: TestApp;
  before(async () => {
    t = await startTestApp({ queue: { timeouts } });
  });
  after(async () => t?.close());

  const agentWith = (runtime?: string) => provisionAgent(t, { entrypoint: { handler: 'x.mjs', ...(runtime ? { runtime } : {}) } });

  it("a task without timeout_seconds gets its agent's runtime profile, else the default", async () => {
    const java = await agentWith('java');
    const plain = await agentWith();
    const unknown = await agentWith('cobol');
    assert.equal((await submit(t, { agent_id: java, type: 'x' })).json().task.timeout_seconds, 1800);
    assert.equal((await submit(t, { agent_id: plain, type: 'x' })).json().task.timeout_seconds, 600);
    assert.equal((await submit(t, { agent_id: unknown, type: 'x' })).json().task.timeout_seconds, 600);
    assert.equal((await submit(t, { agent_id: java, type: 'x', timeout_seconds: 42 })).json().task.timeout_seconds, 42, 'an explicit timeout wins');
  });

  it('a profile above the ceiling is cut to it; an explicit timeout above it is refused with 400 timeout_above_ceiling', async () => {
    const huge = await agentWith('huge');
    assert.equal((await submit(t, { agent_id: huge, type: 'x' })).json().task.timeout_seconds, 3600);
    const res = await submit(t, { agent_id: huge, type: 'x', timeout_seconds: 3601 });
    assert.equal(res.statusCode, 400);
    assert.equal(res.json().error.code, 'timeout_above_ceiling');
    assert.match(res.json().error.message, /3600/);
    const batch = await t.app.inject({ method: 'POST', url: '/api/tasks/batch', headers: await t.auth('admin'), payload: { tasks: [{ agent_id: huge, type: 'a' }, { agent_id: huge, type: 'b', timeout_seconds: 7200 }] } });
    assert.equal(batch.statusCode, 400, 'one task over the ceiling refuses the whole batch');
  });

  it('a runtime name is validated at provision', async () => {
    const res = await t.app.inject({ method: 'POST', url: '/api/agents/provision', headers: await t.auth('admin'), payload: { name: 'bad-runtime', model: 'm', entrypoint: { handler: 'x.mjs', runtime: 'Java 21!' } } });
    assert.equal(res.statusCode, 400);
  });

  it('FABRIC_TIMEOUT_PROFILES parses runtime=seconds lists and rejects malformed ones', () => {
    assert.deepEqual(loadConfig({ FABRIC_TIMEOUT_PROFILES: 'default=300, java=1200' }).timeouts.profiles, { default: 300, java: 1200 });
    assert.throws(() => loadConfig({ FABRIC_TIMEOUT_PROFILES: 'java=1200' }), /default=<seconds>/);
    assert.throws(() => loadConfig({ FABRIC_TIMEOUT_PROFILES: 'default=ten' }), /runtime=seconds/);
  });
});

describe(`a worker applies the ceiling at run time (${ENGINE})`, () => {
  let t: TestApp;
  let worker: Worker;
  before(async () => {
    t = await startTestApp();
    worker = await startWorker(t, scriptedExecutor({ slow: (_task, ctx) => new Promise((resolve) => ctx.signal.addEventListener('abort', resolve)) }), { queue: { timeouts: { profiles: { default: 600 }, ceilingSeconds: 1 } } });
  });
  after(async () => {
    await worker?.stop(1000);
    await t?.close();
  });

  it('a task submitted before the ceiling was lowered still stops at the ceiling, timed_out', async () => {
    const id = await provisionAgent(t);
    const task = (await submit(t, { agent_id: id, type: 'slow', timeout_seconds: 60, max_retries: 0 })).json().task;
    const started = Date.now();
    const done = await waitForTask(t, task.id, terminal, 10_000);
    assert.equal(done.status, 'timed_out');
    assert.ok(Date.now() - started < 5000, 'stopped at the 1 s ceiling, not the task\'s 60 s');
  });
});
