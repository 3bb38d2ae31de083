import fs from 'node:fs';
import path from 'node:path';
import { SECCOMP_FILE } from './seccomp.js';

/** Where things appear inside a `container` sandbox. */
export const INSIDE = {
  workspace: '/workspace',
  code: '/agent',
  /** The fabric's read-only helpers (egress relay, Node proxy preload). */
  fabric: '/fabric',
  /** The session's sockets (egress proxy). */
  run: '/run/fabric',
  proxyPort: 3128,
} as const;

export interface CommandSpec {
  level: 'process' | 'container';
  /** The agent's command, e.g. ["node", "agent.js"]. */
  command: readonly string[];
  /** Host path of the session's workspace. */
  workspace: string;
  /** Host path of the agent's code (read-only), if it has one. */
  codeDir?: string | undefined;
  /** Host dir holding the session's sockets (container). */
  runDir: string;
  /** Host dir of the fabric's sandbox helpers (container), with the seccomp filter (seccomp.bpf). */
  helpersDir: string;
  /** Environment the agent sees, and nothing else. */
  env: Record<string, string>;
  /** cgroup.procs files the sandbox joins before its program starts. */
  cgroupProcs: readonly string[];
  /**
   * Runs the program under the fabric's supervisor (relay.cjs, at both levels) with its control
   * channel on `controlFd`: heartbeats every `heartbeatMs` and, when `command` is empty, the
   * program arrives as a header line there (a warm sandbox). `node` runs it at `process` level.
   */
  supervisor?: { controlFd: number; heartbeatMs: number; node: string };
}

/** What to spawn (as the session's uid): the file, its arguments, environment and working directory. */
export interface SpawnPlan {
  file: string;
  args: string[];
  env: Record<string, string>;
  cwd: string;
}

/**
 * Joins the session's cgroups, then execs the rest: the sandbox is limited before its first
 * instruction (a process moved in after spawn could allocate before it).
 */
const JOIN = 'for f in $FABRIC_CGROUP_PROCS; do echo $$ > "$f" || exit 125; done; unset FABRIC_CGROUP_PROCS; exec "$@"';

/** The fd bubblewrap reads the seccomp filter from (`--seccomp 9`), opened by JOIN_SECCOMP. */
const SECCOMP_FD = 9;

/** JOIN, exec'ing bwrap with the seccomp filter open on SECCOMP_FD (JOIN ends in `exec "$@"`; bwrap closes the fd before the sandbox runs). */
const JOIN_SECCOMP = `${JOIN} ${SECCOMP_FD}<"$FABRIC_SECCOMP"`;

/** relay.cjs's supervisor options (without a command after them it waits for its header line). */
function supervisorOptions(s: CommandSpec['supervisor']): string[] {
  return s ? ['--control', String(s.controlFd), '--beat', String(s.heartbeatMs)] : [];
}

/** Host paths the container needs read-only besides /usr (only those that exist here). */
const SYSTEM_RO = ['/etc/alternatives', '/etc/ssl', '/etc/ca-certificates', '/etc/localtime'];

/**
 * bubblewrap arguments: every namespace, a read-only system, only its own /workspace, no
 * capabilities, no new privileges (bwrap always sets it) and the seccomp filter (seccomp.ts).
 */
function bwrapArgs(spec: CommandSpec): string[] {
  const a = ['--unshare-all', '--unshare-user', '--die-with-parent', '--new-session', '--cap-drop', 'ALL', '--seccomp', String(SECCOMP_FD), '--hostname', 'sandbox'];
  a.push('--ro-bind', '/usr', '/usr');
  for (const l of ['bin', 'sbin', 'lib', 'lib64', 'lib32']) if (fs.existsSync(`/usr/${l}`)) a.push('--symlink', `usr/${l}`, `/${l}`);
  for (const p of SYSTEM_RO) if (fs.existsSync(p)) a.push('--ro-bind', p, p);
  a.push('--proc', '/proc', '--dev', '/dev', '--tmpfs', '/tmp', '--tmpfs', '/run');
  a.push('--bind', spec.workspace, INSIDE.workspace);
  a.push('--ro-bind', spec.helpersDir, INSIDE.fabric);
  a.push('--bind', spec.runDir, INSIDE.run);
  if (spec.codeDir) a.push('--ro-bind', spec.codeDir, INSIDE.code);
  // the root bwrap builds is a tmpfs: read-only, so only /workspace, /tmp and /run are writable
  a.push('--remount-ro', '/');
  a.push('--chdir', spec.codeDir ? INSIDE.code : INSIDE.workspace);
  a.push('--clearenv');
  for (const [k, v] of Object.entries(spec.env)) a.push('--setenv', k, v);
  // inside: the relay gives the agent its only way out (127.0.0.1:3128 → the egress proxy);
  // it heartbeats on the control fd, starts the program (after "--", or from its header line)
  // once it listens, forwards signals and exits with its status
  const own = supervisorOptions(spec.supervisor).map((o) => `${o} `).join('');
  const relay = `exec node ${INSIDE.fabric}/relay.cjs ${own}${INSIDE.run}/egress.sock ${INSIDE.proxyPort}${spec.command.length ? ' -- "$@"' : ''}`;
  a.push('--', '/bin/sh', '-c', relay, 'fabric-sandbox', ...spec.command);
  return a;
}

/**
 * bubblewrap arguments of a `process` sandbox: the host's filesystem as its uid sees it (file
 * permissions separate sandboxes) with private /tmp and /run, its own (empty) network namespace
 * — out only through the relay to its egress proxy, as a container — no capabilities, no new
 * privileges, the seccomp filter. The relay runs from the host paths.
 */
function processArgs(spec: CommandSpec): string[] {
  const a = ['--unshare-user', '--unshare-net', '--unshare-ipc', '--die-with-parent', '--new-session', '--cap-drop', 'ALL', '--seccomp', String(SECCOMP_FD)];
  // the host's /tmp, /run (so /var/run) and /dev/shm hold other programs' Unix sockets (PostgreSQL,
  // MariaDB, Docker…), which a network namespace does not cover: private ones instead (and a
  // minimal /dev), with only this session's dir, the helpers and the code bound back at their host paths
  a.push('--bind', '/', '/', '--dev', '/dev', '--tmpfs', '/tmp', '--tmpfs', '/run');
  a.push('--bind', path.dirname(spec.workspace), path.dirname(spec.workspace), '--ro-bind', spec.helpersDir, spec.helpersDir);
  if (spec.codeDir) a.push('--ro-bind', spec.codeDir, spec.codeDir);
  a.push('--chdir', spec.codeDir ?? spec.workspace, '--unsetenv', 'FABRIC_SECCOMP', '--');
  const s = spec.supervisor;
  if (!s) return [...a, ...spec.command];
  const egress = [path.join(spec.runDir, 'egress.sock'), String(INSIDE.proxyPort)];
  return [...a, s.node, path.join(spec.helpersDir, 'relay.cjs'), ...supervisorOptions(s), ...egress, ...(spec.command.length ? ['--', ...spec.command] : [])];
}

export function spawnPlan(spec: CommandSpec, bwrap: string): SpawnPlan {
  const join = { FABRIC_CGROUP_PROCS: spec.cgroupProcs.join(' ') };
  const seccomp = path.join(spec.helpersDir, SECCOMP_FILE);
  if (!fs.existsSync(seccomp)) throw new Error(`${spec.level} isolation needs its seccomp filter at ${seccomp}, which is missing: prepareSandboxRoot writes it (x86_64 and arm64 only)`);
  if (spec.level === 'process') {
    return { file: '/bin/sh', args: ['-c', JOIN_SECCOMP, 'fabric-sandbox', bwrap, ...processArgs(spec)], env: { ...spec.env, ...join, FABRIC_SECCOMP: seccomp }, cwd: spec.codeDir ?? spec.workspace };
  }
  return { file: '/bin/sh', args: ['-c', JOIN_SECCOMP, 'fabric-sandbox', bwrap, ...bwrapArgs(spec)], env: { PATH: '/usr/bin:/bin', ...join, FABRIC_SECCOMP: seccomp }, cwd: spec.workspace };
}
