import { randomUUID } from 'node:crypto';
import type { Readable } from 'node:stream';
import { recordAudit } from '../audit/index.js';
import type { Db } from '../db/index.js';
import { contentTypeForName, type AgentFiles } from '../files/index.js';
import type { Task } from '../queue/index.js';
import { activeTraceparent, endSpan, logger, SpanKind, startSpan, withActiveSpan } from '../telemetry/index.js';
import { codeDirProblem } from './code-dir.js';
import type { EgressCheck, EgressDecision } from './egress/index.js';
import { AttemptError, PermanentError, type ExecutionContext, type Executor } from '../worker/index.js';
import { DEFAULT_HEARTBEAT_TIMEOUT_MS, runSession, type SessionHost, type SessionOutcome } from './session.js';
import { recordSessionEnd, recordSessionStart, type SessionStatus } from './sessions.js';
import type { UidPool } from './uids.js';

export interface SandboxExecutorOptions {
  db: Db;
  /** Runs `isolation: none` agents (trusted, in-process). */
  inProcess: Executor;
  /** Uids for sandboxes (the warm pool's, when there is one, must be the same). */
  uids: UidPool;
  /** Where sessions live, what the host offers, the warm pool and heartbeats. */
  host: Omit<SessionHost, 'onLog' | 'onEgress' | 'uids' | 'keepArtifact'>;
  /** Where /workspace/out goes: each file becomes the agent's file with task_id set, charged to its storage quota. */
  files?: AgentFiles | undefined;
  /** The fabric's API as the sandbox reaches it (through its egress proxy), e.g. http://127.0.0.1:8787. */
  apiUrl: string;
  /** Session credentials: a JWT with sub = agent id, sid = session id, role agent, expiring with the task's timeout. */
  mintSessionToken(claims: { agentId: string; tenantId: string; sessionId: string; ttlSeconds: number }): Promise<string>;
  /** Most processes a sandbox may run at once. Default 64. */
  pidsLimit?: number;
  /**
   * The agent's net.connect policy for a session, loaded when the session starts and answered in
   * memory per destination by its egress proxy (the policy engine's netConnectCheck).
   */
  egressPolicy?: ((task: Task) => Promise<EgressCheck>) | undefined;
  /** Why a level cannot run on this host (see missingFor), if it cannot: its tasks fail with isolation_unavailable. */
  unavailable?: (level: 'process' | 'container') => string | undefined;
}

/** Stores a session's artifacts as files of its agent, tied to its task. */
function keepAs(files: AgentFiles, task: Task) {
  return async (name: string, body: Readable) => {
    const file = await files.store({ tenantId: task.tenant_id, agentId: task.agent_id }, { body, name, contentType: contentTypeForName(name), taskId: task.id });
    return { file_id: file.id };
  };
}

/** Egress denials audited one row each per session; past this a flood is summarised in one row. */
const AUDITED_DENIALS = 50;

/** Writes the session's egress denials to the audit log (who: the agent; target: the session). */
async function auditDenials(db: Db, task: Task, sessionId: string, denials: EgressDecision[], total: number): Promise<void> {
  const actor = { sub: task.agent_id, role: 'agent' };
  for (const d of denials) {
    await recordAudit(db, {
      tenantId: task.tenant_id,
      actor,
      action: 'sandbox.egress.denied',
      targetType: 'session',
      targetId: sessionId,
      after: { host: d.host, port: d.port, method: d.method, reason: d.reason, at: d.at.toISOString(), task_id: task.id },
    });
  }
  if (total > denials.length) {
    await recordAudit(db, { tenantId: task.tenant_id, actor, action: 'sandbox.egress.denied', targetType: 'session', targetId: sessionId, after: { more_denials: total - denials.length, task_id: task.id } });
  }
}

/** How a session that did not complete failed, as the attempt's error; undefined when it completed or the worker stopped it. */
function failureOf(out: SessionOutcome, memoryMb: number, heartbeatTimeoutMs: number): { code: string; message: string } | undefined {
  if (out.oomKilled) return { code: 'oom_killed', message: `The program ran out of memory (memory_mb ${memoryMb}) and was killed.` };
  if (out.stopped === 'heartbeat_lost')
    return { code: 'heartbeat_lost', message: `The sandbox's supervisor sent no heartbeat for ${heartbeatTimeoutMs / 1000} s (frozen, or killed from inside), so the session was killed.` };
  if (out.stopped === 'timeout') return { code: 'timed_out', message: 'The session ran past its timeout and was killed.' };
  if (out.stopped) return undefined; // cancel, drain, lease loss: the worker records those
  if (out.resultError) return { code: 'invalid_result', message: `The program exited 0 but ${out.resultError}` };
  if (out.exitCode === 0) return undefined;
  const how = out.signal ? `was killed by ${out.signal}` : `exited with code ${out.exitCode}`;
  const tail = out.stderrTail.trim().split('\n').slice(-5).join('\n');
  return { code: 'exit_nonzero', message: `The program ${how}${tail ? `; stderr ends with:\n${tail}` : '.'}` };
}

function statusOf(out: SessionOutcome): SessionStatus {
  if (out.stopped === 'timeout') return 'timed_out';
  if (out.stopped === 'cancel') return 'cancelled';
  if (out.stopped) return 'killed';
  return out.exitCode === 0 && !out.resultError ? 'completed' : 'failed';
}

/**
 * Runs every attempt of a `process` or `container` agent in a fresh sandbox session (see
 * session.ts), records the session — its usage, artifacts and wipe evidence — and hands
 * `none` agents to the in-process executor.
 */
export class SandboxExecutor implements Executor {
  readonly settlesOnAbort = true;

  constructor(private readonly options: SandboxExecutorOptions) {}

  async run(task: Task, ctx: ExecutionContext): Promise<unknown> {
    const iso = ctx.agent.isolation;
    if (iso.level === 'none') return this.options.inProcess.run(task, ctx);
    const command = ctx.agent.entrypoint?.command;
    if (!Array.isArray(command) || command.length === 0)
      throw new PermanentError(`Agent ${ctx.agent.id} runs in "${iso.level}" isolation but has no entrypoint.command.`, 'no_command');
    const missing = this.options.unavailable?.(iso.level);
    if (missing) throw new PermanentError(`Agent ${ctx.agent.id} needs "${iso.level}" isolation, which this worker cannot provide: ${missing}.`, 'isolation_unavailable');
    const codeDir = typeof ctx.agent.entrypoint?.code_dir === 'string' ? ctx.agent.entrypoint.code_dir : undefined;
    const codeProblem = codeDir === undefined ? undefined : await codeDirProblem(codeDir);
    if (codeProblem) throw new PermanentError(`Agent ${ctx.agent.id}: ${codeProblem}.`, 'code_dir_unreadable');
    const sessionId = randomUUID();
    const span = startSpan('sandbox.session', SpanKind.INTERNAL, { 'fabric.session_id': sessionId, 'fabric.task_id': task.id, 'fabric.agent_id': task.agent_id, 'fabric.tenant_id': task.tenant_id, 'fabric.sandbox.isolation': iso.level });
    try {
      const result = await withActiveSpan(span, () => this.runSession(task, ctx, sessionId, command as string[], codeDir));
      endSpan(span);
      return result;
    } catch (err) {
      endSpan(span, err as Error);
      throw err;
    }
  }

  /** One session: start recorded, the program run, usage, artifacts and wipe evidence recorded. */
  private async runSession(task: Task, ctx: ExecutionContext, sessionId: string, command: string[], codeDir: string | undefined): Promise<unknown> {
    const iso = ctx.agent.isolation;
    if (iso.level === 'none') throw new Error('unreachable: in-process agents never get a session');
    const o = this.options;
    const traceparent = activeTraceparent();
    const token = await o.mintSessionToken({ agentId: task.agent_id, tenantId: task.tenant_id, sessionId, ttlSeconds: task.timeout_seconds });
    const api = new URL(o.apiUrl);
    const egressCheck = await o.egressPolicy?.(task);
    await recordSessionStart(o.db, { id: sessionId, tenantId: task.tenant_id, agentId: task.agent_id, taskId: task.id, attempt: ctx.attempt, workerId: ctx.workerId, isolation: iso.level });
    const denials: EgressDecision[] = [];
    let denied = 0;
    let out: SessionOutcome;
    try {
      out = await runSession(
        {
          id: sessionId,
          level: iso.level,
          command,
          codeDir,
          memoryMb: iso.memory_mb,
          cpuCores: iso.cpu_cores,
          pids: o.pidsLimit ?? 64,
          egress: iso.network_egress,
          egressCheck,
          internal: [`${api.hostname}:${api.port || (api.protocol === 'https:' ? 443 : 80)}`],
          env: {
            FABRIC_API_URL: o.apiUrl,
            FABRIC_TOKEN: token,
            FABRIC_TASK_ID: task.id,
            FABRIC_SESSION_ID: sessionId,
            FABRIC_AGENT_ID: task.agent_id,
            OPENAI_BASE_URL: `${o.apiUrl.replace(/\/$/, '')}/v1`,
            OPENAI_API_KEY: token,
            // the W3C convention for handing trace context to a process: forward it as the
            // traceparent header of model calls and they join the task's trace
            ...(traceparent ? { TRACEPARENT: traceparent } : {}),
          },
          stdin: JSON.stringify(task),
          // the worker's own timer aborts at timeout_seconds; this is the backstop
          timeoutMs: (task.timeout_seconds + 5) * 1000,
        },
        {
          ...o.host,
          uids: o.uids,
          keepArtifact: o.files && keepAs(o.files, task),
          onLog: (line) => ctx.log(line),
          onEgress: (d) => {
            if (d.allowed) return;
            logger().warn({ egress: d, session_id: sessionId, agent_id: task.agent_id, task_id: task.id }, 'sandbox egress denied');
            if (++denied <= AUDITED_DENIALS) denials.push(d);
          },
        },
        ctx.signal,
      );
    } catch (err) {
      await recordSessionEnd(o.db, sessionId, { status: 'error', error: { code: 'sandbox_error', message: (err as Error).message } });
      throw new AttemptError(`The sandbox could not run: ${(err as Error).message}`, 'sandbox_error');
    } finally {
      if (denied) await auditDenials(o.db, task, sessionId, denials, denied).catch((err: unknown) => logger().error({ err, session_id: sessionId }, 'auditing egress denials failed'));
    }
    // the session's wall time is what the attempt's compute is charged (warm or cold)
    ctx.reportUsage({ compute_ms: Math.round(out.usage.wallSeconds * 1000), session_id: sessionId });
    const status = statusOf(out);
    const error = failureOf(out, iso.memory_mb, o.host.heartbeat?.timeoutMs ?? DEFAULT_HEARTBEAT_TIMEOUT_MS);
    await recordSessionEnd(o.db, sessionId, { status, exitCode: out.exitCode, signal: out.signal, error, usage: { ...out.usage, warm: out.warm }, artifacts: out.artifacts, wipe: out.wipe });
    if (status === 'completed') return out.result;
    throw new AttemptError(error?.message ?? `The session was stopped (${out.stopped}).`, error?.code ?? 'stopped');
  }
}
