import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Worker } from '../src/worker/index.js';
import { startTestApp, type TestApp } from './support/app.js';
import { ENGINE } from './support/engine.js';
import { FAST_QUEUE, provisionAgent, scriptedExecutor, startWorker, submit } from './support/queue.js';
import { SseStream } from './support/sse.js';

describe(`a task watched live over SSE (${ENGINE})`, () => {
  let t: TestApp;
  let base: string;
  let worker: Worker;
  before(async () => {
    t = await startTestApp({ queue: FAST_QUEUE });
    base = await t.app.listen({ port: 0, host: '127.0.0.1' });
    worker = await startWorker(t, scriptedExecutor({ work: () => ({ ok: true }) }));
  });
  after(async () => {
    await worker.stop(0);
    await t.close();
  });

  it('streams queued → running → completed with revisions 1, 2, 3; Last-Event-ID resumes after any of them', async () => {
    const agent = await provisionAgent(t);
    const id = (await submit(t, { agent_id: agent, type: 'work' })).json().task.id;
    const headers = await t.auth('viewer');
    const stream = await SseStream.open(`${base}/api/tasks/${id}/events`, headers);
    try {
      await stream.untilEvents(3);
      const events = stream.events();
      assert.deepEqual(events.map((e) => e.event_type), ['task.queued', 'task.running', 'task.completed']);
      assert.deepEqual(events.map((e) => e.data.revision), [1, 2, 3]);
      assert.ok(events.every((e) => e.subject_id === id));
      const resumed = await SseStream.open(`${base}/api/tasks/${id}/events`, { ...headers, 'last-event-id': String(events[0]!.id) });
      try {
        await resumed.untilEvents(2);
        assert.deepEqual(resumed.events().map((e) => e.event_type), ['task.running', 'task.completed']);
      } finally {
        resumed.close();
      }
    } finally {
      stream.close();
    }
  });

  it("another agent cannot watch this agent's task", async () => {
    const agent = await provisionAgent(t);
    const other = await provisionAgent(t);
    const id = (await submit(t, { agent_id: agent, type: 'work' })).json().task.id;
    const res = await fetch(`${base}/api/tasks/${id}/events`, { headers: await t.auth('agent', { sub: other }) });
    assert.equal(res.status, 404);
    const mine = await SseStream.open(`${base}/api/tasks/${id}/events`, await t.auth('agent', { sub: agent }));
    try {
      await mine.untilEvents(1);
    } finally {
      mine.close();
    }
  });
});
