/**
 * How much of the machine's CPU programs other than this bench used while it measured (Linux
 * /proc): the machine's busy time minus this process's own and its children's (the sandboxes
 * and the plain spawns, counted when reaped, their descendants included).
 */
import fs from 'node:fs';

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

  /** Share of the whole machine's CPU that other programs used since begin(), 0..1, or undefined without /proc. */
  end(): number | undefined {
    const a = this.start;
    const b = read();
    if (!a || !b || b.total === a.total) return undefined;
    return Math.max(0, (b.busy - a.busy - (b.own - a.own)) / (b.total - a.total));
  }
}
