import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { spawnPlan, type CommandSpec, type SpawnPlan } from './command.js';
import { detectSandboxHost, prepareSandboxRoot } from './host.js';
import {
  AUDIT_ARCH,
  BPF,
  CLONE_NAMESPACES,
  DATA,
  DENIED,
  ERRNO,
  INSPECTED,
  SECCOMP_FILE,
  SECCOMP_RET,
  seccompArchFor,
  seccompFilter,
  seccompProgram,
  seccompUnsupported,
  X32_SYSCALL_BIT,
  type SeccompArch,
  type SockFilter,
} from './seccomp.js';

const ARCHES: SeccompArch[] = ['x86_64', 'aarch64'];
const EPERM = SECCOMP_RET.ERRNO | ERRNO.EPERM;
const ENOSYS = SECCOMP_RET.ERRNO | ERRNO.ENOSYS;
const { ALLOW, KILL_PROCESS } = SECCOMP_RET;

/** Flags glibc's fork() and pthread_create() pass to clone. */
const FORK_FLAGS = 0x01200011; // CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | SIGCHLD
const THREAD_FLAGS = 0x003d0f00; // VM | FS | FILES | SIGHAND | THREAD | SYSVSEM | SETTLS | PARENT_SETTID | CHILD_CLEARTID
const NAMESPACE_FLAGS = { NEWNS: 0x00020000, NEWCGROUP: 0x02000000, NEWUTS: 0x04000000, NEWIPC: 0x08000000, NEWUSER: 0x10000000, NEWPID: 0x20000000, NEWNET: 0x40000000 };

/** The parts of struct sock_filter[] back from the bytes bubblewrap reads. */
function decode(buf: Buffer): SockFilter[] {
  assert.equal(buf.length % 8, 0, 'whole struct sock_filter entries');
  return Array.from({ length: buf.length / 8 }, (_, i) => ({ code: buf.readUInt16LE(i * 8), jt: buf.readUInt8(i * 8 + 2), jf: buf.readUInt8(i * 8 + 3), k: buf.readUInt32LE(i * 8 + 4) }));
}

/** A classic-BPF interpreter for the instructions a seccomp filter may use here; refuses anything else. */
function evaluate(prog: SockFilter[], call: { nr: number; arch: number; args?: bigint[] }): number {
  const data = Buffer.alloc(64); // struct seccomp_data: int nr, u32 arch, u64 ip, u64 args[6]
  data.writeInt32LE(call.nr | 0, 0);
  data.writeUInt32LE(call.arch, 4);
  (call.args ?? []).forEach((a, i) => data.writeBigUInt64LE(a, 16 + 8 * i));
  let acc = 0;
  for (let pc = 0, steps = 0; ; steps++) {
    assert.ok(steps <= prog.length, 'the program only jumps forward, so it ends within its length');
    const ins = prog[pc];
    assert.ok(ins, `pc ${pc} ran off the end of the program`);
    switch (ins.code) {
      case BPF.LD_W_ABS:
        assert.ok(ins.k % 4 === 0 && ins.k + 4 <= 64, `aligned load inside seccomp_data, got ${ins.k}`);
        acc = data.readUInt32LE(ins.k);
        pc++;
        break;
      case BPF.JEQ_K:
        pc += 1 + (acc === ins.k ? ins.jt : ins.jf);
        break;
      case BPF.JGE_K:
        pc += 1 + (acc >= ins.k ? ins.jt : ins.jf);
        break;
      case BPF.JSET_K:
        pc += 1 + ((acc & ins.k) >>> 0 !== 0 ? ins.jt : ins.jf);
        break;
      case BPF.RET_K:
        return ins.k;
      default:
        assert.fail(`unexpected opcode 0x${ins.code.toString(16)} at ${pc}`);
    }
  }
}

/** `#define __NR_<name> <n>` from a kernel header, or undefined when it is not installed. */
function headerNumbers(file: string): Map<string, number> | undefined {
  if (!fs.existsSync(file)) return undefined;
  const m = new Map<string, number>();
  for (const [, name, n] of fs.readFileSync(file, 'utf8').matchAll(/^#define __NR_(\w+)\s+(\d+)\s*$/gm)) m.set(name!, Number(n));
  return m;
}

const HEADERS: Record<SeccompArch, string> = { x86_64: '/usr/include/x86_64-linux-gnu/asm/unistd_64.h', aarch64: '/usr/include/asm-generic/unistd.h' };

for (const arch of ARCHES) {
  describe(`seccomp filter program (${arch})`, () => {
    const prog = decode(seccompFilter(arch));
    const native = AUDIT_ARCH[arch];
    const run = (nr: number, args: bigint[] = []) => evaluate(prog, { nr, arch: native, args });
    const denied = Object.entries(DENIED).filter(([, n]) => n[arch] !== undefined);

    it('is the assembled program, byte for byte, and well within the kernel limit', () => {
      assert.deepEqual(prog, seccompProgram(arch));
      // arch check (2) + load nr (1) + x32 check (x86_64) + one jeq per denied call + clone, clone3,
      // personality (3) + allow (1) + clone's flag test (2) + personality's values (6) + eperm, allow, enosys, kill (4)
      assert.equal(prog.length, 2 + 1 + (arch === 'x86_64' ? 1 : 0) + denied.length + 3 + 1 + 2 + 6 + 4);
      assert.ok(prog.length < 4096);
    });

    it('starts with the architecture check, killing any other ABI', () => {
      assert.deepEqual(prog[0], { code: BPF.LD_W_ABS, jt: 0, jf: 0, k: DATA.arch });
      assert.equal(prog[1]!.code, BPF.JEQ_K);
      assert.equal(prog[1]!.k, native);
      assert.equal(prog[1]!.jt, 0, 'the native arch goes on to the syscall checks');
      assert.deepEqual(prog[2 + prog[1]!.jf], { code: BPF.RET_K, jt: 0, jf: 0, k: KILL_PROCESS });
      assert.deepEqual(prog[2], { code: BPF.LD_W_ABS, jt: 0, jf: 0, k: DATA.nr });
      const other = arch === 'x86_64' ? 0x40000003 /* AUDIT_ARCH_I386 */ : 0x40000028; /* AUDIT_ARCH_ARM */
      for (const nr of [0, 1, 56, 101]) assert.equal(evaluate(prog, { nr, arch: other }), KILL_PROCESS, `nr ${nr} with another ABI`);
    });

    it('allows ordinary calls, and every call it does not name', () => {
      const named = new Set([...denied.map(([, n]) => n[arch]), INSPECTED.clone3[arch]]);
      for (let nr = 0; nr < 1024; nr++) {
        if (named.has(nr) || nr === INSPECTED.clone[arch] || nr === INSPECTED.personality[arch]) continue;
        assert.equal(run(nr), ALLOW, `nr ${nr}`);
      }
      const write = arch === 'x86_64' ? 1 : 64;
      assert.equal(run(write, [1n, 0x7fff0000n, 5n]), ALLOW);
    });

    it('refuses each denied call with EPERM', () => {
      assert.ok(denied.length >= 40);
      for (const [name, n] of denied) assert.equal(run(n[arch]!), EPERM, name);
    });

    it('clone: namespace flags are refused with EPERM; fork and thread flags are allowed', () => {
      const clone = INSPECTED.clone[arch]!;
      assert.equal(run(clone, [BigInt(FORK_FLAGS)]), ALLOW, 'fork');
      assert.equal(run(clone, [BigInt(THREAD_FLAGS)]), ALLOW, 'pthread_create');
      assert.equal(run(clone, [0x4111n]), ALLOW, 'vfork (CLONE_VM | CLONE_VFORK | SIGCHLD)');
      for (const [name, flag] of Object.entries(NAMESPACE_FLAGS)) {
        assert.equal(run(clone, [BigInt(flag | FORK_FLAGS)]), EPERM, `CLONE_${name}`);
        assert.equal(run(clone, [BigInt(flag) | (0xffffffffn << 32n)]), EPERM, `CLONE_${name} with the (ignored) high bits set`);
      }
      assert.equal(Object.values(NAMESPACE_FLAGS).reduce((a, b) => a | b, 0), CLONE_NAMESPACES);
      assert.equal(run(clone, [0xffffffffn << 32n]), ALLOW, 'the kernel reads only the low 32 bits of the flags, and so does the filter');
    });

    it('clone3 gets ENOSYS, so libc falls back to clone', () => {
      assert.equal(run(INSPECTED.clone3[arch]!, [0n, 88n]), ENOSYS);
    });

    it('personality: the harmless values pass, ADDR_NO_RANDOMIZE and the rest are refused', () => {
      const nr = INSPECTED.personality[arch]!;
      for (const v of [0x0, 0x8, 0x20000, 0x20008, 0xffffffff]) assert.equal(run(nr, [BigInt(v)]), ALLOW, `0x${v.toString(16)}`);
      for (const v of [0x0040000, 0x0400000, 0x4000000, 0x0040008]) assert.equal(run(nr, [BigInt(v)]), EPERM, `0x${v.toString(16)}`);
    });

    if (arch === 'x86_64') {
      it('x32 calls (nr | 0x40000000) get ENOSYS, as on a kernel without x32', () => {
        for (const nr of [0, 1, 56, 101, 435, 512]) assert.equal(run(X32_SYSCALL_BIT + nr), ENOSYS, `x32 nr ${nr}`);
        assert.equal(run(-1), ENOSYS, 'nr -1 (what ptrace/seccomp use to skip a call)');
      });
    }

    const header = headerNumbers(HEADERS[arch]);
    it(`its syscall numbers match ${HEADERS[arch]}`, { skip: header ? false : `${HEADERS[arch]} is not installed (apt-get install linux-libc-dev to check the numbers)` }, () => {
      for (const [name, n] of [...Object.entries(DENIED), ...Object.entries(INSPECTED)]) {
        if (n[arch] === undefined) assert.equal(header!.get(name), undefined, `${name} exists on ${arch}: add its number`);
        else assert.equal(header!.get(name), n[arch], name);
      }
    });
  });
}

describe('seccomp filter availability', () => {
  it('has numbers for x86_64 and little-endian arm64 only, and says what to do elsewhere', () => {
    assert.equal(seccompArchFor('x64'), 'x86_64');
    assert.equal(seccompArchFor('arm64'), 'aarch64');
    assert.equal(seccompArchFor('riscv64'), undefined);
    assert.equal(seccompUnsupported('x64', 'LE'), undefined);
    assert.match(seccompUnsupported('riscv64', 'LE')!, /x86_64 and little-endian arm64 only.*riscv64.*process isolation/);
    assert.match(seccompUnsupported('arm64', 'BE')!, /BE/);
  });
});

describe('container spawn plan with the seccomp filter', () => {
  let root: string;
  const spec = (helpersDir: string): CommandSpec => ({ level: 'container', command: ['true'], workspace: '/w', runDir: '/r', helpersDir, env: {}, cgroupProcs: [] });
  before(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'fabric-seccomp-plan-'));
  });
  after(() => fs.rmSync(root, { recursive: true, force: true }));

  it('prepareSandboxRoot writes seccomp.bpf (0644); bwrap gets --seccomp 9, opened from it by the spawn wrapper', { skip: seccompUnsupported() }, () => {
    const { helpersDir } = prepareSandboxRoot(path.join(root, 'sandbox'));
    const file = path.join(helpersDir, SECCOMP_FILE);
    assert.deepEqual(fs.readFileSync(file), seccompFilter(seccompArchFor()!));
    assert.equal(fs.statSync(file).mode & 0o777, 0o644);
    const plan = spawnPlan(spec(helpersDir), '/usr/bin/bwrap');
    assert.equal(plan.env.FABRIC_SECCOMP, file);
    assert.match(plan.args[1]!, /exec "\$@" 9<"\$FABRIC_SECCOMP"$/);
    const i = plan.args.indexOf('--seccomp');
    assert.deepEqual(plan.args.slice(i, i + 2), ['--seccomp', '9']);
    assert.ok(i < plan.args.indexOf('--'), 'a bwrap option, not part of the command');
  });

  it('a plan without the filter file is refused at either level, saying what to do', () => {
    const helpersDir = path.join(root, 'no-helpers');
    assert.throws(() => spawnPlan(spec(helpersDir), '/usr/bin/bwrap'), /seccomp filter at .*seccomp\.bpf, which is missing: prepareSandboxRoot writes it/);
    assert.throws(() => spawnPlan({ ...spec(helpersDir), level: 'process' }, '/usr/bin/bwrap'), /seccomp filter/, 'process sandboxes run under the filter too');
  });
});

// ---------------------------------------------------------------------------------------------
// In a real container sandbox: bwrap run exactly as spawnPlan says, as an unprivileged uid.

const host = detectSandboxHost();
const skipReal = !host.root
  ? 'needs root, to run the sandbox as its own uid as sessions do'
  : !host.bwrap
    ? 'needs bubblewrap (bwrap): install the Debian package bubblewrap'
    : seccompUnsupported(); // not missingFor: this needs no cgroups
const SANDBOX_UID = 61077;

/** perl (perl-base, in every Debian) makes raw syscalls; prints `name=<errno text>` or `name=ok <ret>`. */
function perlProbe(arch: SeccompArch): string {
  const n = (name: string) => (DENIED[name] ?? INSPECTED[name as keyof typeof INSPECTED])[arch]!;
  const calls: [string, number, string][] = [
    ['ptrace_traceme', n('ptrace'), '0, 0, 0, 0'], // PTRACE_TRACEME: succeeds without the filter
    ['mount_bad_pointer', n('mount'), '1, 1, 1, 0, 0'], // EFAULT (reads the strings first) without it
    ['keyctl_session', n('keyctl'), '0, -3, 0'], // KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING
    ['io_uring_setup', n('io_uring_setup'), '1, 0'], // EFAULT without it
    ['clone3', n('clone3'), '0, 0'], // EFAULT/EINVAL without it
    ['personality_no_aslr', n('personality'), '0x0040000'], // ADDR_NO_RANDOMIZE: returns the old persona without it
    ['clone_newuser', n('clone'), '0x10000011, 0, 0, 0, 0'], // CLONE_NEWUSER | SIGCHLD: a child without it
  ];
  const body = calls.map(([name, nr, args]) => `$! = 0; $r = syscall(${nr}, ${args}); exit 0 if $r == 0 && "${name}" eq "clone_newuser"; print "${name}=", ($r == -1 ? "$!" : "ok $r"), "\\n";`).join(' ');
  return `perl -e '$| = 1; my $r; ${body}'`;
}

const NODE_WORK = `
  const fs = require('fs'); const cp = require('child_process'); const { Worker } = require('worker_threads');
  fs.writeFileSync('/workspace/n.txt', 'x'.repeat(1000)); const read = fs.readFileSync('/workspace/n.txt', 'utf8').length;
  const child = cp.execFileSync('/bin/sh', ['-c', 'echo child']).toString().trim();
  fs.promises.readFile('/workspace/n.txt').then((b) => new Promise((res, rej) => {
    const w = new Worker('require("worker_threads").parentPort.postMessage(6 * 7)', { eval: true });
    w.on('message', res); w.on('error', rej);
  }).then((t) => { console.log('node=ok read=' + read + ' ' + child + ' async=' + b.length + ' thread=' + t); process.exit(0); }));`;

function probeScript(arch: SeccompArch): string {
  return [
    `grep -E '^(Seccomp|NoNewPrivs|CapEff):' /proc/self/status | tr -d ' \\t' | tr : =`,
    `[ -e /proc/$$/fd/9 ] && echo fd9=open || echo fd9=closed`,
    `out=$(unshare -U true 2>&1); echo "unshare_U=$? $out"`,
    perlProbe(arch),
    `sub=$( (echo forked) ); echo "sh_fork=$sub"`,
    `node -e '${NODE_WORK.replace(/'/g, `'\\''`)}'`,
  ].join('\n');
}

function runPlan(plan: SpawnPlan): Promise<{ code: number | null; out: Record<string, string>; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(plan.file, plan.args, { cwd: plan.cwd, env: plan.env, uid: SANDBOX_UID, gid: SANDBOX_UID, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      const out: Record<string, string> = {};
      for (const line of stdout.split('\n')) {
        const eq = line.indexOf('=');
        if (eq > 0) out[line.slice(0, eq)] = line.slice(eq + 1);
      }
      resolve({ code, out, stdout, stderr });
    });
  });
}

describe('seccomp in a real container sandbox', { skip: skipReal }, () => {
  let root: string;
  let plan: SpawnPlan;
  before(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'fabric-seccomp-'));
    fs.chmodSync(root, 0o755);
    const { helpersDir } = prepareSandboxRoot(path.join(root, 'sandbox'));
    const workspace = path.join(root, 'workspace');
    const runDir = path.join(root, 'run');
    for (const d of [workspace, runDir]) {
      fs.mkdirSync(d, { mode: 0o700 });
      fs.chownSync(d, SANDBOX_UID, SANDBOX_UID);
    }
    const env = { PATH: '/usr/local/bin:/usr/bin:/bin', HOME: '/workspace' };
    plan = spawnPlan({ level: 'container', command: ['/bin/sh', '-c', probeScript(seccompArchFor()!)], workspace, runDir, helpersDir, env, cgroupProcs: [] }, host.bwrap!);
  });
  after(() => fs.rmSync(root, { recursive: true, force: true }));

  it('the sandbox has the filter, no new privileges and no capabilities; namespaces, ptrace, mount and friends are refused; ordinary work runs', async () => {
    const { code, out, stdout, stderr } = await runPlan(plan);
    const why = `stdout:\n${stdout}\nstderr:\n${stderr}`;
    assert.equal(code, 0, why);
    assert.equal(out.Seccomp, '2', why);
    assert.equal(out.NoNewPrivs, '1', why);
    assert.equal(out.CapEff, '0000000000000000', why);
    assert.equal(out.fd9, 'closed', 'bwrap does not leak the filter fd into the sandbox');
    assert.match(out.unshare_U!, /^1 unshare: unshare failed: Operation not permitted/, why);
    for (const k of ['ptrace_traceme', 'mount_bad_pointer', 'keyctl_session', 'io_uring_setup', 'personality_no_aslr', 'clone_newuser']) assert.equal(out[k], 'Operation not permitted', `${k}: ${why}`);
    assert.equal(out.clone3, 'Function not implemented', why);
    assert.equal(out.sh_fork, 'forked', why);
    assert.equal(out.node, 'ok read=1000 child async=1000 thread=42', why);
  });

  it('control: without --seccomp the same probes get through, so the refusals above are the filter', async () => {
    const i = plan.args.indexOf('--seccomp');
    const { code, out, stdout, stderr } = await runPlan({ ...plan, args: [...plan.args.slice(0, i), ...plan.args.slice(i + 2)] });
    const why = `stdout:\n${stdout}\nstderr:\n${stderr}`;
    assert.equal(code, 0, why);
    assert.equal(out.Seccomp, '0', why);
    assert.equal(out.CapEff, '0000000000000000', 'no capabilities either way');
    assert.match(out.unshare_U!, /^0 /, why);
    assert.equal(out.ptrace_traceme, 'ok 0', why);
    assert.equal(out.mount_bad_pointer, 'Bad address', why);
    assert.match(out.keyctl_session!, /^ok \d+$/, why);
    assert.notEqual(out.io_uring_setup, 'Operation not permitted', why);
    assert.notEqual(out.clone3, 'Function not implemented', why);
    assert.match(out.personality_no_aslr!, /^ok /, why);
    assert.match(out.clone_newuser!, /^ok \d+$/, why);
  });
});
