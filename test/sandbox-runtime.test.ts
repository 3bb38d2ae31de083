import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { mintToken } from '../src/auth/index.js';
import { detectSandboxHost, missingFor, reapStaleSandboxes, SandboxExecutor, UidPool } from '../src/sandbox/index.js';
import { createSessionCgroup } from '../src/sandbox/cgroups.js';
import { closeOrphanSessions } from '../src/sandbox/sessions.js';
import { MAX_ATTEMPT_LOG_BYTES } from '../src/worker/attempt-log.js';
import { InProcessExecutor, type Worker } from '../src/worker/index.js';
import { startTestApp, tokenOptions, type TestApp } from './support/app.js';
import { ENGINE } from './support/engine.js';
import { provisionAgent, scriptedExecutor, startWorker, submit, terminal, waitForTask } from './support/queue.js';

interface StoredEvent {
  event_type: string;
  data: { lines?: string[]; attempt?: number };
}

async function taskEvents(t: TestApp, taskId: string): Promise<StoredEvent[]> {
  const r = await t.db.query<StoredEvent>(`SELECT event_type, data FROM system_events WHERE subject_id = $1 ORDER BY id`, [taskId]);
  return r.rows;
}

describe(`attempt logs (${ENGINE})`, () => {
  let t: TestApp;
  let worker: Worker;
  before(async () => {
    t = await startTestApp();
    worker = await startWorker(
      t,
      scriptedExecutor({
        chatty: async (_task, ctx) => {
          for (let i = 0; i < 450; i++) ctx.log(`line ${i}`);
          return { ok: true };
        },
        flood: async (_task, ctx) => {
          const big = 'x'.repeat(64 * 1024);
          for (let i = 0; i < 40; i++) ctx.log(big);
          return { ok: true };
        },
      }),
    );
  });
  after(async () => {
    await worker?.stop(1000);
    await t?.close();
  });

  it('every line becomes part of a task.log event, in order, stored before the terminal event', async () => {
    const id = await provisionAgent(t);
    const task = (await submit(t, { agent_id: id, type: 'chatty' })).json().task;
    assert.equal((await waitForTask(t, task.id, terminal)).status, 'completed');
    const events = await taskEvents(t, task.id);
    const logs = events.filter((e) => e.event_type === 'task.log');
    assert.ok(logs.length >= 3, `batched into a few events, got ${logs.length}`);
    assert.deepEqual(logs.flatMap((e) => e.data.lines), Array.from({ length: 450 }, (_, i) => `line ${i}`));
    assert.ok(logs.every((e) => e.data.attempt === 1));
    const lastLog = events.findLastIndex((e) => e.event_type === 'task.log');
    assert.ok(lastLog < events.findIndex((e) => e.event_type === 'task.completed'), 'the log precedes the outcome');
  });

  it(`a log past ${MAX_ATTEMPT_LOG_BYTES} bytes is cut with one marker line`, async () => {
    const id = await provisionAgent(t);
    const task = (await submit(t, { agent_id: id, type: 'flood' })).json().task;
    assert.equal((await waitForTask(t, task.id, terminal)).status, 'completed');
    const lines = (await taskEvents(t, task.id)).filter((e) => e.event_type === 'task.log').flatMap((e) => e.data.lines!);
    assert.equal(lines.at(-1), `[agent-fabric: log truncated at ${MAX_ATTEMPT_LOG_BYTES} bytes]`);
    assert.ok(lines.slice(0, -1).join('\n').length <= MAX_ATTEMPT_LOG_BYTES);
  });
});

describe(`sandbox executor refusals (${ENGINE})`, () => {
  let t: TestApp;
  let worker: Worker;
  let root: string;
  before(async () => {
    t = await startTestApp();
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'fabric-sandbox-runtime-'));
    const executor = new SandboxExecutor({
      db: t.db,
      inProcess: new InProcessExecutor({ root: process.cwd() }),
      uids: new UidPool(path.join(root, 'uids'), 300_000, 10),
      host: { sessionsDir: path.join(root, 'sessions'), helpersDir: path.join(root, 'helpers'), bwrap: undefined, cgroups: { kind: 'none', reason: 'test' }, tmpfsMb: 0 },
      apiUrl: 'http://127.0.0.1:8787',
      mintSessionToken: (c) => mintToken(tokenOptions, { sub: c.agentId, role: 'agent', tenant: c.tenantId, ttl: c.ttlSeconds, extra: { sid: c.sessionId } }),
      unavailable: (level) => (level === 'container' ? 'container isolation needs bubblewrap (bwrap): install the Debian package bubblewrap' : undefined),
    });
    worker = await startWorker(t, executor);
  });
  after(async () => {
    await worker?.stop(1000);
    await t?.close();
    fs.rmSync(root, { recursive: true, force: true });
  });

  const failure = async (agent: Record<string, unknown>) => {
    const id = await provisionAgent(t, agent);
    const task = (await submit(t, { agent_id: id, type: 'x' })).json().task;
    const done = await waitForTask(t, task.id, terminal);
    assert.equal(done.status, 'failed');
    assert.equal(done.attempts, 1, 'a refusal is permanent: no retries');
    return done.error as { code: string; message: string };
  };

  it('a level the host cannot run fails with isolation_unavailable naming what is missing (never a silent downgrade)', async () => {
    const e = await failure({ isolation: { level: 'container' }, entrypoint: { command: ['true'] } });
    assert.equal(e.code, 'isolation_unavailable');
    assert.match(e.message, /bubblewrap/);
  });

  it('a code dir the sandbox uid cannot reach fails with code_dir_unreadable and says how to fix it', async () => {
    const hidden = path.join(root, 'private');
    fs.mkdirSync(path.join(hidden, 'code'), { recursive: true, mode: 0o755 });
    fs.chmodSync(hidden, 0o700);
    const e = await failure({ isolation: { level: 'process' }, entrypoint: { command: ['node', 'a.js'], code_dir: path.join(hidden, 'code') } });
    assert.equal(e.code, 'code_dir_unreadable');
    assert.match(e.message, /chmod o\+x/);
    const relative = await failure({ isolation: { level: 'process' }, entrypoint: { command: ['node', 'a.js'], code_dir: 'agents/x' } });
    assert.match(relative.message, /absolute path/);
  });

  it('sessions whose attempt ended without them (a dead worker) are closed as killed / worker_lost', async () => {
    const id = await provisionAgent(t);
    const task = (await submit(t, { agent_id: id, type: 'x', max_retries: 0 })).json().task;
    await waitForTask(t, task.id, terminal);
    const sid = '00000000-0000-4000-8000-000000000001';
    await t.db.query(`INSERT INTO agent_sessions (id, tenant_id, agent_id, task_id, attempt, worker_id, isolation, status) VALUES ($1, 'default', $2, $3, 1, 'gone', 'process', 'running')`, [sid, id, task.id]);
    assert.equal(await closeOrphanSessions(t.db), 1);
    const r = await t.db.query<{ status: string; error: { code: string } }>(`SELECT status, error FROM agent_sessions WHERE id = $1`, [sid]);
    assert.equal(r.rows[0]!.status, 'killed');
    assert.equal(r.rows[0]!.error.code, 'worker_lost');
    assert.equal(await closeOrphanSessions(t.db), 0);
  });
});

const host = detectSandboxHost();

describe('boot cleanup of a crashed worker\'s sandboxes', { skip: missingFor('process', host) }, () => {
  it('removes the dead owner\'s session dir, tmpfs and cgroup (killing its processes), and leaves a live owner\'s alone', async () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'fabric-reap-'));
    const sessions = path.join(root, 'sessions');
    // a "worker" that has exited: its pid is free
    const dead = spawn('true');
    await new Promise((r) => dead.on('exit', r));
    const live = spawn('sleep', ['30']);
    const make = (name: string, owner: number) => {
      fs.mkdirSync(path.join(sessions, name, 'workspace'), { recursive: true });
      fs.writeFileSync(path.join(sessions, name, 'owner'), String(owner));
    };
    make('stale-1', dead.pid!);
    make('live-1', live.pid!);
    spawn('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', path.join(sessions, 'stale-1', 'workspace')]);
    await new Promise((r) => setTimeout(r, 200));
    fs.writeFileSync(path.join(sessions, 'stale-1', 'workspace', 'secret'), 'left behind');
    const staleCg = await createSessionCgroup(host.cgroups, `s-${dead.pid}-stale-1`, { memoryMb: 64, cpuCores: 1, pids: 16 });
    const liveCg = await createSessionCgroup(host.cgroups, `s-${live.pid}-live-1`, { memoryMb: 64, cpuCores: 1, pids: 16 });
    const orphan = spawn('sleep', ['30'], { detached: true });
    await staleCg.addProcess(orphan.pid!);
    try {
      const report = await reapStaleSandboxes(sessions, host.cgroups);
      assert.equal(report.sessions, 1);
      assert.ok(report.cgroups >= 1, 'the dead worker\'s cgroup (and any other dead worker\'s) was removed');
      assert.ok(!fs.existsSync(staleCg.procsFiles[0]!), 'the stale cgroup is gone');
      assert.ok(!fs.existsSync(path.join(sessions, 'stale-1')), 'the stale session dir is gone');
      assert.ok(fs.existsSync(path.join(sessions, 'live-1')), 'a live worker\'s session is kept');
      const mounts = fs.readFileSync('/proc/self/mounts', 'utf8');
      assert.ok(!mounts.includes(path.join(sessions, 'stale-1')), 'its tmpfs is unmounted');
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(orphan.exitCode ?? orphan.signalCode, 'SIGKILL', 'the orphaned sandbox process was killed');
      assert.deepEqual(await liveCg.usage().then(() => 'exists'), 'exists');
    } finally {
      live.kill('SIGKILL');
      orphan.kill('SIGKILL');
      await liveCg.destroy();
      await staleCg.destroy().catch(() => {});
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});
