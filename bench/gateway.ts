/**
 * bench/gateway — what the model gateway adds to a model call (target: < 2 ms p50 added).
 * One process: the local fake upstream (src/gateway/fake-upstream.ts, no latency) and the
 * fabric's HTTP app listening on 127.0.0.1, its gateway forwarding to the fake. The same
 * chat completion (a short prompt, max_tokens 16, not streamed) is sent, alternately, straight
 * to the fake with the provider key and through the gateway with a session token — so each
 * gateway call does what it does in production with the default configuration: token check,
 * session/task read, worst case held against the agent's credit lease (taken or grown with
 * fabric_gateway_lease when short), forwarding, and metering + model.call event batched with
 * the calls that end within FABRIC_GATEWAY_SETTLE_DELAY_MS (fabric_gateway_settle_leased, after
 * the answer is sent). BENCH_LEASE_CALLS=0 measures the per-call path (fabric_gateway_admit +
 * fabric_gateway_settle). Latency is client send → body read (fetch, keep-alive), one call at a time; then
 * calls/s with BENCH_CONCURRENCY calls in flight (one running task and session per caller),
 * each side alone.
 *
 *   npm run bench:gateway
 *   env: BENCH_ENGINES=pglite,postgres, BENCH_N=1000 (calls per side), BENCH_CONCURRENCY=8,
 *        BENCH_SECONDS=5 (per throughput measure), BENCH_PG_URL, BENCH_LEASE_CALLS (default: the config's)
 */
import { randomUUID } from 'node:crypto';
import { createTokenVerifier, mintToken } from '../src/auth/index.js';
import { loadConfig } from '../src/config/index.js';
import { migrate } from '../src/db/index.js';
import { fakeUpstreamConfig, startFakeUpstream } from '../src/gateway/index.js';
import { buildApp } from '../src/http/index.js';
import { AgentScheduler } from '../src/queue/index.js';
import { createLogger, setLogger } from '../src/telemetry/index.js';
import { ensureDefaultTenant } from '../src/tenancy/index.js';
import { openBenchDb } from './lib/db.js';
import { fmt, percentile } from './lib/stats.js';

setLogger(createLogger({ level: 'warn' }));
const SECRET = 'bench-secret-that-is-long-enough-for-hs256-0123456789';
const TOKENS = { secret: SECRET, issuer: 'agent-fabric', audience: 'agent-fabric' };
const PROVIDER_KEY = 'sk-bench-provider-key';
const N = Number(process.env.BENCH_N ?? 1000);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 8);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const ENGINES = (process.env.BENCH_ENGINES ?? 'pglite,postgres').split(',').map((s) => s.trim());

const BODY = JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'Summarise: the demo is next week.' }], max_tokens: 16 });

async function call(url: string, key: string): Promise<void> {
  const r = await fetch(url, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: BODY });
  const text = await r.text();
  if (r.status !== 200) throw new Error(`${url}: ${r.status} ${text}`);
}

async function throughput(fn: (caller: number) => Promise<void>): Promise<number> {
  const until = performance.now() + SECONDS * 1000;
  let n = 0;
  await Promise.all(Array.from({ length: CONCURRENCY }, async (_, caller) => {
    while (performance.now() < until) {
      await fn(caller);
      n++;
    }
  }));
  return n / SECONDS;
}

async function measure(engine: string): Promise<void> {
  const { db, drop } = await openBenchDb(engine, 'bench_gateway');
  const fake = await startFakeUpstream();
  try {
    await migrate(db);
    await ensureDefaultTenant(db);
    // the gateway's FABRIC_GATEWAY_* settings may be varied from the environment
    const base = loadConfig({ ...Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith('FABRIC_GATEWAY_'))), FABRIC_JWT_SECRET: SECRET });
    const leaseCalls = process.env.BENCH_LEASE_CALLS === undefined ? base.gateway.leaseCalls : Number(process.env.BENCH_LEASE_CALLS);
    const config = { ...base, gateway: { ...base.gateway, upstreams: [fakeUpstreamConfig(fake.url, PROVIDER_KEY)], agentRpm: 0, agentTpm: 0, tenantRpm: 0, tenantTpm: 0, leaseCalls } };
    const app = await buildApp({ db, config, verifyToken: createTokenVerifier(TOKENS), scheduler: new AgentScheduler(db) });
    const url = await app.listen({ port: 0, host: '127.0.0.1' });
    const auth = { authorization: `Bearer ${await mintToken(TOKENS, { sub: 'bench', role: 'admin', tenant: 'default', ttl: '1h' })}` };
    const agent = (await app.inject({ method: 'POST', url: '/api/agents/provision', headers: auth, payload: { name: 'bench', model: 'gpt-4o-mini', isolation: { level: 'none' }, quota: { monthly_token_limit: 1e12, monthly_cost_limit_usd: 1e6 } } })).json().agent.id;
    await app.inject({ method: 'POST', url: '/api/budgets', headers: auth, payload: { scope: 'tenant', max_tokens_per_day: 1e12, max_cost_per_day_usd: 1e6 } });
    // one running task per caller in flight (each a sandbox session making its calls one after another)
    const sessions: string[] = [];
    const tasks: string[] = [];
    for (let i = 0; i < CONCURRENCY; i++) {
      const task = (await app.inject({ method: 'POST', url: '/api/tasks', headers: auth, payload: { agent_id: agent, type: 'bench' } })).json().task.id;
      const sid = randomUUID();
      await db.query(`UPDATE tasks SET status = 'running', attempts = 1, lease_owner = 'bench', lease_expires_at = now() + interval '1 day', ready_at = NULL, sort_key = NULL WHERE id = $1`, [task]);
      await db.query(`INSERT INTO agent_sessions (id, tenant_id, agent_id, task_id, attempt, worker_id, isolation, status) VALUES ($1, 'default', $2, $3, 1, 'bench', 'container', 'running')`, [sid, agent, task]);
      sessions.push(await mintToken(TOKENS, { sub: agent, role: 'agent', tenant: 'default', ttl: '1d', extra: { sid } }));
      tasks.push(task);
    }
    const direct = () => call(`${fake.url}/chat/completions`, PROVIDER_KEY);
    const gateway = (caller = 0) => call(`${url}/v1/chat/completions`, sessions[caller]!);

    const lat = { direct: [] as number[], gateway: [] as number[] };
    for (let i = 0; i < 200; i++) await (i % 2 ? direct() : gateway()); // warm-up (loads the tokenizer's tables)
    for (let i = 0; i < 2 * N; i++) {
      const side = i % 2 ? 'direct' : 'gateway';
      const t0 = performance.now();
      await (side === 'direct' ? direct() : gateway());
      lat[side].push(performance.now() - t0);
    }
    const directRate = await throughput(direct);
    const gatewayRate = await throughput(gateway);
    const p = (side: keyof typeof lat, q: number) => percentile(lat[side], q);
    console.log(`\n## ${engine === 'pglite' ? 'PGlite' : 'PostgreSQL'}\n`);
    console.log('| chat completion (ms, lower is better) | through the gateway | straight to the fake | added | ratio |');
    console.log('| --- | ---: | ---: | ---: | ---: |');
    for (const q of [50, 99] as const) console.log(`| p${q} | ${fmt(p('gateway', q), 2)} | ${fmt(p('direct', q), 2)} | ${fmt(p('gateway', q) - p('direct', q), 2)} | ${fmt(p('gateway', q) / p('direct', q), 2)}× |`);
    console.log(`| calls/s, ${CONCURRENCY} in flight (higher is better) | ${fmt(gatewayRate)} | ${fmt(directRate)} | | ${fmt(gatewayRate / directRate, 2)}× |`);
    const added = p('gateway', 50) - p('direct', 50);
    await app.close(); // settles what is still batched and hands the leases back
    const metered = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM agent_quota_usage WHERE task_id = ANY ($1::uuid[])`, [tasks]);
    console.log(`\n${N} calls per side, alternating, one at a time; ${metered.rows[0]!.n} calls metered; credit leases ${leaseCalls > 0 ? `on (${leaseCalls} calls)` : 'off'}. Target < 2 ms p50 added: ${added < 2 ? 'met' : 'MISSED'} (${fmt(added, 2)} ms)`);
  } finally {
    await fake.close();
    await drop();
  }
}

console.log(`# bench/gateway — ${new Date().toISOString()}`);
for (const engine of ENGINES) await measure(engine);
