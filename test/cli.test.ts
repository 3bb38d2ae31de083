import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { ENGINE, PG_ADMIN_URL, pgUrl } from './support/engine.js';

// End-to-end tests of the `agent-fabric` CLI, run as child processes the way a user runs it.

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SECRET = 'cli-test-secret-0123456789-abcdefghijklmnopqrstuvwxyz';
const START_TIMEOUT_MS = 60_000;
const live = new Set<Cli>();

interface Cli {
  child: ChildProcess;
  out(): string;
  err(): string;
  closed: boolean;
  exited: Promise<number | null>;
}

/** The child's environment: none of the caller's fabric settings leak in, logs at warn. */
function cliEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, FABRIC_LOG_LEVEL: 'warn' };
  for (const k of ['FABRIC_JWT_SECRET', 'FABRIC_JWKS_URL', 'DATABASE_URL', 'FABRIC_DATA_DIR', 'PORT', 'FABRIC_HOST', 'NODE_TEST_CONTEXT']) delete env[k];
  return { ...env, ...extra };
}

function spawnCli(args: string[], env: NodeJS.ProcessEnv): Cli {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const cli: Cli = {
    child,
    out: () => out,
    err: () => err,
    closed: false,
    exited: new Promise((resolve) =>
      child.on('close', (code) => {
        cli.closed = true;
        live.delete(cli);
        resolve(code);
      }),
    ),
  };
  live.add(cli);
  return cli;
}

const describeCli = (args: string[], cli: Cli) => `agent-fabric ${args.join(' ')}\n--- stdout\n${cli.out()}--- stderr\n${cli.err()}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits for the exit code; a child still running after `ms` is killed and fails the test. */
async function waitExit(cli: Cli, args: string[], ms = 30_000): Promise<number | null> {
  const timer = setTimeout(() => cli.child.kill('SIGKILL'), ms);
  try {
    const code = await cli.exited;
    if (cli.child.signalCode === 'SIGKILL') throw new Error(`still running after ${ms} ms: ${describeCli(args, cli)}`);
    return code;
  } finally {
    clearTimeout(timer);
  }
}

/** Runs a command to completion. */
async function run(args: string[], env = cliEnv(), ms?: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const cli = spawnCli(args, env);
  const code = await waitExit(cli, args, ms);
  return { code, stdout: cli.out(), stderr: cli.err() };
}

/** Waits until stdout matches `re`; fails if the child exits first or takes longer than `ms`. */
async function waitForOutput(cli: Cli, args: string[], re: RegExp, ms = START_TIMEOUT_MS): Promise<RegExpExecArray> {
  const deadline = Date.now() + ms;
  for (;;) {
    const m = re.exec(cli.out());
    if (m) return m;
    if (cli.closed) throw new Error(`exited with ${cli.child.exitCode} before printing ${re}: ${describeCli(args, cli)}`);
    if (Date.now() > deadline) throw new Error(`no ${re} after ${ms} ms: ${describeCli(args, cli)}`);
    await sleep(50);
  }
}

/** Starts `dev` / `serve` and waits for "serving on URL" (and, for dev, the admin token line). */
async function startServer(args: string[], env: NodeJS.ProcessEnv) {
  const cli = spawnCli(args, env);
  const url = (await waitForOutput(cli, args, /is serving on (http:\/\/\S+)/))[1]!;
  const adminToken: string | undefined = args[0] === 'dev' ? (await waitForOutput(cli, args, /export FABRIC_TOKEN=(\S+)/))[1] : undefined;
  return {
    cli,
    url,
    adminToken,
    stop: async () => {
      cli.child.kill('SIGTERM');
      return waitExit(cli, args);
    },
  };
}

async function killAll(): Promise<void> {
  const running = [...live];
  for (const cli of running) cli.child.kill('SIGKILL');
  await Promise.all(running.map((c) => c.exited));
}

async function api(url: string, token: string | undefined, method: string, route: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const headers: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`${url}${route}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(15_000) });
  const text = await res.text();
  return { status: res.status, json: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
}

function jwtPayload(token: string): Record<string, unknown> {
  const parts = token.split('.');
  assert.equal(parts.length, 3, `not a JWT: ${token}`);
  return JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as Record<string, unknown>;
}

const tmpDir = () => fs.mkdtempSync(path.join(os.tmpdir(), 'fabric-cli-'));
const agentNames = (json: Record<string, unknown>) => (json.agents as { name: string }[]).map((a) => a.name);

describe(`CLI usage and token (${ENGINE})`, { concurrency: 4 }, () => {
  const emptyDir = tmpDir();
  after(async () => {
    await killAll();
    fs.rmSync(emptyDir, { recursive: true, force: true });
  });
  const env = () => cliEnv({ FABRIC_DATA_DIR: emptyDir });
  const withSecret = () => cliEnv({ FABRIC_JWT_SECRET: SECRET, FABRIC_DATA_DIR: emptyDir });

  const usages: [string[], RegExp][] = [
    [['--help'], /Usage: agent-fabric <command> \[options\][\s\S]*dev[\s\S]*serve[\s\S]*migrate[\s\S]*token/],
    [['dev', '--help'], /^agent-fabric dev \[--port N\]/m],
    [['serve', '--help'], /^agent-fabric serve \[--port N\]/m],
    [['migrate', '--help'], /^agent-fabric migrate \[--data-dir DIR\]/m],
    [['token', '--help'], /^agent-fabric token --role ROLE/m],
  ];
  for (const [args, usage] of usages) {
    it(`${args.join(' ')} prints usage and exits 0`, async () => {
      const r = await run(args, env());
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, usage);
    });
  }

  it('an unknown command exits 2 with the command list', async () => {
    const r = await run(['frobnicate'], env());
    assert.equal(r.code, 2);
    assert.match(r.stderr, /unknown command "frobnicate"/);
    assert.match(r.stderr, /Usage: agent-fabric <command>/);
  });

  it('an unknown flag exits 2 with the command usage', async () => {
    const r = await run(['dev', '--bogus'], env());
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--bogus/);
    assert.match(r.stderr, /^agent-fabric dev \[--port N\]/m);
  });

  it('token --role admin --tenant default prints one JWT (ttl 1h by default)', async () => {
    const r = await run(['token', '--role', 'admin', '--tenant', 'default'], withSecret());
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^[\w-]+\.[\w-]+\.[\w-]+\n$/, 'expected one JWT alone on stdout');
    const claims = jwtPayload(r.stdout.trim());
    assert.equal(claims.role, 'admin');
    assert.equal(claims.tenant, 'default');
    assert.equal(claims.sub, 'cli-admin');
    const exp = claims.exp as number;
    assert.equal(exp - (claims.iat as number), 3600);
    assert.ok(Math.abs(exp - (Date.now() / 1000 + 3600)) < 60, `exp ${exp} is not about an hour from now`);
  });

  it('token --ttl 15m gives a 900 s lifetime', async () => {
    const r = await run(['token', '--role', 'viewer', '--ttl', '15m'], withSecret());
    assert.equal(r.code, 0, r.stderr);
    const claims = jwtPayload(r.stdout.trim());
    assert.equal((claims.exp as number) - (claims.iat as number), 900);
    assert.equal(claims.role, 'viewer');
  });

  it('token without --role exits 2', async () => {
    const r = await run(['token'], withSecret());
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--role is required/);
    assert.equal(r.stdout, '');
  });

  it('token --role agent without --sub exits 2', async () => {
    const r = await run(['token', '--role', 'agent'], withSecret());
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--sub/);
  });

  it('token with an invalid tenant id exits 2 with a message, not a stack trace', async () => {
    const r = await run(['token', '--role', 'admin', '--tenant', 'Not Valid!'], withSecret());
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /tenant/);
    assert.doesNotMatch(r.stderr, /ZodError|\n\s+at /);
  });

  it('token with no secret and an empty data dir exits 2 and says how to get a secret', async () => {
    const r = await run(['token', '--role', 'admin', '--data-dir', emptyDir], cliEnv());
    assert.equal(r.code, 2);
    assert.match(r.stderr, /FABRIC_JWT_SECRET/);
    assert.match(r.stderr, /agent-fabric dev/);
    assert.equal(r.stdout, '');
  });
});

describe('dev on the embedded database (pglite)', { skip: ENGINE !== 'pglite' && 'dev runs on PGlite; covered by the pglite engine run' }, () => {
  let dir: string;
  let server: Awaited<ReturnType<typeof startServer>>;
  let cliToken: string;
  let agentId: string;
  const devArgs = () => ['dev', '--port', '0', '--data-dir', dir];

  before(async () => {
    dir = tmpDir();
    server = await startServer(devArgs(), cliEnv());
  }, { timeout: START_TIMEOUT_MS + 10_000 });
  after(async () => {
    await killAll();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('the printed admin token provisions an agent', async () => {
    assert.ok(server.adminToken, 'dev printed no admin token');
    const r = await api(server.url, server.adminToken, 'POST', '/api/agents/provision', { name: 'cli-bot', model: 'gpt-4o-mini' });
    assert.equal(r.status, 201, JSON.stringify(r.json));
    agentId = (r.json.agent as { id: string }).id;
    const put = await api(server.url, server.adminToken, 'PUT', `/api/agents/${agentId}/memory/last_processed_lead_id`, { value: 4711 });
    assert.equal(put.status, 200, JSON.stringify(put.json));
  });

  it('serves /openapi.json with the provision route, and /readyz', async () => {
    const spec = await api(server.url, undefined, 'GET', '/openapi.json');
    assert.equal(spec.status, 200);
    assert.ok('/api/agents/provision' in (spec.json.paths as object), 'provision route missing from OpenAPI');
    assert.equal((await api(server.url, undefined, 'GET', '/readyz')).status, 200);
  });

  it('a token minted by `token --data-dir` (the generated secret) works against the server', async () => {
    assert.ok(fs.existsSync(path.join(dir, 'jwt-secret')), 'no generated secret file');
    const r = await run(['token', '--role', 'admin', '--tenant', 'default', '--data-dir', dir]);
    assert.equal(r.code, 0, r.stderr);
    cliToken = r.stdout.trim();
    const list = await api(server.url, cliToken, 'GET', '/api/agents');
    assert.equal(list.status, 200, JSON.stringify(list.json));
    assert.deepEqual(agentNames(list.json), ['cli-bot']);
  });

  it('a second dev on the same data dir refuses (lock file) and the first keeps serving', async () => {
    const r = await run(devArgs());
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /data directory .* is in use/);
    assert.match(r.stderr, new RegExp(`pid ${server.cli.child.pid}`));
    assert.equal((await api(server.url, undefined, 'GET', '/readyz')).status, 200);
    assert.ok(fs.existsSync(path.join(dir, 'fabric.lock')), 'the failed start removed the running server lock');
  });

  it('migrate on the data dir of a running server fails clearly', async () => {
    const r = await run(['migrate', '--data-dir', dir]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /data directory .* is in use/);
    assert.equal((await api(server.url, undefined, 'GET', '/readyz')).status, 200);
  });

  it('SIGTERM stops dev with exit 0 and releases the lock; then migrate says the schema is current', async () => {
    assert.equal(await server.stop(), 0, describeCli(devArgs(), server.cli));
    assert.ok(!fs.existsSync(path.join(dir, 'fabric.lock')), 'lock file left behind');
    const r = await run(['migrate', '--data-dir', dir], cliEnv(), START_TIMEOUT_MS);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /schema is current/);
  });

  it('a restart on the same data dir still has the agent (durable), and old tokens still verify', { timeout: START_TIMEOUT_MS + 30_000 }, async () => {
    server = await startServer(devArgs(), cliEnv());
    const list = await api(server.url, cliToken, 'GET', '/api/agents');
    assert.equal(list.status, 200, JSON.stringify(list.json));
    assert.deepEqual(agentNames(list.json), ['cli-bot']);
    assert.equal((await api(server.url, server.adminToken, 'GET', `/api/agents/${agentId}`)).status, 200);
    const memory = await api(server.url, server.adminToken, 'GET', `/api/agents/${agentId}/memory/last_processed_lead_id`);
    assert.equal(memory.json.value, 4711, 'a memory key survives the restart');
    assert.equal(await server.stop(), 0);
  });
});

describe('serve and migrate on PostgreSQL', { skip: ENGINE !== 'postgres' && 'serve needs PostgreSQL; covered by the postgres engine run' }, () => {
  const dbName = `fabric_cli_${randomBytes(6).toString('hex')}`;
  let dir: string;
  const admin = async (sql: string) => {
    const client = new pg.Client({ connectionString: PG_ADMIN_URL });
    await client.connect();
    await client.query(sql).finally(() => client.end());
  };
  const env = (extra: Record<string, string> = {}) => cliEnv({ FABRIC_DATA_DIR: dir, ...extra });
  const full = () => env({ DATABASE_URL: pgUrl(dbName), FABRIC_JWT_SECRET: SECRET });

  before(async () => {
    dir = tmpDir();
    await admin(`CREATE DATABASE ${dbName}`);
  });
  after(async () => {
    await killAll();
    await admin(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('migrate applies the migrations, then says the schema is current', async () => {
    const first = await run(['migrate'], env({ DATABASE_URL: pgUrl(dbName) }));
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /applied migrations \S+.*schema is at version/);
    const second = await run(['migrate'], env({ DATABASE_URL: pgUrl(dbName) }));
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stdout, /schema is current/);
  });

  it('serve comes up; a `token --role admin` token with the same secret provisions an agent; SIGTERM exits 0', { timeout: 2 * START_TIMEOUT_MS + 30_000 }, async () => {
    const server = await startServer(['serve', '--port', '0'], full());
    assert.equal(server.adminToken, undefined);
    assert.equal((await api(server.url, undefined, 'GET', '/readyz')).status, 200);
    const t = await run(['token', '--role', 'admin', '--tenant', 'default'], full());
    assert.equal(t.code, 0, t.stderr);
    const r = await api(server.url, t.stdout.trim(), 'POST', '/api/agents/provision', { name: 'pg-bot', model: 'gpt-4o-mini' });
    assert.equal(r.status, 201, JSON.stringify(r.json));
    assert.deepEqual(agentNames((await api(server.url, t.stdout.trim(), 'GET', '/api/agents')).json), ['pg-bot']);
    const agent = (r.json.agent as { id: string }).id;
    assert.equal((await api(server.url, t.stdout.trim(), 'PUT', `/api/agents/${agent}/memory/cursor`, { value: { page: 3 } })).status, 200);
    assert.equal(await server.stop(), 0, describeCli(['serve'], server.cli));
    const again = await startServer(['serve', '--port', '0'], full());
    const memory = await api(again.url, t.stdout.trim(), 'GET', `/api/agents/${agent}/memory/cursor`);
    assert.deepEqual(memory.json.value, { page: 3 }, 'a memory key survives a restart of the server process');
    assert.equal(await again.stop(), 0);
  });

  it('serve without FABRIC_JWT_SECRET exits 1 naming it', async () => {
    const r = await run(['serve', '--port', '0'], env({ DATABASE_URL: pgUrl(dbName) }));
    assert.equal(r.code, 1, r.stdout);
    assert.match(r.stderr, /FABRIC_JWT_SECRET/);
    assert.doesNotMatch(r.stdout, /serving on/);
  });

  it('serve without DATABASE_URL exits 1 naming it', async () => {
    const r = await run(['serve', '--port', '0'], env({ FABRIC_JWT_SECRET: SECRET }));
    assert.equal(r.code, 1, r.stdout);
    assert.match(r.stderr, /DATABASE_URL/);
    assert.doesNotMatch(r.stdout, /serving on/);
  });
});
