/**
 * The seccomp filter of `container` sandboxes: a classic-BPF program (no libseccomp) that
 * bubblewrap installs (`--seccomp FD`) just before it execs the sandbox's first program, on top
 * of `--cap-drop ALL` and the no_new_privs bit bubblewrap always sets. Every process of the
 * sandbox inherits it and cannot remove it.
 *
 * In the spirit of Docker's default profile it is a denylist: ordinary programs (node, python,
 * shells, compilers) run unchanged, and the calls refused are the kernel surfaces a sandboxed
 * agent has no use for and that kernel exploits and escapes go through. Most of them already
 * fail without capabilities; the filter stops them before the kernel code behind the
 * capability check runs, and stops the one way to get capabilities back: a nested user
 * namespace, where the sandbox would be root again and reach mount, netfilter, etc.
 *
 * Refused with EPERM ("Operation not permitted"):
 * - namespaces: unshare, setns, and clone with any CLONE_NEW* flag in its flags (args[0]):
 *   USER, NS, PID, NET, UTS, IPC, CGROUP. clone without them (fork, threads) is allowed.
 * - clone3 gets ENOSYS instead: its flags are behind a pointer a filter cannot read, and
 *   ENOSYS makes glibc (and everything else) fall back to clone, which the filter can inspect.
 * - mounts and the root: mount, umount2, pivot_root, chroot, and the new mount API
 *   (open_tree, move_mount, fsopen, fsconfig, fsmount, fspick, mount_setattr).
 * - other processes' memory: ptrace, process_vm_readv, process_vm_writev, kcmp, pidfd_getfd.
 * - the kernel itself: init_module, finit_module, delete_module, kexec_load, kexec_file_load,
 *   bpf, perf_event_open, userfaultfd (a classic exploit primitive), io_uring_setup,
 *   io_uring_enter, io_uring_register (a large attack surface whose operations seccomp cannot
 *   see; libuv and others fall back to plain syscalls), lookup_dcookie, syslog (the kernel log
 *   leaks addresses), iopl and ioperm (x86_64 only: raw I/O ports).
 * - the kernel keyring, which is not namespaced: keyctl, add_key, request_key.
 * - host administration: reboot, swapon, swapoff, acct, quotactl, quotactl_fd, settimeofday,
 *   clock_settime, and uselib and _sysctl (x86_64 only: obsolete).
 * - file handles, which open files by inode, around the mount tree: name_to_handle_at,
 *   open_by_handle_at.
 * - personality with anything but the harmless values Docker allows (0, UNAME26, PER_LINUX32,
 *   both, and the 0xffffffff query): ADDR_NO_RANDOMIZE and friends would turn off ASLR.
 * Everything else is allowed. The kernel (5.11+) caches, per syscall, that this filter always
 * allows it, so allowed calls do not run the program at all.
 *
 * Architectures: the program starts by checking seccomp_data.arch. A call made with another
 * ABI than the host's (i386 `int 0x80` from an x86_64 process, arm32 compat on arm64) uses other
 * syscall numbers, so it kills the process rather than being judged by the wrong table. x32
 * calls (x86_64 arch, nr with bit 0x40000000) get ENOSYS, as on a kernel built without x32.
 * Numbers are built in for x86_64 (checked against asm/unistd_64.h) and aarch64 (checked against
 * asm-generic/unistd.h, which arm64 uses); seccomp.test.ts rechecks both against the headers when
 * they are installed. On any other architecture there is no filter: container isolation is
 * refused there with a reason (see seccompUnsupported and missingFor in host.ts), never run
 * without one.
 */

import os from 'node:os';

export type SeccompArch = 'x86_64' | 'aarch64';

/** The file prepareSandboxRoot writes the compiled filter to, in the helpers dir. */
export const SECCOMP_FILE = 'seccomp.bpf';

/** AUDIT_ARCH_* (linux/audit.h): EM_* | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE. */
export const AUDIT_ARCH: Record<SeccompArch, number> = { x86_64: 0xc000003e, aarch64: 0xc00000b7 };

export const SECCOMP_RET = {
  KILL_PROCESS: 0x80000000,
  ERRNO: 0x00050000,
  ALLOW: 0x7fff0000,
} as const;

export const ERRNO = { EPERM: 1, ENOSYS: 38 } as const;

/** x86_64 x32 ABI: syscall numbers with this bit set. */
export const X32_SYSCALL_BIT = 0x40000000;

/** CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET (linux/sched.h). */
export const CLONE_NAMESPACES = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000;

/** personality(2) values that stay allowed: PER_LINUX, UNAME26, PER_LINUX32, both, and the query. */
export const PERSONALITY_ALLOWED = [0x0, 0x0008, 0x20000, 0x20008, 0xffffffff] as const;

/** Syscall numbers per architecture; a missing entry means the architecture lacks the call. */
type Numbers = Partial<Record<SeccompArch, number>>;

/** Refused with EPERM. */
export const DENIED: Record<string, Numbers> = {
  // namespaces
  unshare: { x86_64: 272, aarch64: 97 },
  setns: { x86_64: 308, aarch64: 268 },
  // mounts and the root
  mount: { x86_64: 165, aarch64: 40 },
  umount2: { x86_64: 166, aarch64: 39 },
  pivot_root: { x86_64: 155, aarch64: 41 },
  chroot: { x86_64: 161, aarch64: 51 },
  open_tree: { x86_64: 428, aarch64: 428 },
  move_mount: { x86_64: 429, aarch64: 429 },
  fsopen: { x86_64: 430, aarch64: 430 },
  fsconfig: { x86_64: 431, aarch64: 431 },
  fsmount: { x86_64: 432, aarch64: 432 },
  fspick: { x86_64: 433, aarch64: 433 },
  mount_setattr: { x86_64: 442, aarch64: 442 },
  // other processes' memory
  ptrace: { x86_64: 101, aarch64: 117 },
  process_vm_readv: { x86_64: 310, aarch64: 270 },
  process_vm_writev: { x86_64: 311, aarch64: 271 },
  kcmp: { x86_64: 312, aarch64: 272 },
  pidfd_getfd: { x86_64: 438, aarch64: 438 },
  // the kernel itself
  init_module: { x86_64: 175, aarch64: 105 },
  finit_module: { x86_64: 313, aarch64: 273 },
  delete_module: { x86_64: 176, aarch64: 106 },
  kexec_load: { x86_64: 246, aarch64: 104 },
  kexec_file_load: { x86_64: 320, aarch64: 294 },
  bpf: { x86_64: 321, aarch64: 280 },
  perf_event_open: { x86_64: 298, aarch64: 241 },
  userfaultfd: { x86_64: 323, aarch64: 282 },
  io_uring_setup: { x86_64: 425, aarch64: 425 },
  io_uring_enter: { x86_64: 426, aarch64: 426 },
  io_uring_register: { x86_64: 427, aarch64: 427 },
  lookup_dcookie: { x86_64: 212, aarch64: 18 },
  syslog: { x86_64: 103, aarch64: 116 },
  iopl: { x86_64: 172 },
  ioperm: { x86_64: 173 },
  // the kernel keyring
  keyctl: { x86_64: 250, aarch64: 219 },
  add_key: { x86_64: 248, aarch64: 217 },
  request_key: { x86_64: 249, aarch64: 218 },
  // host administration
  reboot: { x86_64: 169, aarch64: 142 },
  swapon: { x86_64: 167, aarch64: 224 },
  swapoff: { x86_64: 168, aarch64: 225 },
  acct: { x86_64: 163, aarch64: 89 },
  quotactl: { x86_64: 179, aarch64: 60 },
  quotactl_fd: { x86_64: 443, aarch64: 443 },
  settimeofday: { x86_64: 164, aarch64: 170 },
  clock_settime: { x86_64: 227, aarch64: 112 },
  uselib: { x86_64: 134 },
  _sysctl: { x86_64: 156 },
  // file handles
  name_to_handle_at: { x86_64: 303, aarch64: 264 },
  open_by_handle_at: { x86_64: 304, aarch64: 265 },
};

/** Judged by their arguments, or answered ENOSYS. */
export const INSPECTED: Record<'clone' | 'clone3' | 'personality', Numbers> = {
  clone: { x86_64: 56, aarch64: 220 },
  clone3: { x86_64: 435, aarch64: 435 },
  personality: { x86_64: 135, aarch64: 92 },
};

/** The filter's architecture for a Node `process.arch`, if it has one. */
export function seccompArchFor(nodeArch: string = process.arch): SeccompArch | undefined {
  if (nodeArch === 'x64') return 'x86_64';
  if (nodeArch === 'arm64') return 'aarch64';
  return undefined;
}

/** Why this host cannot have the filter (so container isolation must not run), or undefined. */
export function seccompUnsupported(nodeArch: string = process.arch, endianness: string = os.endianness()): string | undefined {
  if (!seccompArchFor(nodeArch) || endianness !== 'LE')
    return `container isolation's seccomp filter has syscall numbers for x86_64 and little-endian arm64 only, and this host is ${nodeArch} (${endianness}): run agents with process isolation here, or add this architecture's numbers to src/sandbox/seccomp.ts`;
  return undefined;
}

// classic BPF (linux/bpf_common.h, linux/filter.h)
export const BPF = {
  LD_W_ABS: 0x00 | 0x00 | 0x20,
  JEQ_K: 0x05 | 0x10 | 0x00,
  JGE_K: 0x05 | 0x30 | 0x00,
  JSET_K: 0x05 | 0x40 | 0x00,
  RET_K: 0x06 | 0x00,
} as const;

/** struct seccomp_data offsets: nr, arch, and the low 32 bits of args[0] (little-endian). */
export const DATA = { nr: 0, arch: 4, arg0Low: 16 } as const;

export interface SockFilter {
  code: number;
  jt: number;
  jf: number;
  k: number;
}

interface Draft {
  code: number;
  k: number;
  /** Labels jumped to when the test holds / fails; undefined = the next instruction. */
  jt?: string | undefined;
  jf?: string | undefined;
}

/** A tiny assembler: jumps name labels, resolved to the u8 forward offsets BPF needs. */
class Program {
  private readonly drafts: Draft[] = [];
  private readonly labels = new Map<string, number>();
  label(name: string): this {
    if (this.labels.has(name)) throw new Error(`seccomp assembler: label ${name} defined twice (a bug in seccomp.ts)`);
    this.labels.set(name, this.drafts.length);
    return this;
  }
  load(offset: number): this {
    this.drafts.push({ code: BPF.LD_W_ABS, k: offset });
    return this;
  }
  jump(code: number, k: number, jt?: string, jf?: string): this {
    this.drafts.push({ code, k, jt, jf });
    return this;
  }
  ret(k: number): this {
    this.drafts.push({ code: BPF.RET_K, k });
    return this;
  }
  assemble(): SockFilter[] {
    return this.drafts.map((d, i) => {
      const to = (label: string | undefined): number => {
        if (label === undefined) return 0;
        const at = this.labels.get(label);
        if (at === undefined) throw new Error(`seccomp assembler: label ${label} is not defined (a bug in seccomp.ts)`);
        const off = at - (i + 1);
        if (off < 0 || off > 255) throw new Error(`seccomp assembler: jump to ${label} is ${off} instructions, outside 0..255 (a bug in seccomp.ts: reorder the program)`);
        return off;
      };
      return { code: d.code, jt: to(d.jt), jf: to(d.jf), k: d.k >>> 0 };
    });
  }
}

/** The filter as instructions (for tests and inspection). */
export function seccompProgram(arch: SeccompArch): SockFilter[] {
  const p = new Program();
  p.load(DATA.arch).jump(BPF.JEQ_K, AUDIT_ARCH[arch], 'native', 'kill');
  p.label('native').load(DATA.nr);
  if (arch === 'x86_64') p.jump(BPF.JGE_K, X32_SYSCALL_BIT, 'enosys');
  for (const numbers of Object.values(DENIED)) {
    const nr = numbers[arch];
    if (nr !== undefined) p.jump(BPF.JEQ_K, nr, 'eperm');
  }
  p.jump(BPF.JEQ_K, INSPECTED.clone[arch]!, 'clone');
  p.jump(BPF.JEQ_K, INSPECTED.clone3[arch]!, 'enosys');
  p.jump(BPF.JEQ_K, INSPECTED.personality[arch]!, 'personality');
  p.ret(SECCOMP_RET.ALLOW);
  // clone(flags, ...): any namespace flag → EPERM (the kernel reads only the low 32 bits)
  p.label('clone').load(DATA.arg0Low).jump(BPF.JSET_K, CLONE_NAMESPACES, 'eperm', 'allow');
  // personality(persona): only the allowed values (the kernel takes an unsigned int)
  p.label('personality').load(DATA.arg0Low);
  for (const v of PERSONALITY_ALLOWED) p.jump(BPF.JEQ_K, v, 'allow');
  p.label('eperm').ret(SECCOMP_RET.ERRNO | ERRNO.EPERM);
  p.label('allow').ret(SECCOMP_RET.ALLOW); // BPF jumps only forward: the argument checks' exit
  p.label('enosys').ret(SECCOMP_RET.ERRNO | ERRNO.ENOSYS);
  p.label('kill').ret(SECCOMP_RET.KILL_PROCESS);
  return p.assemble();
}

/** The filter as bubblewrap reads it: struct sock_filter[] (u16 code, u8 jt, u8 jf, u32 k), little-endian. */
export function seccompFilter(arch: SeccompArch): Buffer {
  const insns = seccompProgram(arch);
  if (insns.length > 4096) throw new Error(`seccomp filter has ${insns.length} instructions; the kernel takes at most 4096 (shorten DENIED in seccomp.ts)`);
  const buf = Buffer.alloc(insns.length * 8);
  insns.forEach((ins, i) => {
    buf.writeUInt16LE(ins.code, i * 8);
    buf.writeUInt8(ins.jt, i * 8 + 2);
    buf.writeUInt8(ins.jf, i * 8 + 3);
    buf.writeUInt32LE(ins.k, i * 8 + 4);
  });
  return buf;
}
