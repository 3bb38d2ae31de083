/**
 * How much of the machine's CPU programs other than this bench used while it measured (Linux
 * /proc): the machine's busy time minus this process's own, its reaped children's (the plain
 * spawns) and the sandboxes' (their cgroups' CPU, which the caller adds up from the sessions'
 * usage: bwrap hands its sandbox's exit status on without reaping it, so the sandbox's CPU never
 * reaches this process's children's times).
 */
import fs from 'node:fs';

const TICK_MS = 10; // USER_HZ = 100 on Linux

interface Ticks {
  busy: number;
  total: number;
  own: number;
}

function read(): Ticks | undefined {
  try {
    const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    const idle = f[3]! + (f[4] ?? 0);
    const total = f.reduce((a, b) => a + b, 0);
    const stat = fs.readFileSync('/proc/self/stat', 'utf8');
    const own = stat.slice(stat.lastIndexOf(')') + 2).split(' ').slice(11, 15).map(Number); // utime stime cutime cstime
    return { busy: total - idle, total, own: own.reduce((a, b) => a + b, 0) };
  } catch {
    return undefined;
  }
}

export class OtherCpu {
  private start: Ticks | undefined;

  begin(): void {
    this.start = read();
  }

  /** Share of the whole machine's CPU that other programs used since begin(), 0..1, or undefined without /proc; `sandboxMs`: the sandboxes' CPU meanwhile. */
  end(sandboxMs: number): number | undefined {
    const a = this.start;
    const b = read();
    if (!a || !b || b.total === a.total) return undefined;
    return Math.max(0, (b.busy - a.busy - (b.own - a.own) - sandboxMs / TICK_MS) / (b.total - a.total));
  }
}

/** CPU ms this process itself used so far (its threads included), from /proc/self/stat; undefined without /proc. */
export function ownCpuMs(): number | undefined {
  try {
    const stat = fs.readFileSync('/proc/self/stat', 'utf8');
    const [utime, stime] = stat.slice(stat.lastIndexOf(')') + 2).split(' ').slice(11, 13).map(Number);
    return (utime! + stime!) * TICK_MS;
  } catch {
    return undefined;
  }
}
