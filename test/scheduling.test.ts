import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { claimTasks, DEFAULT_QUEUE_OPTIONS, finishAttempt, recoverExpiredLeases, releaseAttempt } from '../src/queue/index.js';
import type { Worker } from '../src/worker/index.js';
import { startTestApp, type TestApp } from './support/app.js';
import { ENGINE } from './support/engine.js';
import { FAST_QUEUE, provisionAgent, scriptedExecutor, startWorker, submit, terminal, waitForTask } from './support/queue.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const pause = async (t: TestApp, agent: string, status: 'paused' | 'active') =>
  t.app.inject({ method: 'PATCH', url: `/api/agents/${agent}`, headers: await t.auth('admin'), payload: { status } });

describe(`scheduling: fairness, priorities, aging, leases (${ENGINE})`, () => {
  let t: TestApp;
  before(async () => (t = await startTestApp({ queue: { ...FAST_QUEUE, agingSeconds: 1 } })));
  after(async () => t.close());

  it('a flooded agent does not delay an agent with one task (it starts in the next claim round while 2,000 others wait)', async () => {
    const flood = await provisionAgent(t, { max_queue_depth: 10_000, max_concurrency: 2 });
    const trickle = await provisionAgent(t);
    for (let b = 0; b < 2; b++) {
      const res = await t.app.inject({ method: 'POST', url: '/api/tasks/batch', headers: await t.auth('admin'), payload: { tasks: Array.from({ length: 1000 }, () => ({ agent_id: flood, type: 'work' })) } });
      assert.equal(res.statusCode, 201, res.body);
    }
    const starts = new Map<string, number>();
    const order: string[] = [];
    const worker = await startWorker(t, scriptedExecutor({ work: async (task) => (starts.set(task.id, Date.now()), order.push(task.id), sleep(5)) }), { concurrency: 2 });
    try {
      await sleep(300); // the flood is being worked
      const submittedAt = Date.now();
      const one = (await submit(t, { agent_id: trickle, type: 'work' })).json().task.id;
      const startedBefore = order.length;
      const done = await waitForTask(t, one, terminal, 10_000);
      assert.equal(done.status, 'completed');
      const waited = starts.get(one)! - submittedAt;
      const floodLeft = (await t.app.inject({ method: 'GET', url: `/api/agents/${flood}/queue`, headers: await t.auth('viewer') })).json().queue.depth;
      // Fairness is about order, not machine speed: once its submit returned, at most the
      // claims already in flight (2 slots, one round each) may start before it.
      const floodStartsInBetween = order.indexOf(one) - startedBefore;
      assert.ok(floodStartsInBetween <= 4, `${floodStartsInBetween} flood tasks started before the trickle task`);
      assert.ok(waited < 5000, `trickle task started after ${waited} ms`);
      assert.ok(floodLeft > 500, `the flood was still queued (${floodLeft}) when the trickle task ran`);
    } finally {
      await worker.stop(0);
      await t.db.query(`UPDATE tasks SET status = 'cancelled' WHERE agent_id = $1 AND status IN ('queued', 'waiting')`, [flood]);
    }
  });

  it('higher priority first; aging lets an old low-priority task pass newer normal ones', async () => {
    const agent = await provisionAgent(t, { max_concurrency: 1 });
    await pause(t, agent, 'paused');
    const oldLow = (await submit(t, { agent_id: agent, type: 'work', priority: 'low' })).json().task.id;
    await sleep(1500); // 1.5 aging intervals: low (3) now competes like 1.5 levels higher
    const normal = (await submit(t, { agent_id: agent, type: 'work', priority: 'normal' })).json().task.id;
    const critical = (await submit(t, { agent_id: agent, type: 'work', priority: 'critical' })).json().task.id;
    const order: string[] = [];
    const worker = await startWorker(t, scriptedExecutor({ work: (task) => void order.push(task.id) }), { concurrency: 1 });
    try {
      await pause(t, agent, 'active');
      for (const id of [oldLow, normal, critical]) await waitForTask(t, id, terminal);
      assert.deepEqual(order, [critical, oldLow, normal]);
    } finally {
      await worker.stop(0);
    }
  });

  it('paused or busy agents never crowd ready agents out of a claim', async () => {
    const options = { ...DEFAULT_QUEUE_OPTIONS, ...FAST_QUEUE };
    const paused: string[] = [];
    for (let i = 0; i < 20; i++) {
      const a = await provisionAgent(t);
      await submit(t, { agent_id: a, type: 'work' });
      paused.push(a);
    }
    await t.db.query(`UPDATE agents SET status = 'paused' WHERE id = ANY($1::uuid[])`, [paused]);
    const ready = await provisionAgent(t);
    const id = (await submit(t, { agent_id: ready, type: 'work' })).json().task.id;
    const claimed = await claimTasks(t.db, 'w-starve', 4, options);
    assert.deepEqual(claimed.map((c) => c.task.id), [id]);
    await t.db.query(`UPDATE tasks SET status = 'cancelled' WHERE agent_id = ANY($1::uuid[]) OR id = $2`, [paused, id]);
  });

  it('draining releases a running task unless it was asked to cancel: then it ends cancelled', async () => {
    const options = { ...DEFAULT_QUEUE_OPTIONS, ...FAST_QUEUE };
    const agent = await provisionAgent(t);
    const id = (await submit(t, { agent_id: agent, type: 'work' })).json().task.id;
    const [claim] = await claimTasks(t.db, 'w-drain', 1, options);
    await t.app.inject({ method: 'POST', url: `/api/tasks/${id}/cancel`, headers: await t.auth('operator') });
    assert.equal((await releaseAttempt(t.db, claim!, options)).status, 'cancelled');
  });

  it('max_concurrency per agent holds across several workers', async () => {
    const agent = await provisionAgent(t, { max_concurrency: 2, max_queue_depth: 200 });
    let running = 0;
    let peak = 0;
    const exec = scriptedExecutor({
      work: async () => {
        peak = Math.max(peak, ++running);
        await sleep(20);
        running--;
      },
    });
    const workers = await Promise.all([1, 2, 3].map(() => startWorker(t, exec, { concurrency: 4 })));
    try {
      const res = await t.app.inject({ method: 'POST', url: '/api/tasks/batch', headers: await t.auth('admin'), payload: { tasks: Array.from({ length: 40 }, () => ({ agent_id: agent, type: 'work' })) } });
      const ids = res.json().tasks.map((x: { id: string }) => x.id);
      for (const id of ids) assert.equal((await waitForTask(t, id, terminal, 20_000)).status, 'completed');
      assert.equal(peak, 2);
    } finally {
      await Promise.all(workers.map((w: Worker) => w.stop(0)));
    }
  });

  it('a lost lease is recovered and the task runs again; the stale worker cannot overwrite the new outcome', async () => {
    const agent = await provisionAgent(t);
    const id = (await submit(t, { agent_id: agent, type: 'work' })).json().task.id;
    const options = { ...DEFAULT_QUEUE_OPTIONS, ...FAST_QUEUE };
    const [stale] = await claimTasks(t.db, 'crashed-worker', 1, options);
    assert.equal(stale?.task.id, id);
    // the crashed worker never renews: its lease runs out
    await t.db.query(`UPDATE tasks SET lease_expires_at = now() - interval '1 second' WHERE id = $1`, [id]);
    const recovered = await recoverExpiredLeases(t.db, options);
    assert.deepEqual(recovered.map((m) => [m.id, m.status]), [[id, 'queued']]);
    const [fresh] = await claimTasks(t.db, 'healthy-worker', 1, options);
    assert.equal(fresh?.attempt, 2);
    assert.equal((await finishAttempt(t.db, fresh!, { kind: 'completed', result: 'new' }, options)).status, 'completed');
    assert.equal((await finishAttempt(t.db, stale!, { kind: 'failed', error: { code: 'x', message: 'late' } }, options)).status, 'stale');
    const done = await waitForTask(t, id, terminal);
    assert.deepEqual([done.status, done.result], ['completed', 'new']);
    const attempts = (await t.app.inject({ method: 'GET', url: `/api/tasks/${id}`, headers: await t.auth('admin') })).json().attempts;
    assert.deepEqual(attempts.map((a: { outcome: string }) => a.outcome), ['lease_lost', 'completed']);
  });

  it('draining a worker lets short tasks finish and releases long ones without charging an attempt', async () => {
    const agent = await provisionAgent(t, { max_concurrency: 2 });
    const worker = await startWorker(
      t,
      scriptedExecutor({
        short: () => sleep(100),
        long: (_task, ctx) => new Promise((_, reject) => ctx.signal.addEventListener('abort', () => reject(new Error('stopped')))),
      }),
      { concurrency: 2 },
    );
    const short = (await submit(t, { agent_id: agent, type: 'short' })).json().task.id;
    const long = (await submit(t, { agent_id: agent, type: 'long' })).json().task.id;
    await waitForTask(t, long, (x) => x.status === 'running');
    await waitForTask(t, short, (x) => x.status === 'running' || terminal(x));
    await worker.stop(500);
    assert.equal((await waitForTask(t, short, terminal)).status, 'completed');
    const released = await waitForTask(t, long, (x) => x.status === 'queued');
    assert.equal(released.status, 'queued');
    assert.equal(released.error?.code, 'worker_draining');
    await t.db.query(`UPDATE tasks SET status = 'cancelled' WHERE id = $1`, [long]);
  });
});
