import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Worker } from '../src/worker/index.js';
import { startTestApp, type TestApp } from './support/app.js';
import { ENGINE } from './support/engine.js';
import { FAST_QUEUE, provisionAgent, scriptedExecutor, startWorker } from './support/queue.js';

// isolation-runtime-prd §3.4: 200 concurrent task submissions all reach completed with zero data loss.
describe(`load: 200 concurrent submissions over HTTP (${ENGINE})`, () => {
  let t: TestApp;
  let workers: Worker[];
  let base: string;
  const handled = new Map<string, number>();
  before(async () => {
    t = await startTestApp({ queue: FAST_QUEUE });
    base = await t.app.listen({ port: 0, host: '127.0.0.1' });
    const exec = scriptedExecutor({ work: (task) => void handled.set(task.id, (handled.get(task.id) ?? 0) + 1) });
    workers = await Promise.all([1, 2].map(() => startWorker(t, exec, { concurrency: 8 })));
  });
  after(async () => {
    await Promise.all(workers.map((w) => w.stop(1000)));
    await t.close();
  });

  it('every submission gets a 201, every task completes exactly once', async () => {
    const agents = await Promise.all(Array.from({ length: 10 }, () => provisionAgent(t, { max_concurrency: 4 })));
    const auth = await t.auth('operator');
    const responses = await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        fetch(`${base}/api/tasks`, {
          method: 'POST',
          headers: { ...auth, 'content-type': 'application/json' },
          body: JSON.stringify({ agent_id: agents[i % agents.length], type: 'work', payload: { i } }),
        }),
      ),
    );
    assert.deepEqual([...new Set(responses.map((r) => r.status))], [201]);
    const ids = await Promise.all(responses.map(async (r) => ((await r.json()) as { task: { id: string } }).task.id));
    assert.equal(new Set(ids).size, 200);
    const until = Date.now() + 30_000;
    let done = 0;
    while (Date.now() < until) {
      done = (await t.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM tasks WHERE id = ANY($1::uuid[]) AND status = 'completed'`, [ids])).rows[0]!.n;
      if (done === 200) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(done, 200, 'all completed');
    assert.equal(handled.size, 200);
    assert.ok([...handled.values()].every((n) => n === 1), 'no handler ran twice');
    const completions = await t.db.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM system_events WHERE event_type = 'task.completed' AND subject_id = ANY($1::text[])`,
      [ids],
    );
    assert.equal(completions.rows[0]!.n, 200, 'one completion event per task');
  });
});
