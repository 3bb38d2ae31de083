/**
 * bench/storage/files — uploading a 10 MB file through the HTTP API (isolation-runtime-prd §5:
 * < 2 s end to end), on each engine and each storage provider, beside a peer measured in the
 * same run on the same machine: the same 10 MB written straight to the provider — fs write +
 * fsync for the local provider, one S3 PutObject to the same S3-compatible server (s3rver)
 * for the S3 provider. Each figure is the median of BENCH_RUNS uploads (default 5).
 *
 *   npm run bench:storage:files
 *   env: BENCH_PG_URL, BENCH_ENGINES=pglite,postgres, BENCH_PROVIDERS=local,s3, BENCH_RUNS=5, BENCH_FILE_MB=10
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { mintToken } from '../../src/auth/index.js';
import { loadConfig } from '../../src/config/index.js';
import { startFabric } from '../../src/server/index.js';
import { multipartBody } from '../../test/support/multipart.js';
import { startLocalS3, type LocalS3 } from '../../test/support/s3.js';
import { adminQuery, dbUrl } from '../lib/db.js';
import { probePostgres, type Engine } from '../lib/fabric.js';
import { fmt, median } from '../lib/stats.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const SIZE = Number(process.env.BENCH_FILE_MB ?? 10) * 1024 * 1024;
const ENGINES = (process.env.BENCH_ENGINES ?? 'pglite,postgres').split(',') as Engine[];
const PROVIDERS = (process.env.BENCH_PROVIDERS ?? 'local,s3').split(',') as ('local' | 's3')[];
const SECRET = randomBytes(32).toString('hex');
const TARGET_MS = 2000;


/** Median milliseconds of RUNS calls of `fn` (after one warm-up). */
async function timeMedian(fn: (i: number) => Promise<void>): Promise<number> {
  await fn(-1);
  const ms: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const t0 = performance.now();
    await fn(i);
    ms.push(performance.now() - t0);
  }
  return median(ms);
}

/** The peer: the same bytes written straight to the provider, no HTTP, no database. */
async function peerMs(provider: 'local' | 's3', dir: string, s3: LocalS3 | undefined): Promise<number> {
  const bytes = Buffer.alloc(SIZE, 'fabric-');
  if (provider === 'local') {
    return timeMedian(async (i) => {
      const fh = await fs.promises.open(path.join(dir, `peer-${i}`), 'w');
      await fh.writeFile(bytes);
      await fh.sync();
      await fh.close();
    });
  }
  const c = new S3Client({ endpoint: s3!.config.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' }, requestChecksumCalculation: 'WHEN_REQUIRED' });
  const ms = await timeMedian(async (i) => void (await c.send(new PutObjectCommand({ Bucket: s3!.config.bucket!, Key: `peer/${i + 1}`, Body: bytes }))));
  c.destroy();
  return ms;
}

async function fabricMs(engine: Engine, provider: 'local' | 's3', dir: string, s3: LocalS3 | undefined): Promise<number> {
  const dbName = `fabric_bench_files_${randomBytes(4).toString('hex')}`;
  const env: Record<string, string> = { FABRIC_DATA_DIR: path.join(dir, 'fabric'), FABRIC_JWT_SECRET: SECRET, PORT: '0', FABRIC_LOG_LEVEL: 'warn', ...(s3?.env ?? {}) };
  if (engine === 'postgres') {
    await adminQuery(`CREATE DATABASE ${dbName}`);
    env.DATABASE_URL = dbUrl(dbName);
  }
  const fabric = await startFabric(loadConfig(env), engine === 'postgres' ? 'serve' : 'dev', { workers: 0 });
  try {
    const tokens = { secret: SECRET, issuer: 'agent-fabric', audience: 'agent-fabric' };
    const adminToken = await mintToken(tokens, { sub: 'bench', role: 'admin', tenant: 'default', ttl: '1h' });
    const prov = await fetch(`${fabric.url}/api/agents/provision`, {
      method: 'POST',
      headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: `bench-${provider}`, model: 'm' }),
    });
    const agentId = ((await prov.json()) as { agent: { id: string } }).agent.id;
    const agentToken = await mintToken(tokens, { sub: agentId, role: 'agent', tenant: 'default', ttl: '1h' });
    return await timeMedian(async () => {
      const body = multipartBody([['name', 'bench.bin']], { size: SIZE, contentType: 'application/octet-stream' });
      const res = await fetch(`${fabric.url}/api/agents/${agentId}/files`, {
        method: 'POST',
        headers: { authorization: `Bearer ${agentToken}`, ...body.headers },
        body: body.payload,
        duplex: 'half',
      } as RequestInit & { duplex: 'half' });
      if (res.status !== 201) throw new Error(`upload answered ${res.status}: ${await res.text()}`);
      await res.arrayBuffer();
    });
  } finally {
    await fabric.close();
    if (engine === 'postgres') await adminQuery(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
  }
}

const pgProbe = ENGINES.includes('postgres') ? await probePostgres() : undefined;
console.log(`bench/storage/files: ${fmt(SIZE / 1024 / 1024)} MB upload over HTTP, median of ${RUNS}; node ${process.version}, ${os.cpus().length} cores`);
console.log(`| engine | provider | fabric upload (ms) | peer | peer (ms) | ratio | < ${TARGET_MS} ms |`);
console.log('| --- | --- | ---: | --- | ---: | ---: | --- |');
for (const provider of PROVIDERS) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fabric-bench-files-'));
  const s3 = provider === 's3' ? await startLocalS3('fabric-bench') : undefined;
  try {
    const peer = await peerMs(provider, dir, s3);
    const peerName = provider === 'local' ? 'fs write + fsync' : 'S3 PutObject (s3rver)';
    for (const engine of ENGINES) {
      if (engine === 'postgres' && pgProbe && !pgProbe.ok) {
        console.log(`| postgres | ${provider} | skipped: ${pgProbe.reason} | | | | |`);
        continue;
      }
      const ms = await fabricMs(engine, provider, dir, s3);
      console.log(`| ${engine} | ${provider} | ${fmt(ms, 1)} | ${peerName} | ${fmt(peer, 1)} | ${fmt(ms / peer, 2)}× | ${ms < TARGET_MS ? 'yes' : 'NO'} |`);
    }
  } finally {
    await s3?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
