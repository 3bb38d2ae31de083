import { createTokenVerifier, mintToken, type Role } from '../../src/auth/index.js';
import { loadConfig, type FabricConfig } from '../../src/config/index.js';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createAgentFiles, type AgentFiles } from '../../src/files/index.js';
import { buildApp, type App, type AppOptions } from '../../src/http/index.js';
import { AgentScheduler, type QueueOptions } from '../../src/queue/index.js';
import { freshDb, type TestDb } from './db.js';
import { TEST_SECRET } from './planted-secrets.js';

export { TEST_SECRET };
export const tokenOptions = { secret: TEST_SECRET, issuer: 'agent-fabric', audience: 'agent-fabric' };

export interface TestApp {
  app: App;
  db: TestDb;
  config: FabricConfig;
  /** Per-agent files over the same storage as the app's routes (a fresh local dir unless config.files says otherwise). */
  files: AgentFiles;
  /** A token for `role` in `tenant` (default: default). */
  token(role: Role, opts?: { tenant?: string; sub?: string; ttl?: string | number }): Promise<string>;
  /** Authorization header for `role`. */
  auth(role: Role, opts?: { tenant?: string; sub?: string }): Promise<{ authorization: string }>;
  close(): Promise<void>;
}

/** The API over a fresh database of the engine under test, driven with `app.inject()`. */
export async function startTestApp(
  given: AppOptions & {
    config?: Partial<FabricConfig>;
    queue?: Partial<QueueOptions>;
    /** Options that need the app's database (e.g. a policy engine shared by the app and the scheduler's submit hook). */
    withDb?: (db: TestDb) => AppOptions & { queue?: Partial<QueueOptions> };
  } = {},
): Promise<TestApp> {
  const db = await freshDb();
  const options = { ...given, ...given.withDb?.(db) };
  const base = loadConfig({ FABRIC_JWT_SECRET: TEST_SECRET });
  const filesDir = fs.mkdtempSync(path.join(os.tmpdir(), 'fabric-test-files-'));
  const config = { ...base, files: { ...base.files, dir: filesDir }, ...options.config };
  const files = createAgentFiles(db, config, TEST_SECRET);
  const app = await buildApp({ db, config, verifyToken: createTokenVerifier(tokenOptions), scheduler: new AgentScheduler(db, options.queue) }, options);
  await app.ready();
  const token: TestApp['token'] = (role, opts = {}) =>
    mintToken(tokenOptions, { role, tenant: opts.tenant ?? 'default', sub: opts.sub ?? `test-${role}`, ttl: opts.ttl ?? '10m' });
  return {
    app,
    db,
    config,
    files,
    token,
    auth: async (role, opts) => ({ authorization: `Bearer ${await token(role, opts)}` }),
    async close() {
      await app.close();
      await files.close();
      await db.close();
      fs.rmSync(filesDir, { recursive: true, force: true });
    },
  };
}

/** Rows in `table`, optionally filtered by a WHERE clause. */
export async function countRows(db: TestDb, table: string, where = 'true', params: unknown[] = []): Promise<number> {
  const r = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table} WHERE ${where}`, params);
  return r.rows[0]!.n;
}
