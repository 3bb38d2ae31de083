import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type { ManualClock } from '../src/clock/index.js';
import type { BillingService } from '../src/billing/index.js';
import { countRows, type TestApp } from './support/app.js';
import { meter, newTenant, startBillingApp } from './support/billing.js';
import { seededRandom } from './support/random.js';
import { ENGINE } from './support/engine.js';
import type { recordingNotifier } from './support/queue.js';

const GIB = 1024 ** 3;
const MARCH = '2026-03-01T00:00:00Z';
const FEB = '2026-02-01T00:00:00Z';

type Dim = { dimension: string; unit: string; events: number; consumed: number; included: number | null; remaining: number | null; overage_quantity: number; overage_charge_micros: number; cost_micros: number; projected: { consumed: number; overage_quantity: number; overage_charge_micros: number } };
const dim = (report: { dimensions: Dim[] }, d: string) => report.dimensions.find((x) => x.dimension === d)!;

/** A minimal RFC 4180 reader (quoted fields with doubled quotes). */
function parseCsv(text: string): Record<string, string>[] {
  const rows: string[][] = [];
  let field = '';
  let row: string[] = [];
  let quoted = false;
  const endField = () => {
    row.push(field);
    field = '';
  };
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        field += '"';
        i++;
      } else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') endField();
    else if (c === '\r' && text[i + 1] === '\n') {
      endField();
      rows.push(row);
      row = [];
      i++;
    } else field += c;
  }
  const [header, ...body] = rows;
  return body.map((r) => Object.fromEntries(header!.map((h, i) => [h, r[i]!])));
}

describe(`usage report, overage and export (${ENGINE})`, () => {
  let t: TestApp;
  let clock: ManualClock;
  let notifier: ReturnType<typeof recordingNotifier>;
  let billing: BillingService;
  before(async () => {
    // 10 of March's 31 days have passed: the projection multiplies by 31/10.
    ({ t, clock, notifier, billing } = await startBillingApp('2026-03-11T00:00:00Z'));
  });
  after(async () => t?.close());

  it('overage: work continues past the included quantity, is charged at the rate, and is notified once per period', async () => {
    clock.set(new Date('2026-03-11T00:00:00Z'));
    const tn = await newTenant(t, 'over');
    const agent = await tn.agent();
    await tn.call('admin', 'POST', '/api/subscription', { plan_id: 'pro' }); // 5,000,000 tokens included, 1,500 µUSD per 1,000 past that
    await meter(t, [{ tenant_id: 'over', agent_id: agent, dimension: 'tokens', quantity: 4_000_000, period_start: MARCH }]);
    assert.equal(await billing.checkOverage(t.db), 0);
    assert.equal(notifier.alerts.length, 0);

    await meter(t, [{ tenant_id: 'over', agent_id: agent, dimension: 'tokens', quantity: 1_500_001, period_start: MARCH }]);
    assert.equal((await tn.submit(agent)).statusCode, 201, 'a soft limit: tasks are still accepted in overage');
    assert.equal(await billing.checkOverage(t.db), 1);
    assert.equal(notifier.alerts.length, 1);
    assert.equal(notifier.alerts[0]!.title, 'Overage started');
    assert.equal(notifier.alerts[0]!.tenantId, 'over');
    assert.equal(notifier.alerts[0]!.fields!.dimension, 'tokens');
    const events = await t.db.query<{ data: { dimension: string; consumed: string } }>(`SELECT data FROM system_events WHERE tenant_id = 'over' AND event_type = 'billing.overage_started'`);
    assert.equal(events.rows.length, 1);
    assert.equal(events.rows[0]!.data.consumed, '5500001');

    let report = (await tn.call('viewer', 'GET', '/api/usage')).json();
    assert.equal(dim(report, 'tokens').overage_quantity, 500_001);
    assert.equal(dim(report, 'tokens').overage_charge_micros, 750_002, 'ceil(500,001 × 1,500 / 1,000) = ceil(750,001.5)');

    await meter(t, [{ tenant_id: 'over', agent_id: agent, dimension: 'tokens', quantity: 999, period_start: MARCH }]);
    assert.equal(await billing.checkOverage(t.db), 0, 'still in overage: no second notice');
    assert.equal(await billing.checkOverage(t.db, 'over'), 0);
    assert.equal(notifier.alerts.length, 1);
    report = (await tn.call('viewer', 'GET', '/api/usage')).json();
    assert.equal(dim(report, 'tokens').overage_charge_micros, 751_500, 'ceil(501,000 × 1,500 / 1,000): rounded once, on the total');

    clock.set(new Date('2026-04-02T00:00:00Z'));
    await meter(t, [{ tenant_id: 'over', agent_id: agent, dimension: 'tokens', quantity: 5_000_001, period_start: '2026-04-01T00:00:00Z' }]);
    assert.equal(await billing.checkOverage(t.db), 1, 'a new period, a new notice');
    assert.equal(notifier.alerts.length, 2);
    assert.equal(await countRows(t.db, 'billing_overage_notices', "tenant_id = 'over' AND notified_at IS NOT NULL"), 2);
  });

  it('the report: consumed, included, remaining, overage and charge per dimension, exact to the micro-USD, with a linear projection', async () => {
    clock.set(new Date('2026-03-11T00:00:00Z'));
    const tn = await newTenant(t, 'rep');
    const a = await tn.agent();
    const b = await tn.agent();
    const userA = randomUUID();
    await tn.call('admin', 'POST', '/api/subscription', { plan_id: 'pro' });
    const row = (agent: string, dimension: 'tokens' | 'compute' | 'artifacts' | 'storage', quantity: number, cost: number) =>
      ({ tenant_id: 'rep', agent_id: agent, user_id: agent === a ? userA : null, dimension, quantity, cost_micros: cost, period_start: MARCH });
    await meter(t, [
      row(a, 'tokens', 2_000_000, 1_000_001),
      row(b, 'tokens', 2_500_000, 2_000_003),
      row(a, 'tokens', 1_000_000, 7),
      row(a, 'compute', 100_000_000, 11),
      row(b, 'compute', 90_000_500, 13),
      row(a, 'artifacts', 600, 0),
      row(b, 'artifacts', 500, 0),
      row(a, 'storage', 100 * GIB, 5),
      { tenant_id: 'rep', agent_id: a, dimension: 'tokens', quantity: 42, cost_micros: 42, period_start: FEB },
    ]);

    const res = await tn.call('viewer', 'GET', '/api/usage?period=current');
    assert.equal(res.statusCode, 200, res.body);
    const r = res.json();
    assert.deepEqual(r.period, { name: 'current', start: '2026-03-01T00:00:00.000Z', end: '2026-04-01T00:00:00.000Z', elapsed_fraction: 10 / 31 });
    assert.deepEqual(r.plan, { id: 'pro', name: 'Pro' });
    assert.deepEqual(dim(r, 'tokens'), {
      dimension: 'tokens',
      unit: 'tokens',
      events: 3,
      consumed: 5_500_000,
      included: 5_000_000,
      remaining: 0,
      overage_quantity: 500_000,
      overage_rate_micros: 1500,
      rate_unit: 'per 1,000 tokens',
      overage_charge_micros: 750_000,
      cost_micros: 3_000_011,
      projected: { consumed: 17_050_000, overage_quantity: 12_050_000, overage_charge_micros: 18_075_000 },
    });
    const compute = dim(r, 'compute');
    assert.equal(compute.unit, 'ms');
    assert.equal(compute.included, 180_000_000, '180,000 sandbox seconds in ms');
    assert.equal(compute.overage_quantity, 10_000_500);
    assert.equal(compute.overage_charge_micros, 800_040, '10,000.5 s × 80 µUSD');
    const artifacts = dim(r, 'artifacts');
    assert.equal(artifacts.overage_quantity, 100);
    assert.equal(artifacts.overage_charge_micros, 5_000_000);
    const storage = dim(r, 'storage');
    assert.equal(storage.consumed, 100 * GIB);
    assert.equal(storage.remaining, (36_500 - 100) * GIB);
    assert.equal(storage.overage_quantity, 0);
    assert.deepEqual(r.totals, {
      base_fee_micros: 50_000_000,
      overage_charge_micros: 750_000 + 800_040 + 5_000_000,
      cost_micros: 3_000_011 + 24 + 5,
      total_micros: 50_000_000 + 6_550_040,
      projected_overage_charge_micros: r.dimensions.reduce((s: number, d: Dim) => s + d.projected.overage_charge_micros, 0),
      projected_total_micros: 50_000_000 + r.dimensions.reduce((s: number, d: Dim) => s + d.projected.overage_charge_micros, 0),
    });
    assert.match(r.projection, /linear on elapsed time/);

    // per agent: its own events, and the overage its events added in ledger order
    const ra = (await tn.call('viewer', 'GET', `/api/usage?agent_id=${a}`)).json();
    const rb = (await tn.call('viewer', 'GET', `/api/usage?agent_id=${b}`)).json();
    assert.equal(dim(ra, 'tokens').consumed, 3_000_000);
    assert.equal(dim(ra, 'tokens').overage_quantity, 500_000, "a's last event crossed the allowance");
    assert.equal(dim(rb, 'tokens').overage_quantity, 0);
    assert.equal(dim(rb, 'compute').overage_charge_micros, 800_040);
    assert.equal(dim(ra, 'tokens').remaining, 0, "remaining is the tenant's allowance left");
    assert.equal(ra.totals.base_fee_micros, null, 'the base fee belongs to the tenant report');
    for (const d of ['tokens', 'compute', 'artifacts', 'storage'])
      for (const f of ['consumed', 'overage_quantity', 'overage_charge_micros', 'cost_micros'] as const)
        assert.equal(dim(ra, d)[f] + dim(rb, d)[f], dim(r, d)[f], `${d}.${f}: the agents' reports add up to the tenant's`);
    const ru = (await tn.call('viewer', 'GET', `/api/usage?user_id=${userA}`)).json();
    assert.deepEqual(ru.dimensions, ra.dimensions, "a user's report: the events with its user_id");

    const prev = (await tn.call('viewer', 'GET', '/api/usage?period=previous')).json();
    assert.equal(dim(prev, 'tokens').consumed, 42);
    assert.equal(prev.plan, null, 'no plan priced February (the subscription began in March)');
    assert.equal(dim(prev, 'tokens').projected.consumed, 42, 'a closed period projects to itself');

    const bad = await tn.call('viewer', 'GET', '/api/usage?period=next');
    assert.equal(bad.statusCode, 400);
    assert.equal((await tn.call('agent', 'GET', '/api/usage')).statusCode, 403);
  });

  it('the export: one line per metered event, CSV and JSON lines, streamed, traceable from task to line item', async () => {
    clock.set(new Date('2026-03-11T00:00:00Z'));
    const tn = await newTenant(t, 'exp');
    const agent = await tn.agent();
    await tn.call('admin', 'POST', '/api/subscription', { plan_id: 'free' }); // 100,000 tokens included, 2,000 µUSD per 1,000
    const task = (await tn.submit(agent)).json().task.id as string;
    const session = randomUUID();
    await meter(t, [
      { tenant_id: 'exp', agent_id: agent, task_id: task, attempt: 1, session_id: session, dimension: 'tokens', model: 'gpt-4o-mini, "tuned"', quantity: 99_999, cost_micros: 3, period_start: MARCH, idempotency_key: 'k1', billing_subject: 'ORG' },
      { tenant_id: 'exp', agent_id: agent, task_id: task, attempt: 2, session_id: session, dimension: 'tokens', quantity: 1_501, cost_micros: 4, period_start: MARCH, idempotency_key: 'k2', billing_subject: 'ORG' },
    ]);
    // 2,498 more: three pages of 1,000 when read back
    await t.db.query(
      `INSERT INTO agent_quota_usage (tenant_id, agent_id, dimension, quantity, cost_micros, period_start)
       SELECT 'exp', $1, 'artifacts', 1, g, $2 FROM generate_series(1, 2498) g`,
      [agent, MARCH],
    );

    const csv = await tn.call('viewer', 'GET', '/api/usage/export?period=current&format=csv');
    assert.equal(csv.statusCode, 200);
    assert.match(String(csv.headers['content-type']), /^text\/csv/);
    assert.match(String(csv.headers['content-disposition']), /attachment; filename="usage-exp-current.csv"/);
    assert.equal(csv.headers['content-length'], undefined, 'streamed, not buffered');
    const lines = parseCsv(csv.body);
    assert.equal(lines.length, 2500, 'one line per metered event');
    const [first, second] = lines;
    assert.equal(first!.task_id, task);
    assert.equal(first!.attempt, '1');
    assert.equal(first!.session_id, session);
    assert.equal(first!.model, 'gpt-4o-mini, "tuned"', 'quoted fields survive');
    assert.equal(first!.overage_quantity, '0');
    assert.equal(second!.attempt, '2');
    assert.equal(second!.overage_quantity, '1500', 'the part past the 100,000 included');
    assert.equal(second!.overage_charge_micros, '3000');
    assert.equal(second!.billing_subject, 'ORG');
    assert.equal(second!.unit, 'tokens');
    assert.deepEqual(lines.map((l) => Number(l.id)), [...lines.map((l) => Number(l.id))].sort((x, y) => x - y), 'in ledger order');

    const jsonl = await tn.call('viewer', 'GET', '/api/usage/export?format=jsonl');
    assert.equal(jsonl.statusCode, 200);
    assert.match(String(jsonl.headers['content-type']), /^application\/x-ndjson/);
    const objects = jsonl.body.trim().split('\n').map((l) => JSON.parse(l));
    assert.equal(objects.length, 2500);
    assert.deepEqual(
      objects.map((o) => String(o.id)),
      lines.map((l) => l.id),
    );
    assert.equal(objects[1].overage_charge_micros, 3000);
    assert.equal(objects[1].task_id, task);

    const artifacts = dim((await tn.call('viewer', 'GET', '/api/usage')).json(), 'artifacts');
    const exported = objects.filter((o) => o.dimension === 'artifacts');
    assert.equal(exported.reduce((s, o) => s + o.overage_charge_micros, 0), artifacts.overage_charge_micros);
    assert.equal(exported.reduce((s, o) => s + o.cost_micros, 0), artifacts.cost_micros);
    assert.equal(artifacts.overage_quantity, 2498 - 90);

    const none = await tn.call('viewer', 'GET', `/api/usage/export?format=jsonl&agent_id=${randomUUID()}`);
    assert.equal(none.body, '');
    const empty = await tn.call('viewer', 'GET', '/api/usage/export?period=previous');
    assert.equal(empty.body.split('\r\n')[0]!.split(',')[0], 'id', 'an empty period still has the header');
    assert.equal((await tn.call('viewer', 'GET', '/api/usage/export?format=xml')).statusCode, 400);
  });

  it("a plan's new terms reach its subscribers from their next period; running and past periods keep theirs", async () => {
    clock.set(new Date('2026-03-11T00:00:00Z'));
    const tiny = {
      id: 'tiny',
      name: 'Tiny',
      base_fee_micros: 5,
      dimensions: {
        tokens: { included: 1000, overage_rate_micros: 1000 },
        compute: { included: 0, overage_rate_micros: 0 },
        artifacts: { included: 0, overage_rate_micros: 0 },
        storage: { included: 0, overage_rate_micros: 0 },
      },
      entitlements: { remote_execution: false, max_concurrency: 1 },
    };
    assert.equal((await t.app.inject({ method: 'POST', url: '/api/plans', headers: await t.auth('platform_admin'), payload: tiny })).statusCode, 201);
    const tn = await newTenant(t, 'reprice');
    await tn.call('admin', 'POST', '/api/subscription', { plan_id: 'tiny' });
    await meter(t, [
      { tenant_id: 'reprice', dimension: 'tokens', quantity: 3000, period_start: MARCH },
      { tenant_id: 'reprice', dimension: 'tokens', quantity: 3000, period_start: '2026-04-01T00:00:00Z' },
    ]);
    const doubled = { ...tiny.dimensions, tokens: { included: 1000, overage_rate_micros: 2000 } };
    const patched = await t.app.inject({ method: 'PATCH', url: '/api/plans/tiny', headers: await t.auth('platform_admin'), payload: { dimensions: doubled, base_fee_micros: 6 } });
    assert.equal(patched.statusCode, 200);
    const march = (await tn.call('viewer', 'GET', '/api/usage')).json();
    assert.equal(dim(march, 'tokens').overage_charge_micros, 2000, 'March keeps the terms it started with');
    assert.equal(march.totals.base_fee_micros, 5);
    clock.set(new Date('2026-04-05T00:00:00Z'));
    const april = (await tn.call('viewer', 'GET', '/api/usage')).json();
    assert.equal(dim(april, 'tokens').overage_charge_micros, 4000, 'April is priced with the new rate');
    assert.equal(april.totals.base_fee_micros, 6);
    const previous = (await tn.call('viewer', 'GET', '/api/usage?period=previous')).json();
    assert.equal(dim(previous, 'tokens').overage_charge_micros, 2000, 'a past period is never repriced');
  });

  it("billing periods are months in the tenant's time zone", async () => {
    clock.set(new Date('2026-03-01T03:00:00Z')); // still February in New York
    const tn = await newTenant(t, 'nyc');
    await t.db.query(`UPDATE tenants SET time_zone = 'America/New_York' WHERE id = 'nyc'`);
    const r = (await tn.call('viewer', 'GET', '/api/usage')).json();
    assert.equal(r.period.start, '2026-02-01T05:00:00.000Z');
    assert.equal(r.period.end, '2026-03-01T05:00:00.000Z');
  });

  it('reconciliation: after a randomized workload the report equals the sum of the rows and of the export lines, to the micro-unit', async () => {
    clock.set(new Date('2026-03-20T07:00:00Z'));
    const odd = {
      id: 'odd',
      name: 'Odd rates',
      base_fee_micros: 1,
      dimensions: {
        tokens: { included: 123_457, overage_rate_micros: 7 },
        compute: { included: 17, overage_rate_micros: 13 },
        artifacts: { included: 5, overage_rate_micros: 999_999 },
        storage: { included: 3, overage_rate_micros: 3 },
      },
      entitlements: { remote_execution: true, max_concurrency: null },
    };
    assert.equal((await t.app.inject({ method: 'POST', url: '/api/plans', headers: await t.auth('platform_admin'), payload: odd })).statusCode, 201);
    const tn = await newTenant(t, 'recon');
    await tn.call('admin', 'POST', '/api/subscription', { plan_id: 'odd' });
    const agents = [await tn.agent(), await tn.agent(), await tn.agent()];
    const rand = seededRandom(20260320);
    const dims = ['tokens', 'compute', 'artifacts', 'storage'] as const;
    const rows = Array.from({ length: 400 }, () => {
      const dimension = dims[rand(4)]!;
      const quantity = dimension === 'storage' ? BigInt(rand(2 ** 20)) * BigInt(rand(2 ** 20) + 1) : BigInt(rand(dimension === 'tokens' ? 5000 : 1000));
      return { tenant_id: 'recon', agent_id: agents[rand(3)]!, dimension, quantity, cost_micros: BigInt(rand(1_000_000)), period_start: MARCH };
    });
    await meter(t, rows);

    const report = (await tn.call('viewer', 'GET', '/api/usage')).json();
    const lines = (await tn.call('viewer', 'GET', '/api/usage/export?format=jsonl')).body.trim().split('\n').map((l) => JSON.parse(l));
    assert.equal(lines.length, rows.length);
    const units = { tokens: [1n, 1000n], compute: [1000n, 1000n], artifacts: [1n, 1n], storage: [BigInt(GIB), BigInt(GIB)] } as const;
    let overageTotal = 0n;
    for (const d of dims) {
      const mine = rows.filter((r) => r.dimension === d);
      const consumed = mine.reduce((s, r) => s + r.quantity, 0n);
      const cost = mine.reduce((s, r) => s + r.cost_micros, 0n);
      const included = BigInt(odd.dimensions[d].included) * units[d][0];
      const over = consumed > included ? consumed - included : 0n;
      const rate = BigInt(odd.dimensions[d].overage_rate_micros);
      const charge = (over * rate + units[d][1] - 1n) / units[d][1];
      overageTotal += charge;
      const got = dim(report, d);
      assert.equal(BigInt(got.consumed), consumed, `${d}: consumed = sum of rows`);
      assert.equal(BigInt(got.cost_micros), cost, `${d}: cost = sum of rows`);
      assert.equal(BigInt(got.overage_quantity), over, `${d}: overage`);
      assert.equal(BigInt(got.overage_charge_micros), charge, `${d}: charge, rounded up once on the total`);
      const exported = lines.filter((l) => l.dimension === d);
      assert.equal(exported.reduce((s, l) => s + BigInt(l.quantity), 0n), consumed);
      assert.equal(exported.reduce((s, l) => s + BigInt(l.cost_micros), 0n), cost);
      assert.equal(exported.reduce((s, l) => s + BigInt(l.overage_quantity), 0n), over, `${d}: the lines' overage adds up`);
      assert.equal(exported.reduce((s, l) => s + BigInt(l.overage_charge_micros), 0n), charge, `${d}: the lines' charges add up to the micro-USD`);
      const byAgent = await Promise.all(agents.map(async (a) => dim((await tn.call('viewer', 'GET', `/api/usage?agent_id=${a}`)).json(), d)));
      assert.equal(byAgent.reduce((s, x) => s + BigInt(x.overage_charge_micros), 0n), charge, `${d}: per-agent charges add up`);
    }
    assert.equal(BigInt(report.totals.overage_charge_micros), overageTotal);
    assert.equal(BigInt(report.totals.total_micros), overageTotal + 1n);
    const sql = await t.db.query<{ q: string; c: string }>(`SELECT sum(quantity)::text AS q, sum(cost_micros)::text AS c FROM agent_quota_usage WHERE tenant_id = 'recon'`);
    assert.equal(report.dimensions.reduce((s: bigint, d: Dim) => s + BigInt(d.consumed), 0n), BigInt(sql.rows[0]!.q));
    assert.equal(BigInt(report.totals.cost_micros), BigInt(sql.rows[0]!.c));
  });
});
