import { randomBytes } from 'node:crypto';
import os from 'node:os';
import type { Db } from '../db/index.js';
import { coerceError, FabricError } from '../errors/index.js';
import type { Notifier } from '../notify/index.js';
import {
  claimTasks,
  DEFAULT_QUEUE_OPTIONS,
  finishAttempt,
  finishCompletedBatch,
  READY_CHANNEL,
  recoverExpiredLeases,
  releaseAttempt,
  renewLeases,
  type AttemptOutcome,
  type ClaimedTask,
  type FinishResult,
  type QueueOptions,
} from '../queue/index.js';
import { activeTraceparent, agentLabel, endSpan, logger, runWithContext, SpanKind, startLinkedSpan, taskClaimLatency, taskDuration, tasksTotal, withActiveSpan } from '../telemetry/index.js';
import { countTokens } from '../budget/metrics.js';
import { getAgent, type Agent } from '../tenancy/index.js';
import { AttemptLog } from './attempt-log.js';
import { AttemptUsage } from '../budget/usage-item.js';
import { ABORT_SETTLE_MS, AttemptError, PermanentError, type Executor } from './executor.js';

export interface WorkerOptions {
  /** Unique per process; default host-pid-random. */
  id?: string;
  /** Attempts this worker runs at once. Default 4. */
  concurrency?: number;
  /** Poll when no NOTIFY arrives. Default 1000 ms. */
  pollIntervalMs?: number;
  queue?: Partial<QueueOptions>;
  executor: Executor;
  notifier: Notifier;
}

/** How long a worker trusts an agent's configuration it read (entrypoint, isolation). */
const AGENT_CACHE_MS = 2000;

type StopReason = 'cancel' | 'timeout' | 'lease_lost' | 'drain';

interface Running {
  claim: ClaimedTask;
  controller: AbortController;
  done: Promise<void>;
  /** When the lease was last renewed (or claimed): past the lease, another worker may own it. */
  renewedAt: number;
}

/**
 * Claims tasks and runs them through an Executor: leases renewed while they run, cancel and
 * timeout through the attempt's AbortSignal, outcomes recorded with fencing, dead letters
 * alerted. `stop()` drains.
 */
export class Worker {
  readonly id: string;
  private readonly concurrency: number;
  private readonly queue: QueueOptions;
  private readonly running = new Map<string, Running>();
  private readonly agents = new Map<string, { agent: Promise<Agent>; until: number }>();
  /** Outcomes being recorded (the attempt's slot is already free). */
  private readonly recording = new Set<Promise<void>>();
  private completions: { claim: ClaimedTask; result: unknown; usage: AttemptOutcome['usage']; resolve: (r: FinishResult) => void; reject: (err: unknown) => void }[] = [];
  private timers: NodeJS.Timeout[] = [];
  private unlisten: (() => Promise<void>) | undefined;
  private stopping = false;
  private wake: (() => void) | undefined;
  /** Set by a notice that arrived while claiming, so the loop claims again instead of sleeping. */
  private woken = false;
  private loop: Promise<void> | undefined;

  constructor(
    private readonly db: Db,
    private readonly options: WorkerOptions,
  ) {
    this.id = options.id ?? `${os.hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
    this.concurrency = options.concurrency ?? 4;
    this.queue = { ...DEFAULT_QUEUE_OPTIONS, ...options.queue };
  }

  /** Starts claiming; resolves once subscribed. */
  async start(): Promise<void> {
    this.unlisten = await this.db.listen(READY_CHANNEL, () => this.poke(), (live) => live && this.poke());
    const every = (ms: number, fn: () => Promise<unknown>) => {
      const t = setInterval(() => void fn().catch((err: unknown) => logger().warn({ err, worker: this.id }, 'worker housekeeping failed')), ms);
      t.unref();
      this.timers.push(t);
    };
    const leaseMs = this.queue.leaseSeconds * 1000;
    every(leaseMs / 3, () => this.heartbeat());
    every(leaseMs / 2, () => recoverExpiredLeases(this.db, this.queue));
    this.loop = this.claimLoop();
  }

  private poke(): void {
    this.woken = true;
    this.wake?.();
  }

  /** Attempts running now. */
  get active(): number {
    return this.running.size;
  }

  private async claimLoop(): Promise<void> {
    while (!this.stopping) {
      const free = this.concurrency - this.running.size;
      this.woken = false;
      let claimed: ClaimedTask[] = [];
      if (free > 0) {
        try {
          claimed = await claimTasks(this.db, this.id, free, this.queue);
        } catch (err) {
          logger().warn({ err, worker: this.id }, 'claiming tasks failed; retrying');
        }
        for (const c of claimed) this.startAttempt(c);
      }
      if (claimed.length > 0 && claimed.length === free) continue;
      if (this.woken) continue; // work was announced while we were claiming
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, this.options.pollIntervalMs ?? 1000);
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.wake = undefined;
    }
  }

  private startAttempt(claim: ClaimedTask): void {
    taskClaimLatency.observe(claim.waitedSeconds);
    const controller = new AbortController();
    const timeout = setTimeout(() => controller.abort('timeout' satisfies StopReason), Math.min(claim.task.timeout_seconds, this.queue.timeouts.ceilingSeconds) * 1000); // a ceiling lowered since the submit applies too
    const started = process.hrtime.bigint();
    let settled: Promise<unknown> = Promise.resolve();
    // A child of the submit request's span (its context is stored with the task): one task, one trace.
    const span = startLinkedSpan('task.attempt', SpanKind.CONSUMER, claim.traceparent, {
      'fabric.task_id': claim.task.id,
      'fabric.task.type': claim.task.type,
      'fabric.task.attempt': claim.attempt,
      'fabric.agent_id': claim.task.agent_id,
      'fabric.tenant_id': claim.task.tenant_id,
      'fabric.worker_id': this.id,
      'fabric.queue.waited_ms': Math.round(claim.waitedSeconds * 1000),
    });
    runWithContext({ task_id: claim.task.id, agent_id: claim.task.agent_id, tenant_id: claim.task.tenant_id }, () => withActiveSpan(span, () => {
      const outcome = this.runAttempt(claim, controller.signal, (p) => (settled = p));
      // The slot is free once the handler itself has returned — an in-process handler that
      // ignores its AbortSignal is still running and must not let more work in beside it —
      // and not only once the outcome is committed: the next claim overlaps the commit.
      const handlerDone = outcome
        .then(async () => void (await settled))
        .finally(() => {
          clearTimeout(timeout);
          this.running.delete(claim.task.id);
          this.poke();
        });
      const recorded = outcome
        .then((o) => {
          span?.setAttribute('fabric.task.outcome', o.kind);
          return this.record(claim, o, controller.signal, started).finally(() => endSpan(span, o.kind === 'failed' ? o.error : o.kind === 'completed' ? undefined : { code: o.kind }));
        })
        .catch((err: unknown) => logger().error({ err }, 'recording a task outcome failed; its lease will expire and it runs again'));
      this.recording.add(recorded);
      // the commit frees the agent's concurrency slot in the database: claim again then too
      void recorded.finally(() => {
        this.recording.delete(recorded);
        this.poke();
      });
      this.running.set(claim.task.id, { claim, controller, done: Promise.all([handlerDone, recorded]).then(() => {}), renewedAt: Date.now() });
    }));
  }

  /**
   * The task's agent, re-read at most every AGENT_CACHE_MS (a round trip per attempt
   * otherwise). Attempts of one agent that start together share one read.
   */
  private agentOf(tenantId: string, agentId: string): Promise<Agent> {
    const hit = this.agents.get(agentId);
    if (hit && hit.until > Date.now()) return hit.agent;
    const agent = getAgent(this.db, tenantId, agentId);
    if (this.agents.size > 10_000) this.agents.clear();
    const entry = { agent, until: Date.now() + AGENT_CACHE_MS };
    this.agents.set(agentId, entry);
    // a failed read is not cached
    agent.catch(() => this.agents.get(agentId) === entry && this.agents.delete(agentId));
    return agent;
  }

  /** Runs the attempt; its outcome carries what it used (reported, plus measured wall time). */
  private async runAttempt(claim: ClaimedTask, signal: AbortSignal, track: (executor: Promise<unknown>) => void): Promise<AttemptOutcome> {
    const usage = new AttemptUsage(claim.task.id, claim.attempt);
    const started = performance.now();
    const outcome = await this.execute(claim, signal, track, usage);
    return { ...outcome, usage: usage.items(performance.now() - started) };
  }

  private async execute(claim: ClaimedTask, signal: AbortSignal, track: (executor: Promise<unknown>) => void, usage: AttemptUsage): Promise<AttemptOutcome> {
    let agent: Agent;
    try {
      agent = await this.agentOf(claim.task.tenant_id, claim.task.agent_id);
    } catch (err) {
      if (err instanceof FabricError && err.status === 404)
        return { kind: 'failed', permanent: true, error: { code: 'agent_not_found', message: 'The task\'s agent no longer exists.' } };
      // a database hiccup is not the task's fault: fail this attempt, retries stay possible
      return { kind: 'failed', error: { code: 'agent_unavailable', message: `Could not read the agent: ${coerceError(err).message}` } };
    }
    let settledRun: Promise<unknown> = Promise.resolve();
    const aborted = new Promise<never>((_, reject) => signal.addEventListener('abort', () => reject(new Error(String(signal.reason))), { once: true }));
    const log = new AttemptLog(this.db, claim.task, claim.attempt);
    try {
      const run = this.options.executor.run(claim.task, {
        signal,
        attempt: claim.attempt,
        agent,
        workerId: this.id,
        traceparent: activeTraceparent(),
        log: (line) => log.line(line),
        reportUsage: (u) => usage.add(u),
      });
      settledRun = run.catch(() => {});
      track(settledRun);
      const result = await Promise.race([run, aborted]);
      return { kind: 'completed', result: result ?? null };
    } catch (err) {
      const reason = signal.aborted ? (signal.reason as StopReason) : undefined;
      if (reason && this.options.executor.settlesOnAbort) await this.settled(settledRun);
      if (reason === 'timeout') return { kind: 'timed_out' };
      if (reason === 'cancel') return { kind: 'cancelled' };
      const e = coerceError(err);
      const code = e instanceof AttemptError ? e.code : 'handler_error';
      return { kind: 'failed', permanent: e instanceof PermanentError, error: { code, message: e.message } };
    } finally {
      await log.flush(); // the attempt's log is stored before its outcome
    }
  }

  /** Waits for an aborted executor to finish its cleanup, at most ABORT_SETTLE_MS. */
  private async settled(run: Promise<unknown>): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([run, new Promise((resolve) => (timer = setTimeout(resolve, ABORT_SETTLE_MS)))]);
    clearTimeout(timer);
  }

  private async record(claim: ClaimedTask, outcome: AttemptOutcome, signal: AbortSignal, started: bigint): Promise<void> {
    const reason = signal.aborted ? (signal.reason as StopReason) : undefined;
    if (reason === 'lease_lost') return; // another worker owns the task now: its outcome wins
    const result =
      reason === 'drain'
        ? await releaseAttempt(this.db, claim, this.queue, outcome.usage)
        : outcome.kind === 'completed'
          ? await this.completeSoon(claim, outcome.result, outcome.usage)
          : await finishAttempt(this.db, claim, outcome, this.queue);
    if (result.status === 'stale') return;
    countTokens(claim.task.tenant_id, claim.task.agent_id, outcome.usage);
    tasksTotal.inc({ agent_id: agentLabel(claim.task.tenant_id, claim.task.agent_id), status: result.status });
    taskDuration.observe({ status: result.status }, Number(process.hrtime.bigint() - started) / 1e9);
    if (result.status === 'dead_lettered') {
      await this.options.notifier.send({
        severity: 'critical',
        title: 'Task dead-lettered',
        text: `Task ${claim.task.id} (${claim.task.type}) failed ${claim.attempt} times and was moved to the dead letters. Re-drive it with POST /api/tasks/${claim.task.id}/retry.`,
        tenantId: claim.task.tenant_id,
        agentId: claim.task.agent_id,
        taskId: claim.task.id,
        fields: { attempts: claim.attempt, error: outcome.kind === 'failed' ? outcome.error.message : outcome.kind },
      });
    }
  }

  /** Queues a completion; completions that arrive together are recorded in one transaction. */
  private completeSoon(claim: ClaimedTask, result: unknown, usage: AttemptOutcome['usage']): Promise<FinishResult> {
    return new Promise((resolve, reject) => {
      this.completions.push({ claim, result, usage, resolve, reject });
      if (this.completions.length === 1) setImmediate(() => void this.flushCompletions());
    });
  }

  private async flushCompletions(): Promise<void> {
    const batch = this.completions.splice(0);
    try {
      const results = await finishCompletedBatch(this.db, batch, this.queue);
      batch.forEach((b, i) => b.resolve(results[i]!));
    } catch (err) {
      for (const b of batch) b.reject(err);
    }
  }

  /** Renews leases; aborts attempts that were cancelled or whose lease was lost. */
  private async heartbeat(): Promise<void> {
    const held = [...this.running.values()].map((r) => ({ id: r.claim.task.id, attempt: r.claim.attempt }));
    let renewal: Awaited<ReturnType<typeof renewLeases>>;
    try {
      renewal = await renewLeases(this.db, this.id, held, this.queue.leaseSeconds);
    } catch (err) {
      // Cannot renew (database unreachable, partition): once a lease has run out another
      // worker may claim the task, so stop our copy rather than run it twice.
      const expired = Date.now() - this.queue.leaseSeconds * 1000;
      for (const r of this.running.values()) if (r.renewedAt < expired) r.controller.abort('lease_lost' satisfies StopReason);
      throw err;
    }
    const now = Date.now();
    for (const h of held) {
      const r = this.running.get(h.id);
      if (r && !renewal.lost.has(h.id)) r.renewedAt = now;
    }
    for (const id of renewal.cancel) this.running.get(id)?.controller.abort('cancel' satisfies StopReason);
    for (const id of renewal.lost) this.running.get(id)?.controller.abort('lease_lost' satisfies StopReason);
  }

  /**
   * Stops claiming, lets running attempts finish for up to `drainTimeoutMs`, then aborts the
   * rest and releases them to other workers without charging them an attempt.
   */
  async stop(drainTimeoutMs = 30_000): Promise<void> {
    this.stopping = true;
    this.wake?.();
    await this.loop;
    const all = () => Promise.all([...[...this.running.values()].map((r) => r.done), ...this.recording]);
    const drained = await Promise.race([all().then(() => true), new Promise<false>((r) => setTimeout(() => r(false), drainTimeoutMs).unref())]);
    if (!drained) {
      for (const r of this.running.values()) r.controller.abort('drain' satisfies StopReason);
      await all();
    }
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    await this.unlisten?.();
  }
}
