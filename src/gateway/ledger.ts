import { FabricError } from '../errors/index.js';
import { budgetError, countTokens, type ExhaustedLimit, type MeterResult, type UsageItem } from '../budget/index.js';
import type { Db } from '../db/index.js';
import { EVENTS_CHANNEL } from '../events/index.js';
import { currentContext } from '../telemetry/index.js';
import { checkCaller, type Caller, type CallerRow, type TokenCaller } from './caller.js';
import type { ModelPolicy } from './policy.js';

/** What one call may cost at most: prompt tokens plus max output, priced. */
export interface WorstCase {
  tokens: number;
  costMicros: bigint;
}

/** A database error of a reservation as the gateway's error: a budget refusal says the call was not sent and what to lower. */
export function refusal(raw: unknown, worst: WorstCase): unknown {
  const err = budgetError(raw);
  if (err instanceof FabricError && err.code === 'quota_exceeded')
    return new FabricError(
      429,
      'quota_exceeded',
      `This model call may use up to ${worst.tokens} tokens (prompt + max_tokens) and was not sent to the provider. ${err.message.replace('lower estimated_tokens', 'lower max_tokens')}`,
      { ...err.details, type: 'insufficient_quota' },
    );
  return err;
}

/** How long a call's reservation outlives its deadline before the budget sweeper frees it (a process that died mid-call). */
export const RESERVATION_GRACE_MS = 60_000;

/**
 * Before forwarding, in one statement (`fabric_gateway_admit`, migration 0013): the caller's
 * session and task are checked (task row locked), and — only when both are running — the
 * call's worst case is reserved against the agent's quota and every budget above it
 * (`fabric_budget_reserve`: a `block` entity that cannot cover it → 429 quota_exceeded, and
 * nothing goes upstream). Row locks last that one statement. Then the model against the
 * policy, with the row just read; a refusal gives the reservation back (the call never goes
 * upstream, so a concurrent call could at most have been refused for want of it).
 *
 * The call's reservation has no task: it is settled by its own key when the call ends, so
 * concurrent calls of one task never draw on each other's hold. What the task reserved at
 * submit (`estimated_tokens`) is handed back here on its first call — from then on the task's
 * calls hold their own worst cases — so an accurate estimate does not block its own task.
 */
export async function admitCall(db: Db, policy: ModelPolicy, t: TokenCaller, model: string, key: string, worst: WorstCase, deadline: number): Promise<Caller> {
  let row: CallerRow | undefined;
  try {
    const r = await db.query<CallerRow>('SELECT * FROM fabric_gateway_admit($1, $2, $3, $4, $5, $6, $7, $8)', [
      t.tenantId,
      t.agentId,
      t.sessionId,
      t.sessionId ? null : t.taskId,
      key,
      worst.tokens,
      String(worst.costMicros),
      new Date(deadline + RESERVATION_GRACE_MS),
    ]);
    row = r.rows[0];
  } catch (raw) {
    throw refusal(raw, worst);
  }
  // refused here ⇔ nothing was reserved (the function reserves only for a running session and task)
  const caller = checkCaller(t, row);
  const refused = await policy.check({ tenantId: caller.tenantId, agentId: caller.agentId, taskId: caller.taskId, configured: caller.configured }, model);
  if (refused) {
    await db.query(`SELECT fabric_budget_release(ARRAY(SELECT id FROM budget_reservations WHERE tenant_id = $1 AND idempotency_key = $2 AND status = 'open'), 'released')`, [t.tenantId, key]);
    throw new FabricError(403, 'model_not_allowed', refused, { param: 'model' });
  }
  return caller;
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

/** What a call used, as the usage item its settle stores (null: nothing), and its model.call event (token counts only). */
export function meteredCall(caller: Caller, key: string, c: CallRecord): { item: UsageItem | null; event: Record<string, unknown> } {
  const used = c.inputTokens + c.outputTokens > 0 || c.costMicros > 0n;
  const item: UsageItem | null = used
    ? {
        dimension: 'tokens',
        quantity: c.inputTokens + c.outputTokens,
        model: c.model,
        input_tokens: c.inputTokens,
        output_tokens: c.outputTokens,
        cost_micros: String(c.costMicros),
        key,
        ...(caller.sessionId ? { session_id: caller.sessionId } : {}),
      }
    : null;
  const event = {
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
  };
  return { item, event };
}

/**
 * After the call, in one statement (`fabric_gateway_settle`, migration 0013): the task row is
 * locked (the budget writers' lock order), the call's reservation released, what it used
 * metered (an agent_quota_usage row keyed by the call — stored and counted once — the
 * counters, and INSUFFICIENT_FUNDS when spend passed a `block` hard limit, as meterUsage does)
 * and a `model.call` event records the token counts — never prompt or completion text
 * (managed-execution-prd §14.15).
 */
export async function settleCall(db: Db, caller: Caller, key: string, c: CallRecord): Promise<MeterResult> {
  const { item, event } = meteredCall(caller, key, c);
  const r = await db.query<{ r: { exhausted: ExhaustedLimit | null; stopped: boolean; agent_id: string | null } }>('SELECT fabric_gateway_settle($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7) AS r', [
    caller.tenantId,
    caller.taskId,
    caller.agentId,
    key,
    item ? JSON.stringify(item) : null,
    JSON.stringify(event),
    currentContext().request_id ?? null,
  ]);
  db.notifySoon(EVENTS_CHANNEL);
  const out = r.rows[0]!.r;
  if (item) countTokens(caller.tenantId, out.agent_id ?? caller.agentId, [item]);
  return { exhausted: out.exhausted, stopped: out.stopped };
}
