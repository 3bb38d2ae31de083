import type { Db } from '../db/index.js';
import { contextFromTraceparent, endSpan, requestContinuesTrace, SpanKind, startSpan, tracingEnabled, type Span } from '../telemetry/index.js';
import type { Caller } from './caller.js';
import type { CallRecord } from './ledger.js';
import type { ModelRoute } from './upstreams.js';

/**
 * The span of one upstream model call (CLIENT), whose context goes to the provider as the
 * `traceparent` header. Its parent is the request's span when the caller sent a traceparent
 * (an agent forwarding TRACEPARENT / ctx.traceparent); otherwise the caller's task's stored
 * trace context, so a model call is part of its task's trace either way. Undefined when
 * tracing is off.
 */
export async function startUpstreamSpan(db: Db, caller: Caller, route: ModelRoute, kind: 'chat' | 'embeddings', callId: string): Promise<Span | undefined> {
  if (!tracingEnabled()) return undefined;
  let parent;
  if (!requestContinuesTrace()) {
    // The caller check read it with the task (cached with it); only the per-call admit
    // statement does not, and then it is looked up. Never throws: it runs after the call's
    // budget is held, outside the code that gives it back; a failed lookup costs the span its
    // parent, not the call its hold.
    const stored =
      caller.traceparent !== undefined
        ? caller.traceparent
        : (await db.query<{ traceparent: string | null }>('SELECT traceparent FROM tasks WHERE tenant_id = $1 AND id = $2', [caller.tenantId, caller.taskId]).catch(() => undefined))?.rows[0]?.traceparent;
    parent = contextFromTraceparent(stored);
  }
  return startSpan(
    `${kind} ${route.model}`,
    SpanKind.CLIENT,
    {
      'gen_ai.operation.name': kind,
      'gen_ai.request.model': route.model,
      'fabric.gateway.upstream': route.upstream.name,
      'fabric.gateway.call_id': callId,
      'fabric.task_id': caller.taskId,
      'fabric.agent_id': caller.agentId,
      'fabric.tenant_id': caller.tenantId,
      ...(caller.sessionId ? { 'fabric.session_id': caller.sessionId } : {}),
    },
    parent,
  );
}

/** Ends the call's span with what it used and how it ended (no prompt or answer text: §14.15). */
export function endUpstreamSpan(span: Span | undefined, record: CallRecord, failed: boolean): void {
  if (!span) return;
  span.setAttributes({
    'gen_ai.usage.input_tokens': record.inputTokens,
    'gen_ai.usage.output_tokens': record.outputTokens,
    'http.response.status_code': record.status,
    'fabric.gateway.tries': record.tries,
    'fabric.gateway.outcome': record.outcome,
  });
  endSpan(span, failed ? { code: record.outcome } : undefined);
}
