import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { detectSandboxHost, missingFor, prepareSandboxRoot, UidPool } from '../src/sandbox/index.js';
import { runSession, type SessionHost, type SessionOutcome } from '../src/sandbox/session.js';

const host = detectSandboxHost();
const GRACE_MS = 1500;

/** Tells the test it started, then idles in short sleeps (so a trap runs promptly). */
const IDLE = 'echo started >&2; while :; do sleep 0.1; done';

describe('stopping a sandbox: SIGTERM, the grace, then SIGKILL', { skip: missingFor('container', host) }, () => {
  let root: string;
  let sessionHost: SessionHost;
  before(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'fabric-stop-'));
    fs.chmodSync(root, 0o755);
    const dirs = prepareSandboxRoot(path.join(root, 'sandbox'));
    sessionHost = {
      ...dirs,
      uids: new UidPool(dirs.uidsDir, 302_000, 20),
      bwrap: host.bwrap,
      cgroups: host.cgroups,
      tmpfsMb: 16,
      onLog: () => {},
      onEgress: () => {},
      stopGraceMs: GRACE_MS,
    };
  });
  after(() => fs.rmSync(root, { recursive: true, force: true }));

  /** Runs `script` and aborts it with `reason` once it has started; returns the outcome and how long the stop took. */
  async function stopWith(level: 'process' | 'container', script: string, reason: string): Promise<{ out: SessionOutcome; stopMs: number }> {
    const id = randomUUID();
    const abort = new AbortController();
    let abortedAt = 0;
    const started = new Promise<void>((resolve) => {
      sessionHost.onLog = (line) => line === 'started' && resolve();
    });
    const run = runSession(
      { id, level, command: ['/bin/sh', '-c', script], memoryMb: 64, cpuCores: 1, pids: 32, egress: [], internal: [], env: {}, stdin: '', timeoutMs: 60_000 },
      sessionHost,
      abort.signal,
    );
    await started;
    abortedAt = performance.now();
    abort.abort(reason);
    const out = await run;
    return { out, stopMs: performance.now() - abortedAt };
  }

  for (const level of ['process', 'container'] as const) {
    it(`${level}: on cancel the program gets SIGTERM and what it saves to out/ in its grace is kept`, async () => {
      const saves = `trap 'echo "saved on SIGTERM" > "$FABRIC_WORKSPACE/out/partial.txt"; exit 3' TERM; ${IDLE}`;
      const { out, stopMs } = await stopWith(level, saves, 'cancel');
      assert.equal(out.stopped, 'cancel');
      assert.equal(out.exitCode, 3, 'the program ran its SIGTERM handler and exited by itself');
      assert.deepEqual(out.artifacts.map((a) => a.name), ['partial.txt']);
      assert.ok(stopMs < GRACE_MS, `it stopped within the grace, took ${Math.round(stopMs)} ms`);
      assert.equal(out.wipe.verified, true);
    });

    it(`${level}: a program that ignores SIGTERM is killed when the grace ends`, async () => {
      const { out, stopMs } = await stopWith(level, `trap '' TERM; ${IDLE}`, 'timeout');
      assert.equal(out.stopped, 'timeout');
      assert.ok(stopMs >= GRACE_MS - 50 && stopMs < GRACE_MS + 3000, `SIGKILL after the ${GRACE_MS} ms grace, took ${Math.round(stopMs)} ms`);
      assert.ok(out.signal === 'SIGKILL' || out.exitCode !== 0, `killed: exit ${out.exitCode}, signal ${out.signal}`);
    });
  }

  it('a lost lease kills at once, without a grace', async () => {
    const { out, stopMs } = await stopWith('container', `trap '' TERM; ${IDLE}`, 'lease_lost');
    assert.equal(out.stopped, 'lease_lost');
    assert.ok(stopMs < GRACE_MS, `forced at once, took ${Math.round(stopMs)} ms`);
  });
});
