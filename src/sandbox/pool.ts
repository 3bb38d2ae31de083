import { randomUUID } from 'node:crypto';
import { DEFAULT_HEARTBEAT_MS, launchSandbox, profileKey, type LaunchHost, type LaunchedSandbox, type SandboxProfile } from './launch.js';
import type { UidPool } from './uids.js';

export interface WarmPoolOptions {
  host: LaunchHost;
  /** Uids for the pool's sandboxes (the same UidPool as the cold sessions', so no two live sandboxes share one). */
  uids: UidPool;
  /** Ready sandboxes kept per profile; 0 disables the pool (take() always returns undefined). */
  size: number;
  /** An idle sandbox older than this is replaced by a fresh one; default 10 min. */
  maxIdleMs?: number;
  /** A profile no session asked for in this long is no longer kept warm; default 30 min. */
  profileTtlMs?: number;
  /** Most profiles kept warm at once; the least recently asked for is dropped first; default 4. */
  maxProfiles?: number;
  /** Sandboxes launched at the same time while refilling; default 2. */
  launchConcurrency?: number;
  /** A take() refills after this long, so the session that took a sandbox starts its program before the refill competes for the CPU; default 50 ms. */
  refillDelayMs?: number;
  /** The sandboxes' heartbeat interval; default 1000 ms. */
  heartbeatMs?: number;
  /** An idle sandbox silent this long is replaced; default 10 s. Also the most a launch may take to become ready. */
  heartbeatTimeoutMs?: number;
  /** A launch that failed or an idle sandbox that died or went silent (the pool carries on; log it). */
  onError?: (err: Error) => void;
}

interface Profile {
  profile: SandboxProfile;
  key: string;
  /** Ready, oldest first. */
  idle: { sandbox: LaunchedSandbox; since: number }[];
  launching: number;
  lastAskedAt: number;
  failures: number;
  retryAt: number;
}

export interface WarmPoolStats {
  profile: SandboxProfile;
  idle: number;
  launching: number;
}

const RETRY_BASE_MS = 500;
const RETRY_MAX_MS = 60_000;

/**
 * Warm sandboxes per isolation profile (see launch.ts): launched ahead of time with their
 * workspace, cgroup, uid and egress proxy, the supervisor waiting for its program. Nothing of a
 * task is in one before take(): the program, its environment (the session token) and the
 * egress policy arrive at assignment. Each serves one session, which disposes of it; the pool
 * refills in the background. Profiles are registered on demand: the first session of a profile
 * runs cold and its take() asks the pool to keep that profile warm from then on.
 */
export class WarmPool {
  private readonly profiles = new Map<string, Profile>();
  private readonly inFlight = new Set<Promise<void>>();
  private readonly sweeper: NodeJS.Timeout | undefined;
  private launching = 0;
  private closed = false;
  private readonly o: Required<Omit<WarmPoolOptions, 'onError'>> & Pick<WarmPoolOptions, 'onError'>;

  constructor(opts: WarmPoolOptions) {
    if (!(Number.isInteger(opts.size) && opts.size >= 0)) throw new Error(`warm pool size must be an integer ≥ 0 (0 disables it), got ${opts.size}`);
    this.o = {
      maxIdleMs: 10 * 60_000,
      profileTtlMs: 30 * 60_000,
      maxProfiles: 4,
      launchConcurrency: 2,
      refillDelayMs: 50,
      heartbeatMs: DEFAULT_HEARTBEAT_MS,
      heartbeatTimeoutMs: 10_000,
      ...opts,
    };
    if (this.o.size > 0) {
      this.sweeper = setInterval(() => this.sweep(), Math.max(50, Math.min(1000, this.o.heartbeatTimeoutMs / 4, this.o.maxIdleMs / 4)));
      this.sweeper.unref();
    }
  }

  /**
   * A ready sandbox of this profile, removed from the pool (the caller runs one session in it and
   * disposes of it), or undefined: then the caller launches one cold. Either way the profile is
   * (re)registered and the pool refills in the background.
   */
  take(profile: SandboxProfile): LaunchedSandbox | undefined {
    if (this.closed || this.o.size === 0) return undefined;
    const p = this.register(profile);
    let found: LaunchedSandbox | undefined;
    while (!found && p.idle.length) {
      const { sandbox } = p.idle.shift()!;
      if (this.usable(sandbox)) found = sandbox;
      else void sandbox.dispose();
    }
    if (found && this.o.refillDelayMs > 0) setTimeout(() => this.pump(), this.o.refillDelayMs).unref();
    else this.pump();
    return found;
  }

  /** Ready sandboxes of a profile right now. */
  idle(profile: SandboxProfile): number {
    return this.profiles.get(profileKey(profile))?.idle.length ?? 0;
  }

  /** Waits until `count` sandboxes of the profile are ready (registering it); rejects after timeoutMs. */
  async waitIdle(profile: SandboxProfile, count: number, timeoutMs: number): Promise<void> {
    if (count > this.o.size) throw new Error(`the warm pool keeps ${this.o.size} sandboxes per profile; waiting for ${count} would never end`);
    const deadline = performance.now() + timeoutMs;
    const p = this.register(profile);
    this.pump();
    while (p.idle.length < count) {
      if (this.closed) throw new Error('the warm pool is closed');
      if (performance.now() > deadline) throw new Error(`the warm pool had ${p.idle.length} of ${count} sandboxes ready after ${timeoutMs} ms; see its onError reports`);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }

  stats(): WarmPoolStats[] {
    return [...this.profiles.values()].map((p) => ({ profile: p.profile, idle: p.idle.length, launching: p.launching }));
  }

  /** Stops refilling, kills and wipes every idle sandbox and waits for launches in flight (which are disposed of too). */
  async close(): Promise<void> {
    this.closed = true;
    if (this.sweeper) clearInterval(this.sweeper);
    const all = [...this.profiles.values()].flatMap((p) => p.idle.splice(0).map((i) => i.sandbox));
    this.profiles.clear();
    await Promise.all([...all.map((s) => s.dispose()), ...this.inFlight]);
  }

  private register(profile: SandboxProfile): Profile {
    const key = profileKey(profile);
    let p = this.profiles.get(key);
    if (p) this.profiles.delete(key); // re-inserted last: the Map's order is least recently asked first
    else p = { profile: { ...profile }, key, idle: [], launching: 0, lastAskedAt: 0, failures: 0, retryAt: 0 };
    p.lastAskedAt = performance.now();
    this.profiles.set(key, p);
    for (const [k, old] of this.profiles) {
      if (this.profiles.size <= this.o.maxProfiles) break;
      this.drop(k, old);
    }
    return p;
  }

  private drop(key: string, p: Profile): void {
    this.profiles.delete(key);
    for (const { sandbox } of p.idle.splice(0)) void sandbox.dispose();
  }

  private usable(s: LaunchedSandbox): boolean {
    return !s.exited && performance.now() - s.lastBeatAt <= this.o.heartbeatTimeoutMs;
  }

  /** Starts launches while some profile is short and the concurrency allows. */
  private pump(): void {
    while (!this.closed && this.launching < this.o.launchConcurrency) {
      const now = performance.now();
      let next: Profile | undefined;
      for (const p of this.profiles.values()) {
        const have = p.idle.length + p.launching;
        if (have < this.o.size && now >= p.retryAt && (!next || have < next.idle.length + next.launching)) next = p;
      }
      if (!next) return;
      const p = next;
      this.launching++;
      p.launching++;
      const done = this.launchOne(p).finally(() => {
        this.launching--;
        p.launching--;
        this.inFlight.delete(done);
        this.pump();
      });
      this.inFlight.add(done);
    }
  }

  private async launchOne(p: Profile): Promise<void> {
    let sandbox: LaunchedSandbox | undefined;
    try {
      const uid = await this.o.uids.acquire();
      try {
        // named like a session (see launchSandbox) so the reaper cleans up after a crash
        sandbox = await launchSandbox(p.profile, this.o.host, { id: `pool-${randomUUID()}`, uid, heartbeatMs: this.o.heartbeatMs, release: () => this.o.uids.release(uid) });
      } catch (err) {
        await this.o.uids.release(uid);
        throw err;
      }
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`its supervisor did not report ready within ${this.o.heartbeatTimeoutMs} ms (an overloaded host?)`)), this.o.heartbeatTimeoutMs);
      });
      await Promise.race([sandbox.ready, late]).finally(() => clearTimeout(timer));
    } catch (err) {
      await sandbox?.dispose();
      p.failures++;
      const wait = Math.min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** (p.failures - 1));
      p.retryAt = performance.now() + wait;
      setTimeout(() => this.pump(), wait).unref();
      this.report(`launching a warm ${p.profile.level} sandbox failed (attempt ${p.failures}; retrying in ${wait} ms; sessions of this profile start cold meanwhile): ${(err as Error).message}`);
      return;
    }
    if (this.closed || this.profiles.get(p.key) !== p) return void (await sandbox.dispose());
    p.failures = 0;
    const entry = { sandbox, since: performance.now() };
    p.idle.push(entry);
    void sandbox.closed
      .catch(() => undefined)
      .then(() => {
        const i = p.idle.indexOf(entry);
        if (i < 0) return; // taken (its session owns it) or already dropped
        p.idle.splice(i, 1);
        void sandbox.dispose();
        this.report(`a warm ${p.profile.level} sandbox exited while idle; replacing it`);
        this.pump();
      });
  }

  /** Replaces idle sandboxes that went silent or are too old, and forgets profiles nobody asked for in profileTtlMs. */
  private sweep(): void {
    const now = performance.now();
    for (const [key, p] of this.profiles) {
      if (now - p.lastAskedAt > this.o.profileTtlMs) {
        this.drop(key, p);
        continue;
      }
      for (const entry of [...p.idle]) {
        const silent = !this.usable(entry.sandbox);
        if (!silent && now - entry.since <= this.o.maxIdleMs) continue;
        p.idle.splice(p.idle.indexOf(entry), 1);
        void entry.sandbox.dispose();
        if (silent) this.report(`a warm ${p.profile.level} sandbox stopped heartbeating while idle; replacing it`);
      }
    }
    this.pump();
  }

  private report(message: string): void {
    try {
      this.o.onError?.(new Error(`warm pool: ${message}`));
    } catch {
      /* an observer's failure must not stop the pool */
    }
  }
}
