import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { mintToken } from '../src/auth/index.js';
import { loadConfig } from '../src/config/index.js';
import { startFabric, type RunningFabric } from '../src/server/index.js';
import { ENGINE, PG_ADMIN_URL, pgUrl } from './support/engine.js';
import { multipartBody } from './support/multipart.js';
import { startLocalS3, type LocalS3 } from './support/s3.js';

// Files survive a restart of every process: a real fabric (API on a socket, its database, its
// storage provider) is stopped and started again on the same data dir / database / bucket, and
// the file — and a signed URL issued before the restart — still read back. Run for the local
// provider and for S3 (s3rver), on the engine under test.

const SECRET = 'files-restart-secret-0123456789-abcdefghijklmnopqrstuvwxyz';
const tokenOpts = { secret: SECRET, issuer: 'agent-fabric', audience: 'agent-fabric' };

async function admin(sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: PG_ADMIN_URL });
  await client.connect();
  await client.query(sql).finally(() => client.end());
}

async function call(f: RunningFabric, token: string | undefined, method: string, url: string, body?: unknown) {
  const res = await fetch(`${f.url}${url}`, {
    method,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: res.status, text: await res.text(), headers: res.headers };
}

for (const provider of ['local', 's3'] as const) {
  describe(`files survive a restart: ${provider} provider (${ENGINE})`, () => {
    const dbName = `fabric_files_${randomBytes(6).toString('hex')}`;
    let dir: string;
    let s3: LocalS3 | undefined;
    let env: Record<string, string>;
    let fabric: RunningFabric | undefined;
    const start = () => startFabric(loadConfig(env), ENGINE === 'postgres' ? 'serve' : 'dev', { workers: 0 });

    before(async () => {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fabric-files-restart-'));
      env = { FABRIC_DATA_DIR: dir, FABRIC_JWT_SECRET: SECRET, PORT: '0', FABRIC_LOG_LEVEL: 'silent', FABRIC_FILES_MAX_BYTES: String(1024 * 1024) };
      if (ENGINE === 'postgres') {
        await admin(`CREATE DATABASE ${dbName}`);
        env.DATABASE_URL = pgUrl(dbName);
      }
      if (provider === 's3') {
        s3 = await startLocalS3('fabric-restart');
        Object.assign(env, s3.env);
      }
    });
    after(async () => {
      await fabric?.close();
      await s3?.stop();
      if (ENGINE === 'postgres') await admin(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
      fs.rmSync(dir, { recursive: true, force: true });
    });

    it('a file and its signed URL read back after the fabric stops and starts again', { timeout: 120_000 }, async () => {
      fabric = await start();
      const adminToken = await mintToken(tokenOpts, { sub: 'restart-admin', role: 'admin', tenant: 'default', ttl: '10m' });
      const prov = await call(fabric, adminToken, 'POST', '/api/agents/provision', { name: 'restart-bot', model: 'm' });
      assert.equal(prov.status, 201, prov.text);
      const agentId = JSON.parse(prov.text).agent.id as string;
      const agentToken = await mintToken(tokenOpts, { sub: agentId, role: 'agent', tenant: 'default', ttl: '10m' });

      const form = new FormData();
      form.append('name', 'memo.txt');
      form.append('file', new Blob(['kept across restarts'], { type: 'text/plain' }), 'ignored.txt');
      const up = await fetch(`${fabric.url}/api/agents/${agentId}/files`, { method: 'POST', headers: { authorization: `Bearer ${agentToken}` }, body: form });
      assert.equal(up.status, 201, await up.clone().text());
      const file = ((await up.json()) as { file: { id: string } }).file;
      const signed = JSON.parse((await call(fabric, agentToken, 'GET', `/api/agents/${agentId}/files/${file.id}/url`)).text).url as string;

      // over a real socket, a too-large upload still gets its 413 (the rest of the body is not read)
      const big = multipartBody([], { size: 3 * 1024 * 1024 });
      const tooBig = await fetch(`${fabric.url}/api/agents/${agentId}/files`, {
        method: 'POST',
        headers: { authorization: `Bearer ${agentToken}`, ...big.headers },
        body: big.payload,
        duplex: 'half',
      } as RequestInit & { duplex: 'half' });
      assert.equal(tooBig.status, 413);
      assert.equal(((await tooBig.json()) as { error: { code: string } }).error.code, 'file_too_large');

      await fabric.close();
      fabric = await start();

      const got = await call(fabric, agentToken, 'GET', `/api/agents/${agentId}/files/${file.id}`);
      assert.equal(got.status, 200, got.text);
      assert.equal(got.text, 'kept across restarts');
      const list = JSON.parse((await call(fabric, adminToken, 'GET', `/api/agents/${agentId}/files`)).text);
      assert.deepEqual(list.files.map((f: { id: string }) => f.id), [file.id]);
      const viaUrl = await fetch(signed.replace(/^http:\/\/[^/]+/, fabric.url!));
      assert.equal(viaUrl.status, 200);
      assert.equal(await viaUrl.text(), 'kept across restarts');
      await fabric.close();
      fabric = undefined;
    });
  });
}
