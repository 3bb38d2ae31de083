/**
 * bench/policy — policy check latency (agent-fabric.md NFR-PERF-2: < 5 ms p99), beside
 * casbin (node-casbin, enforceSync) on equivalent rules and a trivial in-memory allow-list
 * (a Set lookup), in the same run on the same requests:
 *   1. evaluation: the fabric's compiled rules in memory (what the egress proxy does per connection);
 *   2. check(): the engine's full check on a warm cache — evaluation, metric, decision-log push;
 *   3. HTTP: POST /api/policy/check through the app (auth, validation, check, JSON), on PGlite;
 *      the decision log is written in batches meanwhile (its flush is included in the run time).
 *
 *   npm run bench:policy            env: BENCH_N=100000 (evaluations), BENCH_HTTP_N=3000
 */
import { newEnforcer, newModelFromString, StringAdapter } from 'casbin';
import { createTokenVerifier, mintToken } from '../src/auth/index.js';
import { loadConfig } from '../src/config/index.js';
import { migrate, openPglite, withTransaction } from '../src/db/index.js';
import { buildApp } from '../src/http/index.js';
import { createPolicy, globToRegExp, PolicyEngine, type PolicyRule } from '../src/policy/index.js';
import { AgentScheduler } from '../src/queue/index.js';
import { createLogger, setLogger } from '../src/telemetry/index.js';
import { ensureDefaultTenant } from '../src/tenancy/index.js';
import { fmt, percentile } from './lib/stats.js';

setLogger(createLogger({ level: 'warn' }));
const N = Number(process.env.BENCH_N ?? 100_000);
const HTTP_N = Number(process.env.BENCH_HTTP_N ?? 3000);
const SECRET = 'bench-secret-that-is-long-enough-for-hs256-0123456789';
const TOKENS = { secret: SECRET, issuer: 'agent-fabric', audience: 'agent-fabric' };

const HOSTS = ['api.openai.com', 'api.anthropic.com', 'github.com', 'api.github.com', 'pypi.org', 'files.pythonhosted.org', 'registry.npmjs.org', 'hooks.slack.com', 'api.stripe.com', 'example.com'];
const DENIED_COMMANDS = ['rm -rf *', 'curl * | sh', 'wget * | sh', 'mkfs*', 'dd if=*', 'shutdown*', 'reboot*', 'chmod -R 777 *'];
const RULES: PolicyRule[] = [
  { action_pattern: 'fs.write', effect: 'allow', conditions: { resource: ['/workspace/*', '/tmp/*'] }, priority: 10 },
  { action_pattern: 'fs.write', effect: 'deny', conditions: {} },
  { action_pattern: 'shell.exec', effect: 'deny', conditions: { resource: DENIED_COMMANDS } },
  { action_pattern: 'net.connect', effect: 'deny', conditions: { resource_not: HOSTS } },
  { action_pattern: 'model.use', effect: 'deny', conditions: { resource: 'o1*' } },
];
/** The same decisions as a Set: what an allow-list check costs at least. */
const ALLOWED = new Set(HOSTS.map((h) => `net.connect|${h}`));

const REQUESTS: [string, string][] = [
  ['fs.write', '/workspace/out/report.md'],
  ['fs.write', '/etc/passwd'],
  ['shell.exec', 'ls -la'],
  ['shell.exec', 'rm -rf /'],
  ['net.connect', 'api.github.com'],
  ['net.connect', 'pastebin.com'],
  ['model.use', 'gpt-4o-mini'],
  ['model.use', 'o1-preview'],
];

const CASBIN_MODEL = `
[request_definition]
r = act, obj
[policy_definition]
p = act, obj, eft
[policy_effect]
e = some(where (p.eft == allow)) && !some(where (p.eft == deny))
[matchers]
m = r.act == p.act && regexMatch(r.obj, p.obj)
`;
/** casbin denies by default, so the fabric's default allow is written as allow-all rules per action; the same globs as anchored regexes. */
function casbinPolicy(): string {
  const re = (g: string) => globToRegExp(g).source.replace(/,/g, '\\x2c');
  const lines = [
    ...['/workspace/*', '/tmp/*'].map((g) => `p, fs.write, ${re(g)}, allow`),
    `p, shell.exec, ^.*$, allow`,
    ...DENIED_COMMANDS.map((g) => `p, shell.exec, ${re(g)}, deny`),
    ...HOSTS.map((h) => `p, net.connect, ${re(h)}, allow`),
    `p, model.use, ^.*$, allow`,
    `p, model.use, ${re('o1*')}, deny`,
  ];
  return lines.join('\n');
}

function stats(name: string, samplesUs: number[], totalMs: number) {
  return { name, p50: percentile(samplesUs, 50), p99: percentile(samplesUs, 99), max: Math.max(...samplesUs), perSecond: (samplesUs.length / totalMs) * 1000 };
}

function timeEach(n: number, fn: (i: number) => unknown): number[] {
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const t = process.hrtime.bigint();
    fn(i);
    out[i] = Number(process.hrtime.bigint() - t) / 1000;
  }
  return out;
}

async function main() {
  const db = await openPglite();
  await migrate(db);
  await ensureDefaultTenant(db);
  const ws = (await db.query<{ id: string }>(`SELECT id FROM workspaces WHERE tenant_id = 'default'`)).rows[0]!.id;
  const agent = (
    await db.query<{ id: string }>(`INSERT INTO agents (tenant_id, workspace_id, name, config) VALUES ('default', $1, 'bench', $2) RETURNING id`, [
      ws,
      JSON.stringify({ model: 'gpt-4o-mini', tools: [], policies: [], isolation: { level: 'container' } }),
    ])
  ).rows[0]!.id;
  const actor = { sub: 'bench', role: 'admin' };
  await withTransaction(db, (tx) => createPolicy(tx, actor, 'default', { name: 'bench', scope: { type: 'agent', id: agent }, priority: 0, rules: RULES, enabled: true }), { name: 'bench policy' });

  const engine = new PolicyEngine({ db, decisionLog: { flushMs: 200 } });
  const policies = await engine.policiesFor(db, 'default');
  const attrs = await engine.agentAttrs(db, 'default', agent);
  const enforcer = await newEnforcer(newModelFromString(CASBIN_MODEL), new StringAdapter(casbinPolicy()));

  // the three agree on every request
  for (const [action, resource] of REQUESTS) {
    const fabric = engine.evaluateWith(policies, attrs, { tenantId: 'default', door: 'api', actor: { sub: agent, role: 'agent' }, agentId: agent, action, resource }).verdict.decision === 'allow';
    const casbin = enforcer.enforceSync(action, resource);
    if (fabric !== casbin) throw new Error(`fabric and casbin disagree on ${action} ${resource}: ${fabric} vs ${casbin}`);
  }

  const req = (i: number) => {
    const [action, resource] = REQUESTS[i % REQUESTS.length]!;
    return { tenantId: 'default', door: 'api' as const, actor: { sub: agent, role: 'agent' }, agentId: agent, action, resource };
  };
  const rows = [];
  for (let round = 0; round < 2; round++) {
    // round 0 warms the JIT; round 1 is reported
    let t0 = performance.now();
    const setUs = timeEach(N, (i) => ALLOWED.has(`${REQUESTS[i % REQUESTS.length]![0]}|${REQUESTS[i % REQUESTS.length]![1]}`));
    const setMs = performance.now() - t0;
    t0 = performance.now();
    const evalUs = timeEach(N, (i) => engine.evaluateWith(policies, attrs, req(i)));
    const evalMs = performance.now() - t0;
    t0 = performance.now();
    const casbinUs = timeEach(N, (i) => enforcer.enforceSync(REQUESTS[i % REQUESTS.length]![0], REQUESTS[i % REQUESTS.length]![1]));
    const casbinMs = performance.now() - t0;
    if (round === 1) rows.push(stats('in-memory allow-list (Set.has)', setUs, setMs), stats('fabric: evaluation (compiled rules)', evalUs, evalMs), stats('casbin 5.51 enforceSync (same rules)', casbinUs, casbinMs));
  }
  // the engine's full check: warm cache, metric, decision-log push (batched writes run meanwhile)
  const checkUs: number[] = [];
  let t0 = performance.now();
  for (let i = 0; i < N / 10; i++) {
    const t = process.hrtime.bigint();
    await engine.check(db, req(i));
    checkUs.push(Number(process.hrtime.bigint() - t) / 1000);
  }
  await engine.log.flush();
  rows.push(stats('fabric: check() incl. decision-log push', checkUs, performance.now() - t0));

  const config = { ...loadConfig({ FABRIC_JWT_SECRET: SECRET }), logLevel: 'warn' as const };
  const app = await buildApp({ db, config, verifyToken: createTokenVerifier(TOKENS), scheduler: new AgentScheduler(db) }, { policies: engine });
  const token = await mintToken(TOKENS, { sub: agent, role: 'agent', tenant: 'default', ttl: '1h' });
  const httpUs: number[] = [];
  t0 = performance.now();
  for (let i = 0; i < HTTP_N; i++) {
    const [action, resource] = REQUESTS[i % REQUESTS.length]!;
    const t = process.hrtime.bigint();
    const res = await app.inject({ method: 'POST', url: '/api/policy/check', headers: { authorization: `Bearer ${token}` }, payload: { action, resource } });
    httpUs.push(Number(process.hrtime.bigint() - t) / 1000);
    if (res.statusCode !== 200) throw new Error(res.body);
  }
  await engine.log.flush();
  rows.push(stats('fabric: POST /api/policy/check (PGlite, app.inject)', httpUs, performance.now() - t0));
  const logged = (await db.query<{ n: number }>('SELECT count(*)::int AS n FROM policy_decisions')).rows[0]!.n;

  console.log(`\npolicy checks: ${REQUESTS.length} requests in turn (4 allow, 4 deny), ${RULES.length} fabric rules ≡ ${casbinPolicy().split('\n').length} casbin policy lines; ${fmt(N)} evaluations per row (HTTP: ${fmt(HTTP_N)})\n`);
  console.log('| what | p50 µs | p99 µs | max µs | checks/s |');
  console.log('| --- | ---: | ---: | ---: | ---: |');
  for (const r of rows) console.log(`| ${r.name} | ${fmt(r.p50, 2)} | ${fmt(r.p99, 2)} | ${fmt(r.max, 0)} | ${fmt(r.perSecond)} |`);
  const [, fab, cas] = rows;
  console.log(`\ncasbin ÷ fabric evaluation: p50 ${fmt(cas!.p50 / fab!.p50, 1)}×, p99 ${fmt(cas!.p99 / fab!.p99, 1)}×, throughput ${fmt(fab!.perSecond / cas!.perSecond, 1)}×`);
  console.log(`decision log: ${fmt(logged)} rows written for ${fmt(checkUs.length + HTTP_N)} logged checks`);
  await app.close();
  await engine.close();
  await db.close();
}

await main();
