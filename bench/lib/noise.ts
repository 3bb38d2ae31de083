/**
 * How much CPU other programs took while the bench ran (Linux /proc), so a table measured on
 * a shared machine says so. Counts every process except this one and the database and Redis
 * servers (whose work is part of what is measured); sampled twice a second, so a program
 * that lives less than half a second may be missed.
 */
import fs from 'node:fs';
import os from 'node:os';

const MEASURED = new Set(['postgres', 'redis-server']);
const TICKS_PER_SECOND = 100; // USER_HZ on Linux

function cpuTicks(): Map<number, number> {
  const ticks = new Map<number, number>();
  for (const name of fs.readdirSync('/proc')) {
    const pid = Number(name);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      const close = stat.lastIndexOf(')');
      const comm = stat.slice(stat.indexOf('(') + 1, close);
      if (MEASURED.has(comm)) continue;
      const fields = stat.slice(close + 2).split(' ');
      ticks.set(pid, Number(fields[11]) + Number(fields[12])); // utime + stime
    } catch {
      // the process ended meanwhile
    }
  }
  return ticks;
}

export class NoiseMeter {
  private last = new Map<number, number>();
  private ticks = 0;
  private startedAt = 0;
  private timer: NodeJS.Timeout | undefined;
  readonly available = fs.existsSync('/proc/self/stat');

  start(): void {
    if (!this.available) return;
    this.ticks = 0;
    this.startedAt = performance.now();
    this.last = cpuTicks();
    this.timer = setInterval(() => this.sample(), 500);
    this.timer.unref();
  }

  private sample(): void {
    const now = cpuTicks();
    // a process first seen now was born since the last sample: all its CPU time is new
    for (const [pid, t] of now) this.ticks += t - (this.last.get(pid) ?? 0);
    this.last = now;
  }

  /** Share of the whole machine's CPU that other programs used since start(), 0..1. */
  stop(): number | undefined {
    if (!this.available || !this.timer) return undefined;
    clearInterval(this.timer);
    this.timer = undefined;
    this.sample();
    const seconds = (performance.now() - this.startedAt) / 1000;
    return this.ticks / TICKS_PER_SECOND / (seconds * os.availableParallelism());
  }
}
