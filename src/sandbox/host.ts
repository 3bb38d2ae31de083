import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { detectCgroups, type CgroupSupport } from './cgroups.js';
import { SECCOMP_FILE, seccompArchFor, seccompFilter, seccompUnsupported } from './seccomp.js';

/** What this host offers sandboxes, detected once at worker start. */
export interface SandboxHost {
  bwrap: string | undefined;
  cgroups: CgroupSupport;
  root: boolean;
}

export function detectSandboxHost(): SandboxHost {
  const bwrap = (process.env.PATH ?? '/usr/bin:/bin')
    .split(':')
    .map((d) => path.join(d, 'bwrap'))
    .find((p) => {
      try {
        fs.accessSync(p, fs.constants.X_OK);
        return true;
      } catch {
        return false;
      }
    });
  return { bwrap, cgroups: detectCgroups(), root: process.getuid?.() === 0 };
}

/** Why a level cannot run here, or undefined when it can. Never a silent downgrade. */
export function missingFor(level: 'process' | 'container', host: SandboxHost): string | undefined {
  if (!host.root) return `${level} isolation needs the worker to run as root (to give each sandbox its own uid, cgroup and workspace)`;
  if (host.cgroups.kind === 'none') return `${level} isolation needs cgroups for its limits: ${host.cgroups.reason}`;
  // process sandboxes use bubblewrap too, for their own network namespace (egress only through the proxy)
  if (!host.bwrap) return `${level} isolation needs bubblewrap (bwrap): install the Debian package bubblewrap`;
  return seccompUnsupported();
}

/**
 * Lays out the sandbox root: `sessions/` (0711: every sandbox uid may pass, none may list),
 * `helpers/` (0755: the relay, the Node proxy preload and the container seccomp filter
 * `seccomp.bpf`, mounted read-only at /fabric) and `uids/` (0700). Returns the paths. On an
 * architecture without a filter (see seccomp.ts) no seccomp.bpf is written, and container
 * sandboxes refuse to start (missingFor says why).
 */
export function prepareSandboxRoot(root: string): { sessionsDir: string; helpersDir: string; uidsDir: string } {
  fs.mkdirSync(root, { recursive: true, mode: 0o711 });
  fs.chmodSync(root, 0o711);
  const sessionsDir = path.join(root, 'sessions');
  const helpersDir = path.join(root, 'helpers');
  const uidsDir = path.join(root, 'uids');
  fs.mkdirSync(sessionsDir, { recursive: true, mode: 0o711 });
  fs.mkdirSync(helpersDir, { recursive: true, mode: 0o755 });
  fs.mkdirSync(uidsDir, { recursive: true, mode: 0o700 });
  const egress = path.join(path.dirname(fileURLToPath(import.meta.url)), 'egress');
  for (const f of ['relay.cjs', 'preload.cjs']) {
    fs.copyFileSync(path.join(egress, f), path.join(helpersDir, f));
    fs.chmodSync(path.join(helpersDir, f), 0o644);
  }
  const arch = seccompArchFor();
  if (arch && !seccompUnsupported()) {
    fs.writeFileSync(path.join(helpersDir, SECCOMP_FILE), seccompFilter(arch), { mode: 0o644 });
    fs.chmodSync(path.join(helpersDir, SECCOMP_FILE), 0o644);
  } else fs.rmSync(path.join(helpersDir, SECCOMP_FILE), { force: true });
  return { sessionsDir, helpersDir, uidsDir };
}
