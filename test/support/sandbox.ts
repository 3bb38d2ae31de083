import { mintToken } from '../../src/auth/index.js';
import { detectSandboxHost, SandboxExecutor, UidPool, type prepareSandboxRoot } from '../../src/sandbox/index.js';
import { InProcessExecutor } from '../../src/worker/index.js';
import { tokenOptions, type TestApp } from './app.js';

/** A SandboxExecutor over the test app's database: its own uid range, session tokens signed with the test secret. */
export function testSandboxExecutor(
  t: TestApp,
  dirs: ReturnType<typeof prepareSandboxRoot>,
  opts: { uidBase: number; uidCount: number; apiUrl?: string; pidsLimit?: number; keepArtifacts?: boolean },
): SandboxExecutor {
  const host = detectSandboxHost();
  return new SandboxExecutor({
    db: t.db,
    inProcess: new InProcessExecutor({ root: process.cwd() }),
    uids: new UidPool(dirs.uidsDir, opts.uidBase, opts.uidCount),
    host: { ...dirs, bwrap: host.bwrap, cgroups: host.cgroups, tmpfsMb: 64 },
    ...(opts.keepArtifacts ? { files: t.files } : {}),
    apiUrl: opts.apiUrl ?? 'http://127.0.0.1:8787',
    mintSessionToken: (c) => mintToken(tokenOptions, { sub: c.agentId, role: 'agent', tenant: c.tenantId, ttl: c.ttlSeconds, extra: { sid: c.sessionId } }),
    ...(opts.pidsLimit ? { pidsLimit: opts.pidsLimit } : {}),
  });
}
