import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Executor, Worker } from '../src/worker/index.js';
import { PermanentError } from '../src/worker/index.js';
import { countRows, startTestApp, type TestApp } from './support/app.js';
import { ENGINE } from './support/engine.js';
import { FAST_QUEUE, provisionAgent, recordingNotifier, scriptedExecutor, startWorker, submit, terminal, waitForTask } from './support/queue.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe(`task queue: submit, run, retry, dead letter (${ENGINE})`, () => {
  let t: TestApp;
  let worker: Worker;
  let workerExecutor: Executor;
  const notifier = recordingNotifier();
  const runs = new Map<string, number[]>();
  before(async () => {
    t = await startTestApp({ queue: FAST_QUEUE });
    workerExecutor = scriptedExecutor({
        echo: (task) => ({ echoed: task.payload }),
        flaky: (task) => {
          const seen = runs.get(task.id) ?? [];
          seen.push(Date.now());
          runs.set(task.id, seen);
          if (seen.length < 3) throw new Error(`flake ${seen.length}`);
          return 'ok';
        },
        broken: (task) => {
          runs.set(task.id, [...(runs.get(task.id) ?? []), Date.now()]);
          throw new Error('always broken');
        },
        permanent: () => {
          throw new PermanentError('bad input', 'bad_input');
        },
        slow: (_task, ctx) => new Promise((resolve, reject) => {
          const timer = setTimeout(resolve, 30_000);
          ctx.signal.addEventListener('abort', () => (clearTimeout(timer), reject(new Error('aborted'))));
        }),
      });
    worker = await startWorker(t, workerExecutor, { notifier });
  });
  after(async () => {
    await worker.stop(1000);
    await t.close();
  });

  it('a submitted task runs and completes with its result; the transitions are events with revisions', async () => {
    const agent = await provisionAgent(t);
    const res = await submit(t, { agent_id: agent, type: 'echo', payload: { n: 1 } });
    assert.equal(res.statusCode, 201, res.body);
    const created = res.json().task;
    assert.equal(created.status, 'queued');
    assert.equal(created.priority, 'normal');
    const done = await waitForTask(t, created.id, terminal);
    assert.equal(done.status, 'completed');
    assert.deepEqual(done.result, { echoed: { n: 1 } });
    const events = await t.db.query<{ event_type: string; data: { revision: number } }>(
      "SELECT event_type, data FROM system_events WHERE subject_type = 'task' AND subject_id = $1 ORDER BY id",
      [created.id],
    );
    assert.deepEqual(events.rows.map((e) => e.event_type), ['task.queued', 'task.running', 'task.completed']);
    assert.deepEqual(events.rows.map((e) => e.data.revision), [1, 2, 3]);
    const detail = (await t.app.inject({ method: 'GET', url: `/api/tasks/${created.id}`, headers: await t.auth('viewer') })).json();
    assert.equal(detail.attempts.length, 1);
    assert.equal(detail.attempts[0].outcome, 'completed');
  });

  it('metrics: tasks by agent and status, durations, claim latency, queue depth and running per agent', async () => {
    const agent = await provisionAgent(t);
    await t.app.inject({ method: 'PATCH', url: `/api/agents/${agent}`, headers: await t.auth('admin'), payload: { status: 'paused' } });
    await submit(t, { agent_id: agent, type: 'echo' });
    const text = (await t.app.inject({ method: 'GET', url: '/metrics' })).body;
    assert.match(text, /agent_fabric_tasks_total\{agent_id="[0-9a-f-]{36}",status="completed"\} \d+/);
    assert.match(text, /agent_fabric_task_duration_seconds_count\{status="completed"\} \d+/);
    assert.match(text, /agent_fabric_task_claim_latency_seconds_count \d+/);
    assert.match(text, new RegExp(`agent_fabric_queue_depth\\{tenant_id="default",agent_id="${agent}"\\} 1`));
    assert.match(text, /agent_fabric_tasks_running/);
  });

  it('a failing task is retried with exponential backoff and completes', async () => {
    const agent = await provisionAgent(t);
    const id = (await submit(t, { agent_id: agent, type: 'flaky' })).json().task.id;
    const done = await waitForTask(t, id, terminal);
    assert.equal(done.status, 'completed');
    assert.equal(done.attempts, 3);
    const times = runs.get(id)!;
    const gaps = [times[1]! - times[0]!, times[2]! - times[1]!];
    // configured 0.1 s then 0.4 s (the default is 1 s, 4 s, 16 s); allow poll jitter
    assert.ok(gaps[0]! >= 90 && gaps[0]! < 1000, `first retry after ${gaps[0]} ms`);
    assert.ok(gaps[1]! >= 390 && gaps[1]! < 1500, `second retry after ${gaps[1]} ms`);
  });

  it('a task that always fails runs 1 + max_retries times, is dead-lettered and alerts', async () => {
    const agent = await provisionAgent(t);
    const id = (await submit(t, { agent_id: agent, type: 'broken', max_retries: 3 })).json().task.id;
    const done = await waitForTask(t, id, terminal, 15_000);
    assert.equal(done.status, 'dead_lettered');
    assert.equal(runs.get(id)!.length, 4);
    assert.equal(done.error?.message, 'always broken');
    await sleep(100);
    const alert = notifier.alerts.find((a) => a.taskId === id);
    assert.ok(alert, 'alert sent');
    assert.equal(alert.severity, 'critical');
    const dl = await t.app.inject({ method: 'GET', url: `/api/dead-letters?agent_id=${agent}`, headers: await t.auth('viewer') });
    assert.deepEqual(dl.json().tasks.map((x: { id: string }) => x.id), [id]);
    // re-drive: a fresh retry budget, history kept
    const retried = await t.app.inject({ method: 'POST', url: `/api/tasks/${id}/retry`, headers: await t.auth('operator'), payload: {} });
    assert.equal(retried.statusCode, 200, retried.body);
    assert.equal(retried.json().task.status, 'queued');
    const again = await waitForTask(t, id, (x) => x.status === 'dead_lettered' && x.attempts === 8, 15_000);
    assert.equal(again.attempts, 8);
  });

  it('a dead letter reaches the alert webhook (a local receiver)', async () => {
    const http = await import('node:http');
    const bodies: { channel: string; text: string }[] = [];
    const receiver = http.createServer((req, res) => {
      let data = '';
      req.on('data', (c) => (data += c));
      req.on('end', () => (bodies.push(JSON.parse(data)), res.end('ok')));
    });
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
    const { createNotifier } = await import('../src/notify/index.js');
    const port = (receiver.address() as { port: number }).port;
    const hooked = await startWorker(t, scriptedExecutor({ doomed: () => Promise.reject(new Error('nope')) }), {
      notifier: createNotifier({ webhookUrl: `http://127.0.0.1:${port}/slack` }),
    });
    try {
      const agent = await provisionAgent(t);
      await worker.stop(0); // only the hooked worker runs this one
      const id = (await submit(t, { agent_id: agent, type: 'doomed', max_retries: 0 })).json().task.id;
      assert.equal((await waitForTask(t, id, terminal)).status, 'dead_lettered');
      for (let i = 0; i < 50 && bodies.length === 0; i++) await sleep(50);
      assert.equal(bodies[0]?.channel, '#fleet-ops');
      assert.match(bodies[0]!.text, /dead-lettered/);
    } finally {
      await hooked.stop(0);
      receiver.close();
      worker = await startWorker(t, workerExecutor, { notifier });
    }
  });

  it('a PermanentError fails the task without retries', async () => {
    const agent = await provisionAgent(t);
    const id = (await submit(t, { agent_id: agent, type: 'permanent' })).json().task.id;
    const done = await waitForTask(t, id, terminal);
    assert.equal(done.status, 'failed');
    assert.equal(done.attempts, 1);
    assert.equal(done.error?.code, 'bad_input');
  });

  it('timeout_seconds ends a running attempt as timed_out (not retried by default)', async () => {
    const agent = await provisionAgent(t);
    const id = (await submit(t, { agent_id: agent, type: 'slow', timeout_seconds: 1 })).json().task.id;
    const done = await waitForTask(t, id, terminal);
    assert.equal(done.status, 'timed_out');
    assert.equal(done.attempts, 1);
  });

  it('cancel: a queued task is cancelled at once; a running one through its AbortSignal', async () => {
    const agent = await provisionAgent(t, { max_concurrency: 1 });
    const running = (await submit(t, { agent_id: agent, type: 'slow' })).json().task.id;
    const queued = (await submit(t, { agent_id: agent, type: 'slow' })).json().task.id;
    await waitForTask(t, running, (x) => x.status === 'running');
    const c1 = await t.app.inject({ method: 'POST', url: `/api/tasks/${queued}/cancel`, headers: await t.auth('operator'), payload: {} });
    assert.equal(c1.json().task.status, 'cancelled');
    const c2 = await t.app.inject({ method: 'POST', url: `/api/tasks/${running}/cancel`, headers: await t.auth('operator'), payload: {} });
    assert.equal(c2.statusCode, 200);
    const done = await waitForTask(t, running, terminal);
    assert.equal(done.status, 'cancelled');
    const again = await t.app.inject({ method: 'POST', url: `/api/tasks/${running}/cancel`, headers: await t.auth('operator'), payload: {} });
    assert.equal(again.statusCode, 409);
    assert.equal(again.json().error.code, 'task_finished');
  });

  it('a stale revision is refused with 409 revision_conflict', async () => {
    const agent = await provisionAgent(t, { status: undefined });
    await t.app.inject({ method: 'PATCH', url: `/api/agents/${agent}`, headers: await t.auth('admin'), payload: { status: 'paused' } });
    const task = (await submit(t, { agent_id: agent, type: 'echo' })).json().task;
    const res = await t.app.inject({ method: 'POST', url: `/api/tasks/${task.id}/cancel`, headers: await t.auth('operator'), payload: { revision: task.revision + 5 } });
    assert.equal(res.statusCode, 409);
    assert.equal(res.json().error.code, 'revision_conflict');
  });

  it('dependencies: B waits for A; when A fails, B (and C after it) fail with dependency_failed', async () => {
    const agent = await provisionAgent(t, { max_concurrency: 4 });
    const a = (await submit(t, { agent_id: agent, type: 'echo' })).json().task.id;
    const b = (await submit(t, { agent_id: agent, type: 'echo', depends_on: [a] })).json().task;
    assert.ok(['waiting', 'queued'].includes(b.status));
    const bDone = await waitForTask(t, b.id, terminal);
    assert.equal(bDone.status, 'completed');
    const x = (await submit(t, { agent_id: agent, type: 'permanent' })).json().task.id;
    const y = (await submit(t, { agent_id: agent, type: 'echo', depends_on: [x] })).json().task.id;
    const z = (await submit(t, { agent_id: agent, type: 'echo', depends_on: [y] })).json().task.id;
    assert.equal((await waitForTask(t, z, terminal)).error?.code, 'dependency_failed');
    assert.equal((await waitForTask(t, y, terminal)).status, 'failed');
    // depending on an already failed task fails at once
    const late = (await submit(t, { agent_id: agent, type: 'echo', depends_on: [x] })).json().task;
    assert.equal(late.status, 'failed');
    assert.equal(late.error.code, 'dependency_failed');
  });

  it('run_at delays a task', async () => {
    const agent = await provisionAgent(t);
    const at = new Date(Date.now() + 1200).toISOString();
    const task = (await submit(t, { agent_id: agent, type: 'echo', run_at: at })).json().task;
    assert.equal(task.status, 'waiting');
    const done = await waitForTask(t, task.id, terminal);
    const started = (await t.db.query<{ started_at: Date }>('SELECT started_at FROM tasks WHERE id = $1', [task.id])).rows[0]!.started_at;
    assert.ok(started.getTime() >= Date.parse(at) - 5, 'did not start early');
    assert.equal(done.status, 'completed');
  });

  it('the queue is bounded: 429 queue_full at max_queue_depth', async () => {
    const agent = await provisionAgent(t, { max_queue_depth: 100 });
    await t.app.inject({ method: 'PATCH', url: `/api/agents/${agent}`, headers: await t.auth('admin'), payload: { status: 'paused' } });
    const batch = await t.app.inject({ method: 'POST', url: '/api/tasks/batch', headers: await t.auth('admin'), payload: { tasks: Array.from({ length: 100 }, () => ({ agent_id: agent, type: 'echo' })) } });
    assert.equal(batch.statusCode, 201, batch.body);
    const res = await submit(t, { agent_id: agent, type: 'echo' });
    assert.equal(res.statusCode, 429);
    assert.equal(res.json().error.code, 'queue_full');
    assert.ok(res.json().error.retry_after_seconds > 0);
    assert.equal(res.headers['retry-after'], String(res.json().error.retry_after_seconds));
    const stats = (await t.app.inject({ method: 'GET', url: `/api/agents/${agent}/queue`, headers: await t.auth('viewer') })).json().queue;
    assert.equal(stats.depth, 100);
    // a batch that would cross the bound is refused whole
    assert.equal(await countRows(t.db, 'tasks', 'agent_id = $1', [agent]), 100);
  });

  it('concurrent submits racing for the last slots never pass max_queue_depth', async () => {
    const agent = await provisionAgent(t, { max_queue_depth: 10 });
    await t.app.inject({ method: 'PATCH', url: `/api/agents/${agent}`, headers: await t.auth('admin'), payload: { status: 'paused' } });
    const results = await Promise.all(Array.from({ length: 40 }, () => submit(t, { agent_id: agent, type: 'echo' })));
    const codes = results.map((r) => r.statusCode).sort();
    assert.deepEqual([codes.filter((c) => c === 201).length, codes.filter((c) => c === 429).length], [10, 30]);
    assert.equal(await countRows(t.db, 'tasks', 'agent_id = $1', [agent]), 10);
  });

  it('idempotency_key in the body: a duplicate within 24 h returns 200 with the original, no new task', async () => {
    const agent = await provisionAgent(t);
    const body = { agent_id: agent, type: 'echo', idempotency_key: 'task-key-1' };
    const first = await submit(t, body);
    const second = await submit(t, body);
    assert.deepEqual([first.statusCode, second.statusCode], [201, 200]);
    assert.equal(second.json().task.id, first.json().task.id);
    assert.equal(await countRows(t.db, 'tasks', 'agent_id = $1', [agent]), 1);
  });

  it('ids in upper case work; duplicate depends_on entries count once; cancel needs no body', async () => {
    const agent = await provisionAgent(t);
    await t.app.inject({ method: 'PATCH', url: `/api/agents/${agent}`, headers: await t.auth('admin'), payload: { status: 'paused' } });
    const dep = (await submit(t, { agent_id: agent.toUpperCase(), type: 'echo' })).json().task;
    assert.equal(dep.agent_id, agent);
    const res = await submit(t, { agent_id: agent, type: 'echo', depends_on: [dep.id.toUpperCase(), dep.id] });
    assert.equal(res.statusCode, 201, res.body);
    assert.deepEqual(res.json().task.depends_on, [dep.id]);
    const asAgent = await t.auth('agent', { sub: agent.toUpperCase() });
    assert.equal((await t.app.inject({ method: 'GET', url: `/api/tasks/${dep.id.toUpperCase()}`, headers: asAgent })).statusCode, 200);
    const cancel = await t.app.inject({ method: 'POST', url: `/api/tasks/${dep.id}/cancel`, headers: await t.auth('operator') });
    assert.equal(cancel.statusCode, 200, cancel.body);
    assert.equal((await waitForTask(t, res.json().task.id, terminal)).error?.code, 'dependency_failed');
  });

  it('deleting an agent cancels its queued work', async () => {
    const agent = await provisionAgent(t);
    await t.app.inject({ method: 'PATCH', url: `/api/agents/${agent}`, headers: await t.auth('admin'), payload: { status: 'paused' } });
    const id = (await submit(t, { agent_id: agent, type: 'echo' })).json().task.id;
    assert.equal((await t.app.inject({ method: 'DELETE', url: `/api/agents/${agent}`, headers: await t.auth('admin') })).statusCode, 200);
    const task = await waitForTask(t, id, terminal);
    assert.deepEqual([task.status, task.error?.code], ['cancelled', 'agent_deleted']);
  });

  it('an agent submits and reads only its own tasks; viewers may not submit', async () => {
    const mine = await provisionAgent(t);
    const other = await provisionAgent(t);
    const asAgent = await t.auth('agent', { sub: mine });
    const ok = await t.app.inject({ method: 'POST', url: '/api/tasks', headers: asAgent, payload: { agent_id: mine, type: 'echo' } });
    assert.equal(ok.statusCode, 201);
    const theirs = await t.app.inject({ method: 'POST', url: '/api/tasks', headers: asAgent, payload: { agent_id: other, type: 'echo' } });
    assert.equal(theirs.statusCode, 403);
    const otherTask = (await submit(t, { agent_id: other, type: 'echo' })).json().task.id;
    // another agent's task is a 404 to an agent: not even its existence leaks
    assert.equal((await t.app.inject({ method: 'GET', url: `/api/tasks/${otherTask}`, headers: asAgent })).statusCode, 404);
    assert.equal((await t.app.inject({ method: 'GET', url: `/api/tasks?agent_id=${other}`, headers: asAgent })).statusCode, 403);
    const listed = (await t.app.inject({ method: 'GET', url: '/api/tasks', headers: asAgent })).json().tasks;
    assert.ok(listed.every((x: { agent_id: string }) => x.agent_id === mine));
    assert.equal((await t.app.inject({ method: 'POST', url: '/api/tasks', headers: await t.auth('viewer'), payload: { agent_id: mine, type: 'echo' } })).statusCode, 403);
  });
});
