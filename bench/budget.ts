/**
 * bench/budget — the overhead of the pre-execution quota check (isolation-runtime-prd §5:
 * < 10 ms p99). The same database, two HTTP apps in one process: one whose scheduler runs
 * the budget hook (every submit carries estimated_tokens, so each one is checked and
 * reserves against its agent's quota and a tenant budget), one without it (the one-statement
 * submit). Submits alternate between the two, one at a time, so drift hits both alike; the
 * table shows each side's latency (client send → response, app.inject) and the difference.
 *
 *   npm run bench:budget
 *   env: BENCH_ENGINES=pglite,postgres, BENCH_N=2000 (submits per side), BENCH_PG_URL
 */
import { createTokenVerifier, mintToken } from '../src/auth/index.js';
import { budgetSubmitHook } from '../src/budget/index.js';
import { loadConfig } from '../src/config/index.js';
import { migrate } from '../src/db/index.js';
import { buildApp, type App } from '../src/http/index.js';
import { AgentScheduler } from '../src/queue/index.js';
import { createLogger, setLogger } from '../src/telemetry/index.js';
import { ensureDefaultTenant } from '../src/tenancy/index.js';
import { openBenchDb } from './lib/db.js';
import { fmt, percentile } from './lib/stats.js';

setLogger(createLogger({ level: 'warn' }));
const SECRET = 'bench-secret-that-is-long-enough-for-hs256-0123456789';
const TOKENS = { secret: SECRET, issuer: 'agent-fabric', audience: 'agent-fabric' };
const N = Number(process.env.BENCH_N ?? 2000);
const ENGINES = (process.env.BENCH_ENGINES ?? 'pglite,postgres').split(',').map((s) => s.trim());

async function measure(engine: string): Promise<void> {
  const { db, drop } = await openBenchDb(engine, 'bench_budget');
  try {
    await migrate(db);
    await ensureDefaultTenant(db);
    const config = loadConfig({ FABRIC_JWT_SECRET: SECRET });
    const verifyToken = createTokenVerifier(TOKENS);
    const plain: App = await buildApp({ db, config, verifyToken, scheduler: new AgentScheduler(db) });
    const checked: App = await buildApp({ db, config, verifyToken, scheduler: new AgentScheduler(db, { onSubmit: [budgetSubmitHook()] }) });
    const auth = { authorization: `Bearer ${await mintToken(TOKENS, { sub: 'bench', role: 'admin', tenant: 'default', ttl: '1h' })}` };
    const agents: string[] = [];
    for (let i = 0; i < 10; i++) {
      const r = await plain.inject({
        method: 'POST',
        url: '/api/agents/provision',
        headers: auth,
        payload: { name: `bench-${i}`, model: 'm', isolation: { level: 'none' }, max_queue_depth: 100_000, quota: { monthly_token_limit: 1e12 } },
      });
      agents.push(r.json().agent.id);
    }
    await checked.inject({ method: 'POST', url: '/api/budgets', headers: auth, payload: { scope: 'tenant', max_tokens_per_day: 1e12, max_cost_per_day_usd: 1000 } });
    const lat = { plain: [] as number[], checked: [] as number[] };
    const one = async (app: App, side: keyof typeof lat, i: number, record: boolean) => {
      const t0 = performance.now();
      const r = await app.inject({ method: 'POST', url: '/api/tasks', headers: auth, payload: { agent_id: agents[i % agents.length], type: 'b', estimated_tokens: 100 } });
      if (r.statusCode !== 201) throw new Error(`submit ${side}: ${r.statusCode} ${r.body}`);
      if (record) lat[side].push(performance.now() - t0);
    };
    for (let i = 0; i < 200; i++) await one(i % 2 ? plain : checked, i % 2 ? 'plain' : 'checked', i, false); // warm-up
    for (let i = 0; i < 2 * N; i++) await one(i % 2 ? plain : checked, i % 2 ? 'plain' : 'checked', i, true);
    const p = (side: keyof typeof lat, q: number) => percentile(lat[side], q);
    console.log(`\n## ${engine === 'pglite' ? 'PGlite' : 'PostgreSQL'}\n`);
    console.log('| submit latency (ms, lower is better) | with the budget check | without | overhead | ratio |');
    console.log('| --- | ---: | ---: | ---: | ---: |');
    for (const q of [50, 99] as const)
      console.log(`| p${q} | ${fmt(p('checked', q), 2)} | ${fmt(p('plain', q), 2)} | ${fmt(p('checked', q) - p('plain', q), 2)} | ${fmt(p('checked', q) / p('plain', q), 2)}× |`);
    const overhead = p('checked', 99) - p('plain', 99);
    console.log(`\n${N} submits per side, alternating, one at a time; target: check overhead < 10 ms p99: ${overhead < 10 ? 'met' : 'MISSED'} (${fmt(overhead, 2)} ms)`);
    await plain.close();
    await checked.close();
  } finally {
    await drop();
  }
}

console.log(`# bench/budget — ${new Date().toISOString()}`);
for (const engine of ENGINES) await measure(engine);
