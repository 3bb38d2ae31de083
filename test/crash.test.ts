import { TERMINAL, type TaskStatus } from '../src/queue/index.js';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { mintToken } from '../src/auth/index.js';
import { ENGINE, PG_ADMIN_URL, pgUrl } from './support/engine.js';

// Crash safety of the queue across real processes sharing one PostgreSQL database:
// kill -9 the API and worker processes repeatedly during a burst of several thousand
// submissions; afterwards every task that got a 201 exists and reaches a terminal state, and
// no task ran its handler twice at the same time. And: a worker killed mid-task loses its
// lease, and the task then completes once on another worker.

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const HANDLERS_DIR = path.join(ROOT, 'test', 'fixtures');
const SECRET = 'crash-test-secret-0123456789-abcdefghijklmnopqrstuvwxyz';
const LEASE_SECONDS = 2;
const START_TIMEOUT_MS = 30_000;

/** The burst: how many submissions, how many in flight, its shortest (paced) and longest duration. */
const SUBMISSIONS = 3000;
const IN_FLIGHT = 32;
// A killed process is only replaced once its successor is ready (~2–3 s under this load), and
// the last ready API server is never killed, so kills come about every 2.5 s: 30 s gives ≥ 8.
// On a loaded host replacements start slower; the burst then goes on (more submissions, same
// pace) until MIN_KILLS kills have happened, up to BURST_MAX_MS.
const BURST_MIN_MS = 30_000;
const BURST_MAX_MS = 60_000;
/** A random process is SIGKILLed every KILL_EVERY_MS … + KILL_JITTER_MS during the burst. */
const KILL_EVERY_MS = 1000;
const KILL_JITTER_MS = 500;
const MIN_KILLS = 8;
/** Fewer 201s than this means the burst did not really happen (a very slow or overloaded host). */
const MIN_ACCEPTED = 1000;
const AGENTS = 12;
/** How long the fabric gets to bring every task to a terminal state after the burst. */
const SETTLE_MS = 90_000;


type Kind = 'serve' | 'worker' | 'api';

interface Proc {
  kind: Kind;
  child: ChildProcess;
  pid: number;
  url: string | undefined;
  ready: boolean;
  /** Set just before we send SIGKILL. */
  killedAt: number | undefined;
  /** When the exit was observed: after this the process runs nothing. */
  exitedAt: number | undefined;
  exited: Promise<void>;
  out(): string;
  err(): string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const tail = (s: string, n = 2000) => (s.length > n ? `…${s.slice(-n)}` : s);

describe('crash safety: kill -9 of API and worker processes', { skip: ENGINE !== 'postgres' && 'needs PostgreSQL: several processes share one database' }, () => {
  const dbName = `fabric_crash_${randomBytes(6).toString('hex')}`;
  let tmp = '';
  let logFile = '';
  const procs: Proc[] = [];
  let pool: pg.Pool;
  let token: string;

  const childEnv = (): NodeJS.ProcessEnv => {
    const env: NodeJS.ProcessEnv = { ...process.env };
    for (const k of Object.keys(env)) if (k.startsWith('FABRIC_') || k === 'NODE_TEST_CONTEXT') delete env[k];
    for (const k of ['DATABASE_URL', 'PORT']) delete env[k];
    return {
      ...env,
      DATABASE_URL: pgUrl(dbName),
      FABRIC_JWT_SECRET: SECRET,
      FABRIC_TASK_LEASE_SECONDS: String(LEASE_SECONDS),
      FABRIC_WORKER_CONCURRENCY: '4',
      FABRIC_HANDLERS_DIR: HANDLERS_DIR,
      FABRIC_LOG_LEVEL: 'warn',
      FABRIC_DRAIN_TIMEOUT_SECONDS: '1',
      FABRIC_DB_POOL_SIZE: '5',
      FABRIC_DATA_DIR: tmp,
      CRASH_HANDLER_LOG: logFile,
    };
  };

  const admin = async (sql: string) => {
    const client = new pg.Client({ connectionString: PG_ADMIN_URL });
    await client.connect();
    await client.query(sql).finally(() => client.end());
  };

  /** Starts `serve` (API + 1 worker), `api` (serve --workers 0) or `worker` (1 worker); `ready` flips when it says so. */
  function spawnFabric(kind: Kind): Proc {
    const args = kind === 'worker' ? ['worker', '--workers', '1'] : ['serve', '--port', '0', '--workers', kind === 'api' ? '0' : '1'];
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], { cwd: ROOT, env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const proc: Proc = {
      kind,
      child,
      pid: child.pid!,
      url: undefined,
      ready: false,
      killedAt: undefined,
      exitedAt: undefined,
      exited: new Promise((resolve) =>
        child.on('exit', () => {
          proc.exitedAt = Date.now();
          proc.ready = false;
          resolve();
        }),
      ),
      out: () => out,
      err: () => err,
    };
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      if (proc.ready || proc.exitedAt !== undefined) return;
      const served = /is serving on (http:\/\/\S+)/.exec(out);
      if (served) proc.url = served[1];
      if (served || (kind === 'worker' && /worker is running/.test(out))) proc.ready = true;
    });
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
    procs.push(proc);
    return proc;
  }

  const describeProc = (p: Proc) => `${p.kind} pid ${p.pid}\n--- stdout\n${tail(p.out())}\n--- stderr\n${tail(p.err())}`;

  async function waitReady(p: Proc, ms = START_TIMEOUT_MS): Promise<Proc> {
    const until = Date.now() + ms;
    while (!p.ready) {
      if (p.exitedAt !== undefined) throw new Error(`exited before it was ready: ${describeProc(p)}`);
      if (Date.now() > until) throw new Error(`not ready after ${ms} ms: ${describeProc(p)}`);
      await sleep(25);
    }
    return p;
  }

  async function kill(p: Proc): Promise<void> {
    if (p.exitedAt !== undefined) return;
    p.killedAt = Date.now();
    p.ready = false;
    p.child.kill('SIGKILL');
    await Promise.race([p.exited, sleep(10_000)]);
    if (p.exitedAt === undefined) throw new Error(`pid ${p.pid} survived SIGKILL for 10 s`);
  }

  /** Processes that exited although nobody killed them (a crash of its own is a defect). */
  const unexpectedExits = () => procs.filter((p) => p.exitedAt !== undefined && p.killedAt === undefined);

  async function api(url: string, method: string, route: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
    const res = await fetch(`${url}${route}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(15_000),
    });
    const text = await res.text();
    return { status: res.status, json: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
  }

  async function provision(url: string, name: string, maxConcurrency: number): Promise<string> {
    const r = await api(url, 'POST', '/api/agents/provision', {
      name,
      model: 'none',
      isolation: { level: 'none' },
      entrypoint: { handler: 'crash-handler.mjs' },
      max_queue_depth: 10_000,
      max_concurrency: maxConcurrency,
    });
    assert.equal(r.status, 201, JSON.stringify(r.json));
    return (r.json.agent as { id: string }).id;
  }

  interface LogLine {
    what: 'start' | 'end' | 'abort';
    task: string;
    pid: number;
    attempt: number;
    at: number;
  }

  function readLog(): { lines: LogLine[]; malformed: string[] } {
    const lines: LogLine[] = [];
    const malformed: string[] = [];
    const text = fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8') : '';
    for (const raw of text.split('\n')) {
      if (!raw) continue;
      const m = /^(start|end|abort) ([0-9a-f-]{36}) (\d+) (\d+) (\d+)$/.exec(raw);
      if (!m) malformed.push(raw);
      else lines.push({ what: m[1] as LogLine['what'], task: m[2]!, pid: Number(m[3]), attempt: Number(m[4]), at: Number(m[5]) });
    }
    return { lines, malformed };
  }

  before(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fabric-crash-'));
    logFile = path.join(tmp, 'handler.log');
    await admin(`CREATE DATABASE ${dbName}`);
    pool = new pg.Pool({ connectionString: pgUrl(dbName), max: 2 });
    // an idle connection ended by the server (the database is dropped WITH (FORCE) at the end) is not a failure
    pool.on('error', () => {});
    token = await mintToken({ secret: SECRET, issuer: 'agent-fabric', audience: 'agent-fabric' }, { sub: 'crash-test', role: 'admin', tenant: 'default', ttl: '1h' });
    const migrate = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'migrate'], { cwd: ROOT, env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    migrate.stdout.setEncoding('utf8').on('data', (d: string) => (output += d));
    migrate.stderr.setEncoding('utf8').on('data', (d: string) => (output += d));
    const code = await Promise.race([
      new Promise<number | null>((resolve) => migrate.on('close', resolve)),
      sleep(START_TIMEOUT_MS).then(() => {
        migrate.kill('SIGKILL');
        return 'timeout' as const;
      }),
    ]);
    assert.equal(code, 0, `migrate failed (${code}): ${output}`);
  });

  after(async () => {
    await Promise.all(procs.map((p) => kill(p).catch(() => {})));
    await pool?.end().catch(() => {});
    await admin(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`).catch((err: unknown) => console.error(`dropping ${dbName} failed:`, err));
    if (process.env.CRASH_TEST_KEEP_LOG) console.log(`crash test handler log kept in ${logFile}`);
    else if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('a worker killed with -9 mid-task loses its lease; another worker completes the task once', { timeout: 90_000 }, async (t) => {
    const apiProc = await waitReady(spawnFabric('api'));
    const a = await waitReady(spawnFabric('worker'));
    const agent = await provision(apiProc.url!, 'lease-bot', 1);
    const r = await api(apiProc.url!, 'POST', '/api/tasks', { agent_id: agent, type: 'lease', payload: { block_on_first_attempt: true } });
    assert.equal(r.status, 201, JSON.stringify(r.json));
    const id = (r.json.task as { id: string }).id;

    // running in A: its handler has started and A holds the lease
    const until = Date.now() + 20_000;
    for (;;) {
      const started = readLog().lines.some((l) => l.task === id && l.what === 'start' && l.pid === a.pid);
      const row = (await pool.query<{ status: string; lease_owner: string | null }>('SELECT status, lease_owner FROM tasks WHERE id = $1', [id])).rows[0];
      if (started && row?.status === 'running' && row.lease_owner?.includes(`-${a.pid}-`)) break;
      assert.ok(Date.now() < until, `the task never ran in worker pid ${a.pid}: ${JSON.stringify(row)}\n${describeProc(a)}`);
      await sleep(50);
    }
    await kill(a);
    const b = await waitReady(spawnFabric('worker'));

    let status = '';
    const done = Date.now() + 30_000;
    while (Date.now() < done) {
      status = (await pool.query<{ status: string }>('SELECT status FROM tasks WHERE id = $1', [id])).rows[0]!.status;
      if (TERMINAL.includes(status as TaskStatus)) break;
      await sleep(100);
    }
    assert.equal(status, 'completed', `task ${id} did not complete after its worker was killed\n${describeProc(b)}`);

    const attempts = (
      await pool.query<{ attempt: number; worker_id: string; outcome: string | null; finished_at: Date | null }>(
        'SELECT attempt, worker_id, outcome, finished_at FROM task_attempts WHERE task_id = $1 ORDER BY attempt',
        [id],
      )
    ).rows;
    assert.deepEqual(
      attempts.map((x) => x.outcome),
      ['lease_lost', 'completed'],
      JSON.stringify(attempts),
    );
    assert.ok(attempts[0]!.worker_id.includes(`-${a.pid}-`), `attempt 1 ran on ${attempts[0]!.worker_id}, not pid ${a.pid}`);
    assert.ok(attempts[1]!.worker_id.includes(`-${b.pid}-`), `attempt 2 ran on ${attempts[1]!.worker_id}, not pid ${b.pid}`);
    assert.ok(attempts.every((x) => x.finished_at !== null));

    const completions = (await pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM system_events WHERE event_type = 'task.completed' AND subject_id = $1`, [id])).rows[0]!.n;
    assert.equal(completions, 1, 'exactly one task.completed event');

    const runs = readLog().lines.filter((l) => l.task === id);
    assert.deepEqual(
      runs.map((l) => `${l.what} ${l.pid} ${l.attempt}`),
      [`start ${a.pid} 1`, `start ${b.pid} 2`, `end ${b.pid} 2`],
      'the handler ran once in A (killed) and once, to its end, in B',
    );
    const secondStart = runs[1]!.at;
    assert.ok(secondStart >= a.exitedAt!, `B started the task at ${secondStart}, before A died at ${a.exitedAt}`);
    t.diagnostic(`A (pid ${a.pid}) killed; B (pid ${b.pid}) started the task ${secondStart - a.killedAt!} ms later (lease ${LEASE_SECONDS} s)`);

    await Promise.all([kill(apiProc), kill(b)]);
    assert.deepEqual(unexpectedExits().map(describeProc), []);
  });

  it(`${SUBMISSIONS} submissions while API and worker processes are killed -9 every ~${KILL_EVERY_MS + KILL_JITTER_MS / 2} ms: every 201 completes, no handler runs twice at once`, { timeout: 240_000 }, async (t: TestContext) => {
    const began = Date.now();
    // two API+worker processes and one worker-only process; a killed one is replaced by one of its kind
    const initial = [spawnFabric('serve'), spawnFabric('serve'), spawnFabric('worker')];
    await Promise.all(initial.map((p) => waitReady(p)));
    const agents: string[] = [];
    for (let i = 0; i < AGENTS; i++) agents.push(await provision(initial[0]!.url!, `crash-bot-${i}`, 4));

    const live = () => procs.filter((p) => p.exitedAt === undefined && p.killedAt === undefined);
    const servers = () => live().filter((p) => p.ready && p.url && p.kind === 'serve');
    const accepted = new Set<string>();
    const outcomes = new Map<string, number>();
    const count = (k: string) => outcomes.set(k, (outcomes.get(k) ?? 0) + 1);
    const sent = () => [...outcomes.values()].reduce((a, b) => a + b, 0);
    const kills: { pid: number; kind: Kind; at: number }[] = [];
    let burstDone = false;
    let next = 0;
    const burstStart = Date.now();
    const deadline = burstStart + BURST_MAX_MS;

    const submitter = async () => {
      while ((next < SUBMISSIONS || kills.length < MIN_KILLS) && Date.now() < deadline) {
        const i = next++;
        // paced over at least BURST_MIN_MS, so a fast host still sees many kills during the burst
        const due = burstStart + (i * BURST_MIN_MS) / SUBMISSIONS;
        if (due > Date.now()) await sleep(due - Date.now());
        let up = servers();
        while (up.length === 0 && Date.now() < deadline) {
          await sleep(20);
          up = servers();
        }
        const server = up[Math.floor(Math.random() * up.length)];
        if (!server) break;
        try {
          const res = await fetch(`${server.url}/api/tasks`, {
            method: 'POST',
            headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
            body: JSON.stringify({ agent_id: agents[i % agents.length], type: 'crash', payload: { i } }),
            signal: AbortSignal.timeout(10_000),
          });
          const text = await res.text();
          count(String(res.status));
          if (res.status === 201) accepted.add((JSON.parse(text) as { task: { id: string } }).task.id);
        } catch {
          count('connection failed'); // its server was killed: the request may or may not have committed
        }
      }
    };

    const chaos = async () => {
      while (!burstDone) {
        await sleep(KILL_EVERY_MS + Math.random() * KILL_JITTER_MS);
        // a ready process, but never the last ready API server, so submissions keep flowing;
        // while replacements are still starting, wait for one to become ready
        const pick = () => {
          const candidates = live().filter((p) => p.ready && !(p.kind === 'serve' && servers().length <= 1));
          return candidates[Math.floor(Math.random() * candidates.length)];
        };
        let victim = pick();
        while (!victim && !burstDone) {
          await sleep(50);
          victim = pick();
        }
        if (!victim || burstDone) break;
        kills.push({ pid: victim.pid, kind: victim.kind, at: Date.now() });
        await kill(victim);
        spawnFabric(victim.kind);
      }
    };

    const chaosDone = chaos();
    await Promise.all(Array.from({ length: IN_FLIGHT }, submitter));
    const burstEnd = Date.now();
    burstDone = true;
    await chaosDone;
    t.diagnostic(`burst: ${sent()} submissions in ${burstEnd - burstStart} ms, ${accepted.size} got 201; responses ${JSON.stringify(Object.fromEntries(outcomes))}`);
    t.diagnostic(`kills: ${kills.length} (${kills.filter((k) => k.kind === 'serve').length} API+worker, ${kills.filter((k) => k.kind === 'worker').length} worker-only)`);

    // the survivors and replacements finish the work
    await Promise.all(live().map((p) => waitReady(p)));
    const settleBy = Date.now() + SETTLE_MS;
    let byStatus: Record<string, number> = {};
    for (;;) {
      const rows = (await pool.query<{ status: string; n: number }>('SELECT status, count(*)::int AS n FROM tasks GROUP BY status ORDER BY status')).rows;
      byStatus = Object.fromEntries(rows.map((r) => [r.status, r.n]));
      if (rows.every((r) => TERMINAL.includes(r.status as TaskStatus))) break;
      if (Date.now() > settleBy) break;
      await sleep(250);
    }
    t.diagnostic(`settled ${Date.now() - burstEnd} ms after the burst; tasks by status ${JSON.stringify(byStatus)}`);

    // every 201 exists and is terminal
    const ids = [...accepted];
    const rows = (
      await pool.query<{ id: string; status: string; attempts: number; max_retries: number; error: unknown }>(
        'SELECT id, status, attempts, max_retries, error FROM tasks WHERE id = ANY($1::uuid[])',
        [ids],
      )
    ).rows;
    const found = new Map(rows.map((r) => [r.id, r]));
    const missing = ids.filter((id) => !found.has(id));
    assert.deepEqual(missing, [], `${missing.length} tasks that got a 201 do not exist`);
    const stuck = (await pool.query<{ id: string; status: string; attempts: number; lease_owner: string | null; lease_expires_at: Date | null }>(
      `SELECT id, status, attempts, lease_owner, lease_expires_at FROM tasks WHERE status <> ALL($1::text[]) ORDER BY id LIMIT 20`,
      [TERMINAL],
    )).rows;
    assert.deepEqual(stuck, [], `tasks not terminal ${SETTLE_MS} ms after the burst (by status ${JSON.stringify(byStatus)})`);

    // not completed is allowed only as a dead letter whose every attempt lost its lease to a kill
    const notCompleted = rows.filter((r) => r.status !== 'completed');
    if (notCompleted.length > 0) {
      const attempts = (
        await pool.query<{ task_id: string; outcomes: string[] }>(
          'SELECT task_id, array_agg(outcome ORDER BY attempt) AS outcomes FROM task_attempts WHERE task_id = ANY($1::uuid[]) GROUP BY task_id',
          [notCompleted.map((r) => r.id)],
        )
      ).rows;
      const outcomesOf = new Map(attempts.map((a) => [a.task_id, a.outcomes]));
      const unexplained = notCompleted.filter(
        (r) => !(r.status === 'dead_lettered' && r.attempts > r.max_retries && (outcomesOf.get(r.id) ?? []).every((o) => o === 'lease_lost')),
      );
      assert.deepEqual(
        unexplained.map((r) => ({ ...r, outcomes: outcomesOf.get(r.id) })),
        [],
        'tasks that ended without completing for another reason than running out of attempts to kills',
      );
    }

    // exactly one task.completed event per completed task (all tasks, also those whose 201 was lost)
    const events = (
      await pool.query<{ id: string; n: number }>(
        `SELECT t.id, (SELECT count(*)::int FROM system_events e WHERE e.event_type = 'task.completed' AND e.subject_id = t.id::text) AS n
           FROM tasks t WHERE t.agent_id = ANY($1::uuid[])`,
        [agents],
      )
    ).rows;
    const completedIds = new Set(
      (await pool.query<{ id: string }>(`SELECT id FROM tasks WHERE status = 'completed' AND agent_id = ANY($1::uuid[])`, [agents])).rows.map((r) => r.id),
    );
    const badEvents = events.filter((e) => e.n !== (completedIds.has(e.id) ? 1 : 0));
    assert.deepEqual(badEvents, [], 'task.completed events ≠ 1 per completed task');

    // the handler log: no task's runs overlap in time
    const { lines, malformed } = readLog();
    assert.deepEqual(malformed, [], 'malformed handler log lines');
    const byPid = new Map(procs.map((p) => [p.pid, p]));
    interface Run {
      pid: number;
      attempt: number;
      start: number;
      end: number;
      how: 'end' | 'abort' | 'killed';
    }
    const runs = new Map<string, Map<number, Run>>();
    const problems: string[] = [];
    for (const l of lines) {
      const p = byPid.get(l.pid);
      if (p?.exitedAt !== undefined && l.at > p.exitedAt) problems.push(`pid ${l.pid} logged "${l.what}" for ${l.task} at ${l.at}, after it died at ${p.exitedAt}`);
      let perTask = runs.get(l.task);
      if (!perTask) runs.set(l.task, (perTask = new Map()));
      const run = perTask.get(l.attempt);
      if (l.what === 'start') {
        if (run) problems.push(`task ${l.task} attempt ${l.attempt} started twice (pids ${run.pid}, ${l.pid})`);
        else perTask.set(l.attempt, { pid: l.pid, attempt: l.attempt, start: l.at, end: Number.POSITIVE_INFINITY, how: 'killed' });
      } else if (!run || run.pid !== l.pid || run.how !== 'killed' || run.end !== Number.POSITIVE_INFINITY) {
        problems.push(`task ${l.task} attempt ${l.attempt}: "${l.what}" in pid ${l.pid} without its start`);
      } else {
        run.end = l.at;
        run.how = l.what;
      }
    }
    for (const [task, perTask] of runs) {
      for (const run of perTask.values()) {
        if (run.end !== Number.POSITIVE_INFINITY) continue;
        const p = byPid.get(run.pid);
        // a run without an end died with its process
        if (p?.exitedAt !== undefined && p.killedAt !== undefined) run.end = p.exitedAt;
        else problems.push(`task ${task} attempt ${run.attempt} started in pid ${run.pid} at ${run.start} and never ended, though that process was not killed`);
      }
      const sorted = [...perTask.values()].sort((x, y) => x.start - y.start);
      for (let i = 1; i < sorted.length; i++) {
        const prev = sorted.slice(0, i).reduce((m, r) => (r.end > m.end ? r : m));
        const cur = sorted[i]!;
        if (cur.start < prev.end)
          problems.push(
            `task ${task} ran concurrently: attempt ${prev.attempt} in pid ${prev.pid} [${prev.start}, ${prev.end}] (${prev.how}) and attempt ${cur.attempt} in pid ${cur.pid} from ${cur.start}`,
          );
      }
    }
    // every completed task's recorded attempt ran its handler to the end
    const completedAttempts = (
      await pool.query<{ id: string; attempts: number }>(`SELECT id, attempts FROM tasks WHERE status = 'completed' AND agent_id = ANY($1::uuid[])`, [agents])
    ).rows;
    for (const c of completedAttempts) {
      const run = runs.get(c.id)?.get(c.attempts);
      if (run?.how !== 'end') problems.push(`task ${c.id} is completed by attempt ${c.attempts}, but the handler log has no end of that attempt (${JSON.stringify(run ?? null)})`);
    }
    for (const id of accepted) if (!runs.has(id) && found.get(id)?.status === 'completed') problems.push(`task ${id} completed without its handler running`);
    assert.deepEqual(problems.slice(0, 30), [], `${problems.length} problems in the handler log`);

    const runCounts = [...runs.values()].map((m) => m.size);
    const rerun = runCounts.filter((n) => n > 1).length;
    const ended = [...runs.values()].map((m) => [...m.values()].filter((r) => r.how === 'end').length);
    t.diagnostic(
      `handler runs: ${runCounts.reduce((s, n) => s + n, 0)} for ${runs.size} tasks; ${rerun} tasks ran more than once; ` +
        `${ended.filter((n) => n > 1).length} ran to the end more than once (killed before the outcome was recorded); ` +
        `${[...runs.values()].flatMap((m) => [...m.values()]).filter((r) => r.how === 'killed').length} runs died with their process`,
    );
    // Re-runs are allowed (at-least-once), but each should be explained by a kill: a lease
    // lost by a process that was never killed means a live worker missed its heartbeats.
    const attemptRows = (
      await pool.query<{ task_id: string; attempt: number; worker_id: string; outcome: string | null }>(
        'SELECT a.task_id, a.attempt, a.worker_id, a.outcome FROM task_attempts a JOIN tasks t ON t.id = a.task_id WHERE t.agent_id = ANY($1::uuid[])',
        [agents],
      )
    ).rows;
    const outcomeCounts: Record<string, number> = {};
    for (const a of attemptRows) outcomeCounts[String(a.outcome)] = (outcomeCounts[String(a.outcome)] ?? 0) + 1;
    const killedPids = new Set(procs.filter((p) => p.killedAt !== undefined).map((p) => p.pid));
    const pidOf = (workerId: string) => Number(/-(\d+)-[0-9a-f]+$/.exec(workerId)?.[1]);
    const liveLosses = attemptRows.filter((a) => a.outcome === 'lease_lost' && !killedPids.has(pidOf(a.worker_id)));
    t.diagnostic(`attempts by outcome ${JSON.stringify(outcomeCounts)}; leases lost by workers that were not killed: ${liveLosses.length}${liveLosses.length ? ` e.g. ${JSON.stringify(liveLosses.slice(0, 5))}` : ''}`);
    assert.deepEqual(
      attemptRows.filter((a) => a.outcome !== 'completed' && a.outcome !== 'lease_lost'),
      [],
      'attempts that ended otherwise than completed or lease_lost (the handler never fails)',
    );
    assert.deepEqual(unexpectedExits().map(describeProc), [], 'processes that died without being killed');
    t.diagnostic(`total ${Date.now() - began} ms`);
    // the burst was real: checked last, so a slow host still gets the correctness checks above
    assert.ok(kills.length >= MIN_KILLS, `only ${kills.length} kills happened during the burst`);
    assert.ok(accepted.size >= MIN_ACCEPTED, `only ${accepted.size} of ${sent()} submissions got a 201: ${JSON.stringify(Object.fromEntries(outcomes))}`);
  });
});
