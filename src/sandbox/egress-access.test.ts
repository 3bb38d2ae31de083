import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { detectSandboxHost, missingFor, prepareSandboxRoot } from './host.js';
import { launchSandbox, type LaunchedSandbox } from './launch.js';

const sandboxHost = detectSandboxHost();
const skip = missingFor('process', sandboxHost);
if (skip) console.log(`# egress proxy access tests skipped: ${skip}`);

/** Tries to connect to a unix socket as `uid`; resolves to "connected" or the error code. */
function connectAs(uid: number, socketPath: string): Promise<string> {
  const script = `const s = require('node:net').connect(${JSON.stringify(socketPath)}); s.on('connect', () => { console.log('connected'); s.destroy(); }); s.on('error', (e) => console.log(e.code));`;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', script], { uid, gid: uid, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('close', () => resolve(out.trim()));
  });
}

// NFR-SEC-1: the egress proxy of a session is a unix socket only that session's uid can open
// (its run dir is 0700 and owned by the session's uid); other sandboxes run as other uids.
describe('egress proxy: only its own session can connect', { skip }, () => {
  let root: string;
  let sandbox: LaunchedSandbox;
  const uid = 311_000 + Math.floor(Math.random() * 500);

  before(async () => {
    // short names: a unix socket path must fit in 108 bytes
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'fea-'));
    fs.chmodSync(root, 0o755);
    const dirs = prepareSandboxRoot(path.join(root, 'sandbox'));
    sandbox = await launchSandbox(
      { level: 'process', memoryMb: 64, cpuCores: 1, pids: 16 },
      { sessionsDir: dirs.sessionsDir, helpersDir: dirs.helpersDir, bwrap: sandboxHost.bwrap, cgroups: sandboxHost.cgroups, tmpfsMb: 0 },
      { id: `a-${randomUUID().slice(0, 8)}`, uid },
    );
  });
  after(async () => {
    await sandbox?.dispose();
    if (root) fs.rmSync(root, { recursive: true, force: true });
  });

  it("another sandbox's uid is refused (EACCES); the session's own uid connects", async () => {
    const socketPath = path.join(sandbox.ws.dir, 'run', 'egress.sock');
    const runDir = fs.statSync(path.dirname(socketPath));
    assert.equal(runDir.mode & 0o777, 0o700, 'the run dir is private');
    assert.equal(runDir.uid, uid, "and owned by the session's uid");
    assert.equal(await connectAs(uid + 1, socketPath), 'EACCES', 'a neighbouring sandbox uid cannot reach the proxy');
    assert.equal(await connectAs(65534, socketPath), 'EACCES', 'nor can nobody');
    assert.equal(await connectAs(uid, socketPath), 'connected', 'the session itself can');
  });
});
