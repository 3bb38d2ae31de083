import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { withTransaction } from '../src/db/index.js';
import { recordEvent, type SystemEvent } from '../src/events/index.js';
import { startTestApp, type TestApp } from './support/app.js';
import { ENGINE } from './support/engine.js';
import { SseStream } from './support/sse.js';

const maxId = async (t: TestApp) => (await t.db.query<{ m: number }>('SELECT coalesce(max(id), 0) AS m FROM system_events')).rows[0]!.m;

describe(`event streams (${ENGINE})`, () => {
  let t: TestApp;
  let base: string;
  const streams: SseStream[] = [];
  before(async () => {
    t = await startTestApp({ events: { heartbeatMs: 150, settleMs: 20 } });
    await t.app.listen({ port: 0, host: '127.0.0.1' });
    base = `http://127.0.0.1:${(t.app.server.address() as AddressInfo).port}`;
  });
  after(async () => {
    for (const s of streams) s.close();
    await t.close();
  });

  const open = async (query: string, headers: Record<string, string>) => {
    const s = await SseStream.open(`${base}/api/events${query}`, headers);
    streams.push(s);
    return s;
  };
  const admin = (tenant = 'default') => t.auth('admin', { tenant });
  async function provision(name: string, tenant = 'default'): Promise<string> {
    const res = await t.app.inject({ method: 'POST', url: '/api/agents/provision', headers: await admin(tenant), payload: { name, model: 'm' } });
    assert.equal(res.statusCode, 201, res.body);
    return res.json().agent.id;
  }
  async function patch(id: string, i: number, tenant = 'default'): Promise<void> {
    const res = await t.app.inject({ method: 'PATCH', url: `/api/agents/${id}`, headers: await admin(tenant), payload: { description: `rev ${i}` } });
    assert.equal(res.statusCode, 200, res.body);
  }
  async function storedIds(where: string, params: unknown[]): Promise<number[]> {
    return (await t.db.query<{ id: number }>(`SELECT id FROM system_events WHERE ${where} ORDER BY id`, params)).rows.map((r) => r.id);
  }
  const ids = (s: SseStream) => s.events().map((e) => e.id);

  it('sends the stored backlog, then live events, as SSE frames with the right headers', async () => {
    const a = await provision('sse-a');
    const s = await open('?last_event_id=0', await t.auth('viewer'));
    assert.equal(s.response.status, 200);
    assert.match(s.response.headers.get('content-type')!, /^text\/event-stream/);
    assert.equal(s.response.headers.get('cache-control'), 'no-cache');
    assert.equal(s.response.headers.get('x-accel-buffering'), 'no');
    assert.ok(s.response.headers.get('x-request-id'));
    const stored = await storedIds('tenant_id = $1', ['default']);
    await s.untilEvents(stored.length);
    assert.deepEqual(ids(s), stored);
    const frame = s.frames.find((f) => f.data && JSON.parse(f.data).subject_id === a)!;
    const body = JSON.parse(frame.data!);
    assert.equal(frame.id, String(body.id));
    assert.equal(frame.event, 'agent.provisioned');
    assert.deepEqual(Object.keys(body).sort(), ['agent_id', 'created_at', 'data', 'event_type', 'id', 'subject_id', 'subject_type']);
    assert.equal(body.agent_id, a);
    await patch(a, 1);
    await s.untilEvents(stored.length + 1);
    const live = s.events().at(-1)!;
    assert.deepEqual([live.event_type, live.subject_type, live.subject_id], ['agent.updated', 'agent', a]);
    assert.ok(live.id > stored.at(-1)!);
    assert.deepEqual(live.data, { fields: ['description'] });
    s.close();
  });

  it('without a resume point, sends only events after it connected', async () => {
    const a = await provision('sse-new');
    const s = await open('', await admin());
    await patch(a, 2);
    await s.untilEvents(1);
    await sleep(100);
    assert.deepEqual(s.events().map((e) => [e.event_type, e.subject_id]), [['agent.updated', a]]);
    s.close();
  });

  it('delivers 50 racing changes exactly once, in id order; Last-Event-ID resumes without gaps or repeats', async () => {
    const agents = await Promise.all([1, 2, 3, 4, 5].map((i) => provision(`racer-${i}`)));
    const start = await maxId(t);
    const first = await open(`?last_event_id=${start}`, await admin());
    const burst = Promise.all(Array.from({ length: 50 }, (_, i) => patch(agents[i % 5]!, i)));
    await sleep(5);
    const during = await open(`?last_event_id=${start}`, await admin()); // opened while the burst commits
    await burst;
    const expected = await storedIds('tenant_id = $1 AND id > $2', ['default', start]);
    assert.equal(expected.length, 50);
    for (const s of [first, during]) {
      await s.untilEvents(50);
      await sleep(150);
      assert.deepEqual(ids(s), expected);
      s.close();
    }
    const mid = expected[19]!;
    const byHeader = await open('', { ...(await admin()), 'last-event-id': String(mid) });
    const byQuery = await open(`?last_event_id=${mid}`, await admin());
    for (const s of [byHeader, byQuery]) {
      await s.untilEvents(30);
      await sleep(100);
      assert.deepEqual(ids(s), expected.slice(20));
      s.close();
    }
  });

  it('holds a later id back until an earlier transaction commits; a rolled-back id does not stall the stream', async () => {
    const probe = (name: string): SystemEvent => ({ tenantId: 'default', eventType: 'probe.tick', subjectType: 'probe', subjectId: name });
    const s = await open('?subject_type=probe', await admin());
    await assert.rejects(
      withTransaction(t.db, async (tx) => {
        await recordEvent(tx, probe('rolled-back'));
        throw new Error('boom');
      }, { name: 'probe rollback' }),
    );
    await withTransaction(t.db, (tx) => recordEvent(tx, probe('after-rollback')), { name: 'probe' });
    await s.untilEvents(1);
    assert.equal(s.events()[0]!.subject_id, 'after-rollback');
    if (ENGINE === 'pglite') return s.close(); // PGlite runs one transaction at a time: commits cannot interleave
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let slowId = 0;
    const slow = withTransaction(t.db, async (tx) => {
      slowId = await recordEvent(tx, probe('slow'));
      await gate;
    }, { name: 'probe slow' });
    while (!slowId) await sleep(5);
    const fastId = await withTransaction(t.db, (tx) => recordEvent(tx, probe('fast')), { name: 'probe fast' });
    assert.ok(fastId > slowId);
    await sleep(300);
    assert.equal(s.events().length, 1, 'the later id waits for the earlier one');
    release();
    await slow;
    await s.untilEvents(3);
    assert.deepEqual(s.events().map((e) => e.subject_id), ['after-rollback', 'slow', 'fast']);
    assert.deepEqual(ids(s).slice(1), [slowId, fastId]);
    s.close();
  });

  it("never shows another tenant's events; platform_admin chooses the tenant", async () => {
    const pa = await t.auth('platform_admin');
    assert.equal((await t.app.inject({ method: 'POST', url: '/api/tenants', headers: pa, payload: { id: 'other', name: 'Other' } })).statusCode, 201);
    const theirs = await provision('theirs', 'other');
    const mine = await provision('mine');
    const s = await open('?last_event_id=0', await admin());
    const foreign = await open('?last_event_id=0', { ...pa, 'x-fabric-tenant': 'other' });
    await patch(theirs, 1, 'other');
    await patch(mine, 1);
    const stored = await storedIds('tenant_id = $1', ['default']);
    await s.untilEvents(stored.length);
    await sleep(100);
    assert.deepEqual(ids(s), stored);
    assert.ok(!s.events().some((e) => e.subject_id === theirs || e.agent_id === theirs || e.subject_id === 'other'));
    const storedOther = await storedIds('tenant_id = $1', ['other']);
    await foreign.untilEvents(storedOther.length);
    assert.deepEqual(ids(foreign), storedOther);
    assert.ok(foreign.events().some((e) => e.subject_id === theirs));
    s.close();
    foreign.close();
  });

  it('an agent token streams only its own events; anything else is refused before the stream starts', async () => {
    const a = await provision('self-streamer');
    const b = await provision('someone-else');
    await patch(a, 1);
    await patch(b, 1);
    const asA = await t.auth('agent', { sub: a });
    for (const q of [`?agent_id=${b}`, `?agent_id=${b}&last_event_id=0`]) {
      const res = await fetch(`${base}/api/events${q}`, { headers: asA });
      assert.equal(res.status, 403);
      assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'forbidden');
    }
    const notAnAgent = await fetch(`${base}/api/events`, { headers: await t.auth('agent', { sub: 'not-a-uuid' }) });
    assert.equal(notAnAgent.status, 403);
    assert.equal((await fetch(`${base}/api/events`)).status, 401);
    assert.equal((await fetch(`${base}/api/events?last_event_id=x`, { headers: await admin() })).status, 400);
    assert.equal((await fetch(`${base}/api/events`, { headers: { ...(await admin()), 'last-event-id': '-1' } })).status, 400);
    assert.equal((await fetch(`${base}/api/events?agent_id=nope`, { headers: await admin() })).status, 400);
    const own = await open('?last_event_id=0', asA);
    const explicit = await open(`?last_event_id=0&agent_id=${a}`, asA);
    const expected = await storedIds('agent_id = $1', [a]);
    for (const s of [own, explicit]) {
      await s.untilEvents(expected.length);
      assert.deepEqual(ids(s), expected);
      assert.ok(s.events().every((e) => e.agent_id === a));
      s.close();
    }
  });

  it('filters by agent_id and subject_type', async () => {
    const a = await provision('filtered');
    await patch(a, 1);
    const byAgent = await open(`?last_event_id=0&agent_id=${a}`, await t.auth('member'));
    const bySubject = await open('?last_event_id=0&subject_type=tenant', await t.auth('operator'));
    const forAgent = await storedIds('tenant_id = $1 AND agent_id = $2', ['default', a]);
    const forTenant = await storedIds('tenant_id = $1 AND subject_type = $2', ['default', 'tenant']);
    assert.equal(forAgent.length, 2);
    await byAgent.untilEvents(2);
    await patch(a, 2);
    await byAgent.untilEvents(3);
    assert.deepEqual(ids(byAgent).slice(0, 2), forAgent);
    assert.ok(byAgent.events().every((e) => e.agent_id === a));
    await sleep(100);
    assert.deepEqual(ids(bySubject), forTenant);
    byAgent.close();
    bySubject.close();
  });

  it('sends a keepalive comment every heartbeat interval', async () => {
    const s = await open('', await admin());
    await s.until((x) => x.frames.filter((f) => f.comment === 'keepalive').length >= 2, 3000, 'two keepalives');
    s.close();
  });

  it('forgets a client that disconnects', async () => {
    const hub = t.app.eventHub;
    const waitFor = async (n: number) => {
      for (let i = 0; hub.clientCount !== n; i++) {
        assert.ok(i < 200, `clientCount is ${hub.clientCount}, want ${n}`);
        await sleep(10);
      }
    };
    for (const s of streams) s.close(); // also any left open by a failed test above
    await waitFor(0);
    const opened = await Promise.all([1, 2, 3].map(async () => open('?last_event_id=0', await admin())));
    await waitFor(3);
    for (const s of opened) s.close();
    await waitFor(0);
  });

  it('documents the route in OpenAPI as text/event-stream', async () => {
    const doc = (await t.app.inject({ method: 'GET', url: '/openapi.json' })).json();
    const op = doc.paths['/api/events'].get;
    assert.ok(op.responses['200'].content['text/event-stream']);
    assert.deepEqual(op.parameters.map((p: { name: string }) => p.name).sort(), ['agent_id', 'last_event_id', 'subject_type']);
  });
});

describe(`event streams: slow clients and shutdown (${ENGINE})`, () => {
  it('a client that stops reading loses nothing: it catches up from the database once it drains', async () => {
    const t = await startTestApp({ events: { pageSize: 7, maxBufferedBytes: 4096, settleMs: 20 } });
    try {
      await t.app.listen({ port: 0, host: '127.0.0.1' });
      const url = `http://127.0.0.1:${(t.app.server.address() as AddressInfo).port}/api/events?subject_type=bulk`;
      const controller = new AbortController();
      const res = await fetch(url, { headers: await t.auth('admin'), signal: controller.signal }); // body left unread for now
      const start = await maxId(t);
      for (let batch = 0; batch < 4; batch++)
        await t.db.query(
          `WITH e AS (INSERT INTO system_events (tenant_id, event_type, subject_type, subject_id, data)
             SELECT 'default', 'bulk.tick', 'bulk', g::text, jsonb_build_object('pad', repeat('x', 40000)) FROM generate_series(1, 50) g RETURNING id)
           SELECT count(pg_notify('fabric_events', '{}')) FROM e`,
        );
      await sleep(500); // the socket fills up while nobody reads
      const s = SseStream.read(res, controller);
      await s.untilEvents(200, 20_000);
      await sleep(100);
      const expected = (await t.db.query<{ id: number }>('SELECT id FROM system_events WHERE id > $1 ORDER BY id', [start])).rows.map((r) => r.id);
      assert.deepEqual(s.events().map((e) => e.id), expected);
      s.close();
    } finally {
      await t.close();
    }
  });

  it('closing the app ends open streams instead of waiting for them', async () => {
    const t = await startTestApp();
    await t.app.listen({ port: 0, host: '127.0.0.1' });
    const s = await SseStream.open(`http://127.0.0.1:${(t.app.server.address() as AddressInfo).port}/api/events`, await t.auth('admin'));
    assert.equal(t.app.eventHub.clientCount, 1);
    await t.close();
    await s.until((x) => x.ended, 5000, 'the end of the stream');
  });
});
