import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { CALLERS_CHANNEL, CallerCache } from '../src/gateway/caller-cache.js';
import type { TokenCaller } from '../src/gateway/caller.js';
import { mintToken } from '../src/auth/index.js';
import { tokenOptions } from './support/app.js';
import { ENGINE } from './support/engine.js';
import { gatewayAgent, runningSession, startGatewayApp, type GatewayApp } from './support/gateway.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const CALLER_READ = /FROM agent_sessions s JOIN tasks t ON t\.id = s\.task_id/;

// The cache is trusted for a minute here: only the database's notices (migration 0021) can make
// a stopped caller be refused within the times these tests allow.
describe(`gateway caller cache (${ENGINE})`, () => {
  let t: GatewayApp;
  let reads = 0;
  before(async () => {
    t = await startGatewayApp({ callerCacheMs: 60_000 });
    const query = t.db.query.bind(t.db);
    t.db.query = ((text: string, params?: readonly unknown[]) => {
      if (CALLER_READ.test(text)) reads++;
      return query(text, params);
    }) as typeof t.db.query;
  });
  after(async () => {
    await t?.close();
  });

  const call = async (token: string, model = 'gpt-4o-mini') => {
    const res = await fetch(`${t.base}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model, messages: [{ role: 'user', content: 'hi' }], max_tokens: 8 }),
    });
    const json = (await res.json()) as { error?: { code: string } };
    return { status: res.status, code: json.error?.code };
  };
  /** Calls until one is refused (at most `ms`): the refusal, how long it took and how many calls still got through. */
  const refusedWithin = async (token: string, ms: number) => {
    const started = Date.now();
    let through = 0;
    for (;;) {
      const r = await call(token);
      if (r.status !== 200) return { ...r, ms: Date.now() - started, through };
      through++;
      assert.ok(Date.now() - started < ms, `still admitted after ${ms} ms (${through} calls): the change was not heard`);
      await sleep(5);
    }
  };
  /** A running session whose caller is in the cache (its first call read it, the next ones did not). */
  const warm = async (agent: string) => {
    const s = await runningSession(t, agent);
    assert.equal((await call(s.token)).status, 200);
    const before = reads;
    for (let i = 0; i < 3; i++) assert.equal((await call(s.token)).status, 200);
    assert.equal(reads, before, 'calls of a known caller read nothing');
    return { ...s, agent };
  };

  it('a warm caller whose session is ended by any writer (here plain SQL) is refused as soon as the notice arrives', async () => {
    const s = await warm(await gatewayAgent(t));
    await t.db.query(`UPDATE agent_sessions SET status = 'completed', ended_at = now() WHERE id = $1`, [s.sessionId]);
    const r = await refusedWithin(s.token, 1000);
    assert.deepEqual([r.status, r.code], [401, 'session_ended']);
    assert.ok(r.through <= 1, `${r.through} calls got through after the commit`);
  });

  it("another agent's token naming a cached session is refused: the cache is keyed by tenant, agent and session", async () => {
    const s = await warm(await gatewayAgent(t));
    const thief = await gatewayAgent(t);
    const forged = await mintToken(tokenOptions, { sub: thief, role: 'agent', tenant: 'default', ttl: 600, extra: { sid: s.sessionId } });
    assert.deepEqual(await call(forged), { status: 401, code: 'session_ended' });
    // the same agent id and session id under another (existing) tenant: not this cache entry
    assert.equal((await t.app.inject({ method: 'POST', url: '/api/tenants', headers: await t.auth('platform_admin'), payload: { id: 'acme', name: 'Acme' } })).statusCode, 201);
    const otherTenant = await mintToken(tokenOptions, { sub: s.agent, role: 'agent', tenant: 'acme', ttl: 600, extra: { sid: s.sessionId } });
    assert.deepEqual(await call(otherTenant), { status: 401, code: 'session_ended' });
    assert.equal((await call(s.token)).status, 200, 'the owner is still served');
  });

  it('an agent token naming its task (X-Fabric-Task-Id) is cached by task, and dropped when the task is cancelled', async () => {
    const agent = await gatewayAgent(t);
    const s = await runningSession(t, agent);
    const token = await mintToken(tokenOptions, { sub: agent, role: 'agent', tenant: 'default', ttl: 600 });
    const byTask = async () => {
      const res = await fetch(`${t.base}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'x-fabric-task-id': s.taskId, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }], max_tokens: 8 }),
      });
      return { status: res.status, code: ((await res.json()) as { error?: { code: string } }).error?.code };
    };
    assert.equal((await byTask()).status, 200);
    const before = reads;
    assert.equal((await byTask()).status, 200);
    assert.equal(reads, before, 'served from memory');
    await t.db.query('UPDATE tasks SET cancel_requested = true WHERE id = $1', [s.taskId]);
    const deadline = Date.now() + 1000;
    let r = await byTask();
    while (r.status === 200 && Date.now() < deadline) r = await byTask();
    assert.deepEqual(r, { status: 403, code: 'task_stopped' });
  });

  it('a warm caller whose task is cancelled through the API is refused 403 task_stopped at once', async () => {
    const agent = await gatewayAgent(t);
    const s = await warm(agent);
    const res = await t.app.inject({ method: 'POST', url: `/api/tasks/${s.taskId}/cancel`, headers: await t.auth('admin'), payload: {} });
    assert.equal(res.statusCode, 200, res.body);
    const r = await refusedWithin(s.token, 1000);
    assert.deepEqual([r.status, r.code], [403, 'task_stopped']);
  });

  it("a change to the agent's models reaches its warm callers: the model taken away is refused", async () => {
    const agent = await gatewayAgent(t);
    const s = await warm(agent);
    const res = await t.app.inject({ method: 'PATCH', url: `/api/agents/${agent}`, headers: await t.auth('admin'), payload: { model: 'text-embedding-3-small' } });
    assert.equal(res.statusCode, 200, res.body);
    const r = await refusedWithin(s.token, 1000);
    assert.deepEqual([r.status, r.code], [403, 'model_not_allowed']);
  });

  it('the tables announce only the changes to a callable row: a notice per change, none for heartbeats or tasks not running', async () => {
    const heard: string[] = [];
    const stop = await t.db.listen(CALLERS_CHANNEL, (p) => heard.push(p));
    try {
      const agent = await gatewayAgent(t);
      const a = await runningSession(t, agent);
      const b = await runningSession(t, agent);
      await t.db.query(`UPDATE tasks SET lease_expires_at = now() + interval '2 hours', revision = revision + 1 WHERE id = $1`, [a.taskId]); // a heartbeat
      await t.db.query(`UPDATE tasks SET status = 'running' WHERE id = $1`, [a.taskId]); // no change
      await t.db.query(`UPDATE agents SET updated_at = now() WHERE id = $1`, [agent]); // not a caller's column
      await t.db.query(`UPDATE tasks SET cancel_requested = true WHERE id = $1`, [a.taskId]);
      await t.db.query(`UPDATE tasks SET status = 'cancelled', finished_at = now() WHERE id = $1`, [a.taskId]);
      await t.db.query(`UPDATE tasks SET status = 'dead_lettered' WHERE id = $1`, [a.taskId]); // not running before: none
      await t.db.query(`UPDATE agent_sessions SET status = 'killed' WHERE id = $1`, [b.sessionId]);
      await t.db.query(`UPDATE tasks SET status = 'queued', attempts = 2, lease_owner = NULL, lease_expires_at = NULL WHERE id = $1`, [b.taskId]);
      const c = await runningSession(t, agent);
      await t.db.query(`UPDATE tasks SET attempts = attempts + 1 WHERE id = $1`, [c.taskId]); // another attempt, still running
      await t.db.query(`DELETE FROM agent_sessions WHERE id = $1`, [c.sessionId]);
      await t.db.query(`UPDATE agents SET config = config || '{"models": []}' WHERE id = $1`, [agent]);
      const deadline = Date.now() + 5000;
      while (heard.at(-1) !== `agent:${agent}` && Date.now() < deadline) await sleep(10);
      // notices come in commit order: once the last has come, any stray one would be here
      const [ta, tb, tc] = [`task:${a.taskId}`, `task:${b.taskId}`, `task:${c.taskId}`];
      assert.deepEqual(heard, [ta, ta, tb, tb, tc, tc, `agent:${agent}`]);
    } finally {
      await stop();
    }
  });

  it('a read that overlaps a notice is not kept; an entry lives at most its TTL; a full cache starts over', async () => {
    const agent = await gatewayAgent(t);
    const s = await runningSession(t, agent);
    const caller: TokenCaller = { tenantId: 'default', agentId: agent, sessionId: s.sessionId, taskId: null, expiresAt: Date.now() + 60_000 };
    const cache = new CallerCache(t.db, 150, 2);
    cache.start();
    try {
      const deadline = Date.now() + 5000;
      // LISTEN in place: a read is kept
      while (cache.size === 0 && Date.now() < deadline) {
        await cache.load(caller);
        await sleep(10);
      }
      assert.equal(cache.size, 1);
      cache.changed(`task:${s.taskId}`);
      assert.equal(cache.size, 0, 'a notice naming its task drops it');
      // a notice while the read is in flight: the row read may predate the change
      const loading = cache.load(caller);
      cache.changed('task:00000000-0000-4000-8000-000000000000');
      assert.equal((await loading).taskId, s.taskId);
      assert.equal(cache.size, 0, 'not kept');
      await cache.load(caller);
      assert.equal(cache.size, 1);
      cache.changed(`agent:${agent}`);
      assert.equal(cache.size, 0, 'a notice naming its agent drops it');
      await cache.load(caller);
      await sleep(200);
      const before = reads;
      await cache.load(caller);
      assert.equal(reads, before + 1, 'read again after its TTL');
      const other = await runningSession(t, agent);
      const third = await runningSession(t, agent);
      await cache.load({ ...caller, sessionId: other.sessionId });
      assert.equal(cache.size, 2);
      await cache.load({ ...caller, sessionId: third.sessionId });
      assert.equal(cache.size, 1, 'at its bound the cache is emptied, then fills again');
      cache.changed('');
      assert.equal(cache.size, 0, 'a notice without a name drops everything');
    } finally {
      await cache.close();
    }
  });

  it('when the LISTEN connection drops, everything kept is dropped and nothing is kept until it is back', async () => {
    const agent = await gatewayAgent(t);
    const s = await runningSession(t, agent);
    const caller: TokenCaller = { tenantId: 'default', agentId: agent, sessionId: s.sessionId, taskId: null, expiresAt: Date.now() + 60_000 };
    let onLive: ((live: boolean) => void) | undefined;
    const db = { ...t.db, listen: async (_c: string, _p: (x: string) => void, live?: (l: boolean) => void) => ((onLive = live), async () => {}) };
    const cache = new CallerCache(db, 60_000);
    cache.start();
    await sleep(10);
    await cache.load(caller);
    assert.equal(cache.size, 1);
    onLive!(false);
    assert.equal(cache.size, 0, 'dropped when notices may be missed');
    await cache.load(caller);
    assert.equal(cache.size, 0, 'not kept while LISTEN is down');
    onLive!(true);
    await cache.load(caller);
    assert.equal(cache.size, 1, 'kept again once notices flow');
    await cache.close();
  });

  it('with FABRIC_GATEWAY_CALLER_CACHE_MS=0 every call reads its caller', async () => {
    const cache = new CallerCache(t.db, 0);
    cache.start();
    const agent = await gatewayAgent(t);
    const s = await runningSession(t, agent);
    const caller: TokenCaller = { tenantId: 'default', agentId: agent, sessionId: s.sessionId, taskId: null, expiresAt: Date.now() + 60_000 };
    const before = reads;
    for (let i = 0; i < 3; i++) await cache.load(caller);
    assert.equal(reads, before + 3);
    assert.equal(cache.size, 0);
    await cache.close();
  });
});
