import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { FabricError } from '../src/errors/index.js';
import type { Task } from '../src/queue/index.js';
import { countRows, startTestApp, type TestApp } from './support/app.js';
import { ENGINE } from './support/engine.js';
import { provisionAgent, submit } from './support/queue.js';

describe(`onSubmit hooks (${ENGINE})`, () => {
  let t: TestApp;
  const seen: { sub: string; tasks: Task[]; inTx: boolean }[] = [];
  before(async () => {
    t = await startTestApp({
      queue: {
        onSubmit: [
          async (tx, actor, tasks) => {
            const r = await tx.query<{ n: number }>(`SELECT count(*)::int AS n FROM tasks WHERE id = ANY ($1::uuid[])`, [tasks.map((x) => x.id)]);
            seen.push({ sub: actor.sub, tasks: [...tasks], inTx: r.rows[0]!.n === tasks.length });
          },
          async (_tx, _actor, tasks) => {
            if (tasks.some((x) => x.type === 'refuse')) throw new FabricError(429, 'quota_exceeded', 'refused by the test hook');
          },
        ],
      },
    });
  });
  after(async () => t?.close());

  it('hooks run in order inside the submit transaction and see the written tasks with their ids', async () => {
    const agent = await provisionAgent(t);
    const res = await submit(t, { agent_id: agent, type: 'ok', estimated_tokens: 10 });
    assert.equal(res.statusCode, 201);
    const last = seen.at(-1)!;
    assert.equal(last.tasks[0]!.id, res.json().task.id);
    assert.equal(last.tasks[0]!.estimated_tokens, 10);
    assert.equal(last.inTx, true, 'the rows are visible to the hook');
    assert.equal(last.sub, 'test-admin');
  });

  it('a hook that throws rolls the whole submit back with its error (batch too)', async () => {
    const agent = await provisionAgent(t);
    const before = await countRows(t.db, 'tasks');
    const res = await submit(t, { agent_id: agent, type: 'refuse' });
    assert.equal(res.statusCode, 429);
    assert.equal(res.json().error.code, 'quota_exceeded');
    const batch = await t.app.inject({ method: 'POST', url: '/api/tasks/batch', headers: await t.auth('admin'), payload: { tasks: [{ agent_id: agent, type: 'ok' }, { agent_id: agent, type: 'refuse' }] } });
    assert.equal(batch.statusCode, 429);
    assert.equal(await countRows(t.db, 'tasks'), before, 'nothing was stored');
    assert.equal(await countRows(t.db, 'system_events', "event_type = 'task.queued' AND data->>'type' = 'refuse'"), 0, 'no event either');
  });
});
