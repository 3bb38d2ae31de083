import { FabricError } from '../errors/index.js';
import { meterUsage, releaseReservation, reserve, type MeterResult } from '../budget/index.js';
import { withTransaction, type Db } from '../db/index.js';
import { recordEvent } from '../events/index.js';
import { loadCaller, type Caller, type TokenCaller } from './caller.js';
import type { ModelPolicy } from './policy.js';

/** What one call may cost at most: prompt tokens plus max output, priced. */
export interface WorstCase {
  tokens: number;
  costMicros: bigint;
}

/** How long a call's reservation outlives its deadline before the budget sweeper frees it (a process that died mid-call). */
const RESERVATION_GRACE_MS = 60_000;

/**
 * Before forwarding, in one transaction: the caller's session and task are checked (task row
 * locked), the model against the policy, and the call's worst case is reserved against the
 * agent's quota and every budget above it (`fabric_budget_reserve`: a `block` entity that
 * cannot cover it → 429 quota_exceeded, and nothing goes upstream).
 *
 * The call's reservation has no task: it is settled by its own key when the call ends, so
 * concurrent calls of one task never draw on each other's hold. What the task reserved at
 * submit (`estimated_tokens`) is handed back here on its first call — from then on the task's
 * calls hold their own worst cases — so an accurate estimate does not block its own task.
 */
export async function admitCall(db: Db, policy: ModelPolicy, t: TokenCaller, model: string, key: string, worst: WorstCase, deadline: number): Promise<Caller> {
  return withTransaction(
    db,
    async (tx) => {
      const caller = await loadCaller(tx, t, true);
      const refused = policy.check({ tenantId: caller.tenantId, agentId: caller.agentId, taskId: caller.taskId, configured: caller.configured }, model);
      if (refused) throw new FabricError(403, 'model_not_allowed', refused, { param: 'model' });
      await tx.query(
        `SELECT fabric_budget_release(ARRAY(SELECT id FROM budget_reservations WHERE tenant_id = $1 AND task_id = $2 AND status = 'open'), 'released')`,
        [caller.tenantId, caller.taskId],
      );
      try {
        await reserve(tx, caller.tenantId, [{ agentId: caller.agentId, taskId: null, key, tokens: worst.tokens, costMicros: worst.costMicros }], new Date(deadline + RESERVATION_GRACE_MS));
      } catch (err) {
        if (err instanceof FabricError && err.code === 'quota_exceeded')
          throw new FabricError(
            429,
            'quota_exceeded',
            `This model call may use up to ${worst.tokens} tokens (prompt + max_tokens) and was not sent to the provider. ${err.message.replace('lower estimated_tokens', 'lower max_tokens')}`,
            { ...err.details, type: 'insufficient_quota' },
          );
        throw err;
      }
      return caller;
    },
    { name: 'gateway admit' },
  );
}

/** What a finished (or failed, or interrupted) call used and how it ended: the model.call event. */
export interface CallRecord {
  callId: string;
  model: string;
  upstream: string;
  stream: boolean;
  inputTokens: number;
  outputTokens: number;
  costMicros: bigint;
  /** upstream: the provider's usage; estimated: counted by the gateway (no usage arrived). */
  usageSource: 'upstream' | 'estimated' | 'none';
  outcome: 'complete' | 'client_disconnected' | 'cancelled' | 'upstream_error';
  status: number;
  tries: number;
  durationMs: number;
}

/**
 * After the call, in one transaction: its reservation is released, what it used is metered
 * (`meterUsage`: an agent_quota_usage row keyed by the call, the counters, and INSUFFICIENT_FUNDS
 * when spend passed a `block` hard limit) and a `model.call` event records the token counts —
 * never prompt or completion text (managed-execution-prd §14.15).
 */
export async function settleCall(db: Db, caller: Caller, key: string, c: CallRecord): Promise<MeterResult> {
  return withTransaction(
    db,
    async (tx) => {
      // the budget writers' lock order: task row, reservations, quotas, budgets
      await tx.query('SELECT 1 FROM tasks WHERE tenant_id = $1 AND id = $2 FOR NO KEY UPDATE', [caller.tenantId, caller.taskId]);
      await releaseReservation(tx, caller.tenantId, key);
      const used = c.inputTokens + c.outputTokens > 0 || c.costMicros > 0n;
      const metered = used
        ? await meterUsage(tx, {
            tenantId: caller.tenantId,
            taskId: caller.taskId,
            model: c.model,
            inputTokens: c.inputTokens,
            outputTokens: c.outputTokens,
            costMicros: c.costMicros,
            key,
            ...(caller.sessionId ? { sessionId: caller.sessionId } : {}),
          })
        : { exhausted: null, stopped: false };
      await recordEvent(tx, {
        tenantId: caller.tenantId,
        agentId: caller.agentId,
        eventType: 'model.call',
        subjectType: 'task',
        subjectId: caller.taskId,
        data: {
          call_id: c.callId,
          session_id: caller.sessionId,
          attempt: caller.attempt,
          workspace_id: caller.workspaceId,
          user_id: caller.userId,
          model: c.model,
          upstream: c.upstream,
          stream: c.stream,
          input_tokens: c.inputTokens,
          output_tokens: c.outputTokens,
          cost_micros: Number(c.costMicros),
          usage_source: c.usageSource,
          outcome: c.outcome,
          status: c.status,
          tries: c.tries,
          duration_ms: c.durationMs,
          ...(metered.stopped ? { stopped: 'INSUFFICIENT_FUNDS' } : {}),
        },
      });
      return metered;
    },
    { name: 'gateway settle' },
  );
}
