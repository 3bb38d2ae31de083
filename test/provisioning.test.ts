import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { withTransaction } from '../src/db/index.js';
import { loadConfig } from '../src/config/index.js';
import { provisionAgent, ProvisionAgentBody } from '../src/tenancy/index.js';
import { createLogger, logger, setLogger } from '../src/telemetry/index.js';
import { countRows, startTestApp, type TestApp } from './support/app.js';
import { ENGINE, pgUrl } from './support/engine.js';

const TABLES = ['agents', 'agent_quotas', 'ledger_entries', 'system_events'] as const;
const actor = { sub: 'test-admin', role: 'admin' };
const quotaDefaults = loadConfig({}).quotaDefaults;

async function rowsIn(t: TestApp): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const table of TABLES) out[table] = await countRows(t.db, table, table === 'system_events' ? "event_type <> 'tenant.created'" : 'true');
  return out;
}
const empty = Object.fromEntries(TABLES.map((t) => [t, 0]));

describe(`provisioning is one transaction (${ENGINE})`, () => {
  let t: TestApp;
  before(async () => (t = await startTestApp()));
  after(async () => t.close());

  it('POST /api/agents/provision creates agent, quota, ledger entry and event', async () => {
    const res = await t.app.inject({
      method: 'POST',
      url: '/api/agents/provision',
      headers: await t.auth('operator'),
      payload: { name: 'lead-bot', model: 'gpt-4o-mini', quota: { monthly_token_limit: 1000 } },
    });
    assert.equal(res.statusCode, 201, res.body);
    const body = res.json();
    assert.equal(body.agent.name, 'lead-bot');
    assert.equal(body.agent.isolation.memory_mb, 512);
    assert.equal(body.quota.monthly_token_limit, 1000);
    assert.equal(body.quota.storage_limit_bytes, 5 * 1024 ** 3);
    assert.equal(body.quota.tokens_pct, 0);
    for (const table of TABLES) {
      const col = table === 'agents' ? 'id' : 'agent_id';
      assert.equal(await countRows(t.db, table, `${col} = $1`, [body.agent.id]), 1, table);
    }
    const ledger = await t.db.query<{ entry_type: string; request_id: string }>('SELECT entry_type, request_id FROM ledger_entries WHERE agent_id = $1', [body.agent.id]);
    assert.equal(ledger.rows[0]!.entry_type, 'provision');
    assert.equal(ledger.rows[0]!.request_id, res.headers['x-request-id']);
  });

  for (const step of [1, 2, 3, 4] as const) {
    it(`an error injected after step ${step} of 4 leaves 0 rows in all four tables`, async () => {
      const beforeRows = await rowsIn(t);
      const body = ProvisionAgentBody.parse({ name: `fail-${step}`, model: 'm' });
      await assert.rejects(
        withTransaction(t.db, (tx) =>
          provisionAgent(tx, actor, 'default', body, {
            quotaDefaults,
            afterStep: async (s) => {
              if (s === step) throw new Error(`injected after step ${s}`);
            },
          }),
        ),
        /injected/,
      );
      assert.deepEqual(await rowsIn(t), beforeRows);
    });
  }

  it('through HTTP: a failure mid-way answers 5xx with the envelope and leaves no rows; the rollback is logged with its stack', async () => {
    const faulty = await startTestApp({
      provision: {
        afterStep: async (s) => {
          if (s === 2) throw new Error('disk on fire');
        },
      },
    });
    const lines: string[] = [];
    const previous = logger();
    setLogger(createLogger({ level: 'info', destination: new Writable({ write: (c, _e, cb) => (lines.push(String(c)), cb()) }) }));
    try {
      const res = await faulty.app.inject({ method: 'POST', url: '/api/agents/provision', headers: await faulty.auth('admin'), payload: { name: 'x', model: 'm' } });
      assert.equal(res.statusCode, 500);
      assert.equal(res.json().error.code, 'internal_error');
      assert.deepEqual(await rowsIn(faulty), empty);
      const rollback = lines.map((l) => JSON.parse(l)).find((l) => String(l.msg).startsWith('ROLLBACK'));
      assert.ok(rollback, 'a ROLLBACK line was logged');
      assert.match(rollback.stack, /disk on fire[\s\S]*at /, 'with the stack');
      assert.equal(rollback.transaction, 'provision agent');
      assert.equal(rollback.request_id, res.headers['x-request-id']);
    } finally {
      setLogger(previous);
      await faulty.close();
    }
  });

  it('terminating the database connection mid-way leaves 0 rows (pg_terminate_backend)', { skip: ENGINE !== 'postgres' && 'PGlite is embedded: there is no server backend to terminate (runs in the PostgreSQL suite)' }, async () => {
    const killer = new pg.Client({ connectionString: pgUrl(t.db.name!) });
    await killer.connect();
    try {
      const beforeRows = await rowsIn(t);
      const body = ProvisionAgentBody.parse({ name: 'terminated', model: 'm' });
      await assert.rejects(
        withTransaction(t.db, (tx) =>
          provisionAgent(tx, actor, 'default', body, {
            quotaDefaults,
            afterStep: async (s, tx2) => {
              if (s !== 2) return;
              const pid = (await tx2.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
              await killer.query('SELECT pg_terminate_backend($1)', [pid]);
            },
          }),
        ),
      );
      assert.deepEqual(await rowsIn(t), beforeRows);
      // the pool replaced the dead connection: the service keeps working
      const res = await t.app.inject({ method: 'POST', url: '/api/agents/provision', headers: await t.auth('admin'), payload: { name: 'after-kill', model: 'm' } });
      assert.equal(res.statusCode, 201, res.body);
    } finally {
      await killer.end();
    }
  });

  it('a connection terminated during an HTTP provision answers 503 database_unavailable, commits nothing', { skip: ENGINE !== 'postgres' && 'needs a PostgreSQL server backend' }, async () => {
    let dbName = '';
    const sabotaged = await startTestApp({
      provision: {
        afterStep: async (s, tx) => {
          if (s !== 2) return;
          const pid = (await tx.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
          const killer = new pg.Client({ connectionString: pgUrl(dbName) });
          await killer.connect();
          await killer.query('SELECT pg_terminate_backend($1)', [pid]);
          await killer.end();
        },
      },
    });
    dbName = sabotaged.db.name!;
    try {
      const res = await sabotaged.app.inject({ method: 'POST', url: '/api/agents/provision', headers: await sabotaged.auth('admin'), payload: { name: 'x', model: 'm' } });
      assert.equal(res.statusCode, 503, res.body);
      assert.equal(res.json().error.code, 'database_unavailable');
      assert.deepEqual(await rowsIn(sabotaged), empty);
    } finally {
      await sabotaged.close();
    }
  });
});

describe(`history rows cannot point across tenants (${ENGINE})`, () => {
  let t: TestApp;
  before(async () => (t = await startTestApp()));
  after(async () => t.close());

  it('a ledger entry or event naming an agent of another tenant is refused by the database', async () => {
    const res = await t.app.inject({ method: 'POST', url: '/api/agents/provision', headers: await t.auth('admin'), payload: { name: 'a', model: 'm' } });
    const agentId = res.json().agent.id;
    await t.db.query("INSERT INTO tenants (id, name) VALUES ('other', 'Other')");
    await assert.rejects(t.db.query("INSERT INTO ledger_entries (tenant_id, agent_id, entry_type) VALUES ('other', $1, 'usage')", [agentId]), (e: { code?: string }) => e.code === '23503');
    await assert.rejects(
      t.db.query("INSERT INTO system_events (tenant_id, agent_id, event_type, subject_type, subject_id) VALUES ('other', $1, 'x', 'agent', $2)", [agentId, agentId]),
      (e: { code?: string }) => e.code === '23503',
    );
  });
});
