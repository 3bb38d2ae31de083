/**
 * bench/storage/memory — semantic search and key-value reads of agent memory, each beside a
 * peer measured in the same run on the same machine.
 *
 *   Semantic: POST /api/agents/:id/memory/search (top 5, over HTTP, the query embedded by the
 *   local provider) with 1k, 10k and 100k memories in one agent — PGlite searches with
 *   pgvector HNSW, PostgreSQL (no pgvector here) exactly in process. Peer: brute-force cosine
 *   over the same vectors in a Float32Array (no HTTP, no database, no query embedding).
 *   Key-value: GET /api/agents/:id/memory/:key over HTTP beside a Redis GET (ioredis).
 *
 *   npm run bench:storage:memory
 *   env: BENCH_PG_URL, BENCH_ENGINES=pglite,postgres, BENCH_SIZES=1000,10000,100000, BENCH_QUERIES=200
 */
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import pg from 'pg';
import { Redis } from 'ioredis';
import { createTokenVerifier, mintToken } from '../../src/auth/index.js';
import { loadConfig } from '../../src/config/index.js';
import { migrate, openPglite, openPostgres, type Db } from '../../src/db/index.js';
import { createEmbeddingProvider, loadWordTable } from '../../src/embeddings/index.js';
import { buildApp } from '../../src/http/index.js';
import { AgentScheduler } from '../../src/queue/index.js';
import { createLogger, setLogger } from '../../src/telemetry/index.js';
import { ensureDefaultTenant } from '../../src/tenancy/index.js';
import { DISTRACTORS, PAIRS } from '../../test/fixtures/semantic-memory-pairs.js';
import { probeRedis, REDIS_HOST, REDIS_PORT } from '../lib/bull.js';
import { PG_ADMIN_URL, probePostgres, type Engine } from '../lib/fabric.js';
import { fmt, percentile } from '../lib/stats.js';

setLogger(createLogger({ level: 'warn' }));
const SIZES = (process.env.BENCH_SIZES ?? '1000,10000,100000').split(',').map(Number);
const QUERIES = Number(process.env.BENCH_QUERIES ?? 200);
const ENGINES = (process.env.BENCH_ENGINES ?? 'pglite,postgres').split(',') as Engine[];
const SECRET = randomBytes(32).toString('hex');
const tokens = { secret: SECRET, issuer: 'agent-fabric', audience: 'agent-fabric' };
const config = { ...loadConfig({ FABRIC_JWT_SECRET: SECRET }), logLevel: 'warn' };
const provider = createEmbeddingProvider(config.embeddings);
const words = [...PAIRS.flatMap((p) => [p.memory, p.query]), ...DISTRACTORS].join(' ').toLowerCase().match(/[a-z]+/g)!;
const sentence = (rnd: () => number) => Array.from({ length: 6 + Math.floor(rnd() * 8) }, () => words[Math.floor(rnd() * words.length)]).join(' ');
function rng(seed: number) {
  return () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32);
}

async function openEngine(engine: Engine): Promise<{ db: Db; drop(): Promise<void> }> {
  if (engine === 'pglite') {
    const db = await openPglite();
    await migrate(db);
    await ensureDefaultTenant(db);
    return { db, drop: () => db.close() };
  }
  const name = `bench_memory_${process.pid}`;
  const admin = async (sql: string) => {
    const c = new pg.Client({ connectionString: PG_ADMIN_URL });
    await c.connect();
    await c.query(sql).finally(() => c.end());
  };
  await admin(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  await admin(`CREATE DATABASE ${name}`);
  const url = new URL(PG_ADMIN_URL);
  url.pathname = `/${name}`;
  const db = await openPostgres({ url: url.toString(), poolSize: 4, connectTimeoutMs: 5000, statementTimeoutMs: 600_000 });
  await migrate(db);
  await ensureDefaultTenant(db);
  return { db, drop: async () => (await db.close(), await admin(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)) };
}

/** Adds memories straight into the table (the API's one-at-a-time path is not what is measured). */
async function fill(db: Db, agent: string, from: number, to: number, vectors: Float32Array[], pgvector: boolean): Promise<void> {
  const rnd = rng(from + 1);
  for (let at = from; at < to; at += 1000) {
    const n = Math.min(1000, to - at);
    const texts = Array.from({ length: n }, () => sentence(rnd));
    const embedded = await provider.embed(texts);
    vectors.push(...embedded);
    await db.query(
      `INSERT INTO semantic_memories (tenant_id, agent_id, text, space, provider, model, dimensions, embedding, seq${pgvector ? ', embedding_vector' : ''})
       SELECT 'default', $1, t, 'local:${provider.model}:100', 'local', '${provider.model}', 100, e, s${pgvector ? ', v::vector' : ''}
       FROM unnest($2::text[], $3::bytea[], $4::bigint[]${pgvector ? ', $5::text[]' : ''}) AS u(t, e, s${pgvector ? ', v' : ''})`,
      [agent, texts, embedded.map((v) => Buffer.from(v.buffer.slice(0))), embedded.map((_, i) => at + i + 1), ...(pgvector ? [embedded.map((v) => `[${Array.from(v).join(',')}]`)] : [])],
    );
  }
  await db.query(
    `INSERT INTO semantic_memory_spaces (tenant_id, agent_id, space, memories, version) VALUES ('default', $1, $2, $3, $3)
     ON CONFLICT (agent_id, space) DO UPDATE SET memories = $3, version = $3`,
    [agent, `local:${provider.model}:100`, to],
  );
}

function bruteForce(vectors: Float32Array[], q: Float32Array, k: number): number[] {
  const best: [number, number][] = [];
  for (let i = 0; i < vectors.length; i++) {
    const v = vectors[i]!;
    let s = 0;
    for (let d = 0; d < 100; d++) s += v[d]! * q[d]!;
    if (best.length < k || s > best[best.length - 1]![0]) {
      best.push([s, i]);
      best.sort((a, b) => b[0] - a[0]);
      if (best.length > k) best.pop();
    }
  }
  return best.map((b) => b[1]);
}

async function time(n: number, fn: (i: number) => Promise<unknown>): Promise<{ p50: number; p99: number }> {
  for (let i = 0; i < Math.min(20, n); i++) await fn(i); // warm-up
  const ms: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await fn(i);
    ms.push(performance.now() - t0);
  }
  return { p50: percentile(ms, 50), p99: percentile(ms, 99) };
}

const rows: string[] = [];
const row = (...cells: string[]) => {
  rows.push(`| ${cells.join(' | ')} |`);
  console.error(rows.at(-1)); // as it comes: the 100k PGlite index build takes minutes
};

await loadWordTable(config.embeddings.cacheDir);
const redisUp = await probeRedis();
for (const engine of ENGINES) {
  if (engine === 'postgres') {
    const up = await probePostgres();
    if (!up.ok) {
      row('postgres', '—', `skipped: ${up.reason}`, '', '', '');
      continue;
    }
  }
  const { db, drop } = await openEngine(engine);
  const app = await buildApp({ db, config, verifyToken: createTokenVerifier(tokens), scheduler: new AgentScheduler(db) });
  await app.listen({ port: 0, host: '127.0.0.1' });
  const base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  const admin = { authorization: `Bearer ${await mintToken(tokens, { role: 'admin', tenant: 'default', sub: 'bench', ttl: '2h' })}`, 'content-type': 'application/json' };
  const prov = await fetch(`${base}/api/agents/provision`, { method: 'POST', headers: admin, body: JSON.stringify({ name: 'bench-memory', model: 'm', isolation: { level: 'none' } }) });
  const agent = ((await prov.json()) as { agent: { id: string } }).agent.id;
  const pgvector = (await db.query(`SELECT 1 FROM information_schema.columns WHERE table_name = 'semantic_memories' AND column_name = 'embedding_vector'`)).rows.length > 0;
  const mode = pgvector ? 'pgvector HNSW' : 'exact in process';
  const vectors: Float32Array[] = [];
  const queries = PAIRS.map((p) => p.query);
  const queryVectors = await provider.embed(queries);
  let have = 0;
  for (const size of SIZES) {
    const t0 = performance.now();
    if (pgvector) await db.query('DROP INDEX IF EXISTS semantic_memories_hnsw_100');
    await fill(db, agent, have, size, vectors, pgvector);
    if (pgvector) await db.query(`CREATE INDEX semantic_memories_hnsw_100 ON semantic_memories USING hnsw ((embedding_vector::vector(100)) vector_cosine_ops) WHERE dimensions = 100`);
    await db.query('ANALYZE semantic_memories');
    have = size;
    console.error(`${engine}: ${size} memories loaded and indexed in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    // a keep-alive socket idle through a long index build was closed by the server: drop it
    await fetch(`${base}/healthz`).catch(() => {});
    const fabric = await time(QUERIES, async (i) => {
      const res = await fetch(`${base}/api/agents/${agent}/memory/search`, { method: 'POST', headers: admin, body: JSON.stringify({ query: queries[i % queries.length], top_k: 5 }) });
      if (res.status !== 200) throw new Error(`search answered ${res.status}: ${await res.text()}`);
      await res.arrayBuffer();
    });
    const peer = await time(QUERIES, async (i) => bruteForce(vectors, queryVectors[i % queryVectors.length]!, 5));
    row(engine, size.toLocaleString('en'), `${mode}: ${fmt(fabric.p50, 1)} / ${fmt(fabric.p99, 1)} ms`, `brute-force Float32 in process: ${fmt(peer.p50, 1)} / ${fmt(peer.p99, 1)} ms`, `${fmt(fabric.p50 / peer.p50, 1)}x / ${fmt(fabric.p99 / peer.p99, 1)}x`);
  }
  // key-value read
  const put = await fetch(`${base}/api/agents/${agent}/memory/last_processed_lead_id`, { method: 'PUT', headers: admin, body: JSON.stringify({ value: { id: 4242 } }) });
  if (put.status >= 300) row(engine, 'kv', `skipped: PUT answered ${put.status}`, '', '');
  else {
    const kv = await time(QUERIES * 5, async () => {
      const res = await fetch(`${base}/api/agents/${agent}/memory/last_processed_lead_id`, { headers: admin });
      await res.arrayBuffer();
    });
    let peer = 'skipped: no Redis';
    let ratio = '—';
    if (redisUp.ok) {
      const redis = new Redis({ host: REDIS_HOST, port: REDIS_PORT, lazyConnect: true });
      await redis.connect();
      await redis.set('bench:memory:last_processed_lead_id', JSON.stringify({ id: 4242 }));
      const r = await time(QUERIES * 5, () => redis.get('bench:memory:last_processed_lead_id'));
      await redis.del('bench:memory:last_processed_lead_id');
      redis.disconnect();
      peer = `Redis GET: ${fmt(r.p50, 2)} / ${fmt(r.p99, 2)} ms`;
      ratio = `${fmt(kv.p50 / r.p50, 1)}x / ${fmt(kv.p99 / r.p99, 1)}x`;
    }
    row(engine, 'kv GET', `GET /memory/:key: ${fmt(kv.p50, 2)} / ${fmt(kv.p99, 2)} ms`, peer, ratio);
  }
  await app.close();
  await drop();
}

console.log('\n| engine | memories | fabric p50 / p99 | peer p50 / p99 | ratio p50 / p99 |');
console.log('| --- | --- | --- | --- | --- |');
for (const r of rows) console.log(r);
