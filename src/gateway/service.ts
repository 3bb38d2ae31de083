import { randomUUID } from 'node:crypto';
import type { TokenVerifier } from '../auth/index.js';
import type { GatewayConfig } from '../config/index.js';
import type { Db } from '../db/index.js';
import { FabricError } from '../errors/index.js';
import { addToContext, annotateActiveSpan, logger, traceparentOf } from '../telemetry/index.js';
import { CancelWatch } from './cancel-watch.js';
import { CallerCache } from './caller-cache.js';
import { identify, type Caller, type TokenCaller } from './caller.js';
import { CreditLeases, type Hold } from './credit-lease.js';
import { forward, UpstreamFailure, type UpstreamResponse } from './forward.js';
import { admitCall, settleCall, type CallRecord, type WorstCase } from './ledger.js';
import { gatewayCalls, upstreamLatency } from './metrics.js';
import { agentConfigPolicy, type ModelPolicy } from './policy.js';
import { costMicros } from './pricing.js';
import { RateLimiter, type RateLimits } from './rate-limit.js';
import { endUpstreamSpan, startUpstreamSpan } from './tracing.js';
import { eventData, SseSplitter } from './sse.js';
import { chatPromptTokens, embeddingInputTokens, textTokens } from './tokens.js';
import { ModelCatalog, scrub, type ModelRoute } from './upstreams.js';

/** How the route answers the client: JSON once, or an event stream. */
export interface Responder {
  /** Aborted when the client goes away. */
  readonly gone: AbortSignal;
  json(status: number, body: unknown, headers: Record<string, string>): void;
  startStream(headers: Record<string, string>): void;
  write(text: string): void;
  end(): void;
}

export interface GatewayOptions {
  db: Db;
  config: GatewayConfig;
  verifyToken: TokenVerifier;
  /** Which models an agent may use; default its AgentConfig (the policy engine plugs in here). */
  policy?: ModelPolicy;
  /** Rate limits per tenant, read on every call (the operator's runtime settings); default config's. */
  rateLimits?: (tenantId: string) => RateLimits;
}

type Kind = 'chat' | 'embeddings';

/** A request, sized: what goes upstream and what it may cost at most. */
interface Prepared {
  kind: Kind;
  route: ModelRoute;
  stream: boolean;
  clientWantsUsage: boolean;
  promptTokens: number;
  worst: WorstCase;
  upstreamBody: Record<string, unknown>;
}

const invalid = (message: string, param: string | null) => new FabricError(400, 'invalid_request', message, { param });

function positiveInt(body: Record<string, unknown>, name: string): number | undefined {
  const v = body[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) throw invalid(`${name} must be a positive integer.`, name);
  return v;
}

/**
 * The model gateway (README "Model gateway"): OpenAI-compatible calls from agents, attributed
 * to their session and task, checked against their model allow-list, rate limits and budgets
 * before anything is sent, forwarded with the provider's key (never the caller's), and
 * metered from the provider's usage after.
 */
export class Gateway {
  readonly catalog: ModelCatalog;
  private readonly limiter: RateLimiter;
  private readonly cancels: CancelWatch;
  private readonly callers: CallerCache;
  private readonly policy: ModelPolicy;
  private readonly secrets: string[];
  /** Per-agent credit leases and batched settles; undefined with FABRIC_GATEWAY_LEASE_CALLS=0 (a reservation per call). */
  private readonly leases: CreditLeases | undefined;

  constructor(private readonly o: GatewayOptions) {
    this.catalog = new ModelCatalog(o.config.upstreams);
    this.limiter = new RateLimiter(o.rateLimits ?? o.config);
    this.cancels = new CancelWatch(o.db, o.config.cancelPollMs);
    this.callers = new CallerCache(o.db, o.config.callerCacheMs);
    this.callers.start();
    this.policy = o.policy ?? agentConfigPolicy;
    this.secrets = this.catalog.secrets();
    const c = o.config;
    this.leases = c.leaseCalls > 0 ? new CreditLeases(o.db, { leaseCalls: c.leaseCalls, idleMs: c.leaseIdleMs, settleDelayMs: c.settleDelayMs, timeoutMs: c.timeoutMs }) : undefined;
  }

  identify(authorization: string | undefined, taskHeader: string | undefined): Promise<TokenCaller> {
    return identify(this.o.verifyToken, authorization, taskHeader);
  }

  /** GET /v1/models: the configured models this agent may use. */
  async models(t: TokenCaller) {
    const caller = await this.callers.load(t);
    const allowed = new Set(this.policy.allowed({ tenantId: caller.tenantId, agentId: caller.agentId, taskId: caller.taskId, configured: caller.configured }, this.catalog.all().map((r) => r.model)));
    return {
      object: 'list',
      data: this.catalog
        .all()
        .filter((r) => allowed.has(r.model))
        .map((r) => ({ id: r.model, object: 'model', created: 0, owned_by: r.upstream.fake ? `${r.upstream.name} (fake: not a real model)` : r.upstream.name })),
    };
  }

  private prepare(kind: Kind, body: Record<string, unknown>): Prepared {
    if (typeof body.model !== 'string' || !body.model) throw invalid('model is required: one of GET /v1/models.', 'model');
    const route = this.catalog.route(body.model);
    if (!route) throw new FabricError(404, 'model_not_found', `The model ${body.model} is not served by this gateway; GET /v1/models lists those your agent may use.`, { param: 'model' });
    if (kind === 'embeddings') {
      if (body.input === undefined || body.input === null) throw invalid('input is required.', 'input');
      const promptTokens = embeddingInputTokens(body.input);
      return { kind, route, stream: false, clientWantsUsage: false, promptTokens, worst: { tokens: Math.max(1, promptTokens), costMicros: costMicros(route.price, promptTokens, 0) }, upstreamBody: body };
    }
    if (!Array.isArray(body.messages) || body.messages.length === 0) throw invalid('messages must be a non-empty array.', 'messages');
    if (body.stream !== undefined && body.stream !== null && typeof body.stream !== 'boolean') throw invalid('stream must be a boolean.', 'stream');
    const stream = body.stream === true;
    const asked = positiveInt(body, 'max_completion_tokens') ?? positiveInt(body, 'max_tokens');
    const maxOut = asked ?? this.o.config.defaultMaxTokens;
    const n = positiveInt(body, 'n') ?? 1;
    const promptTokens = chatPromptTokens(body);
    const upstreamBody: Record<string, unknown> = { ...body };
    // the reservation only holds if the provider cannot write more than it covers
    if (asked === undefined) upstreamBody.max_tokens = maxOut;
    const streamOptions = (body.stream_options ?? {}) as Record<string, unknown>;
    if (stream) upstreamBody.stream_options = { ...streamOptions, include_usage: true };
    return {
      kind,
      route,
      stream,
      clientWantsUsage: streamOptions.include_usage === true,
      promptTokens,
      worst: { tokens: promptTokens + maxOut * n, costMicros: costMicros(route.price, promptTokens, maxOut * n) },
      upstreamBody,
    };
  }

  /** POST /v1/chat/completions and /v1/embeddings. Throws FabricError before anything is sent to the client. */
  async call(t: TokenCaller, kind: Kind, body: Record<string, unknown>, res: Responder): Promise<void> {
    const p = this.prepare(kind, body);
    const refused = this.limiter.admit(t.agentId, t.tenantId, p.worst.tokens);
    if (refused)
      throw new FabricError(429, 'rate_limit_exceeded', `Rate limit ${refused.limit} reached for ${refused.limit.startsWith('agent') ? `agent ${t.agentId}` : `tenant ${t.tenantId}`}; retry in ${refused.retryAfterSeconds} s.`, {
        retry_after_seconds: refused.retryAfterSeconds,
        type: 'rate_limit_error',
      });
    const callId = randomUUID();
    const key = `gw:${callId}`;
    const deadline = Math.min(Date.now() + this.o.config.timeoutMs, t.expiresAt);
    let caller: Caller;
    let hold: Hold | undefined;
    try {
      ({ caller, hold } = await this.admit(t, p, key, deadline));
    } catch (err) {
      this.limiter.refund(t.agentId, t.tenantId, p.worst.tokens);
      throw err;
    }
    addToContext({ tenant_id: caller.tenantId, agent_id: caller.agentId, task_id: caller.taskId });
    annotateActiveSpan({ 'fabric.tenant_id': caller.tenantId, 'fabric.agent_id': caller.agentId, 'fabric.task_id': caller.taskId });
    const span = await startUpstreamSpan(this.o.db, caller, p.route, kind, callId);
    const controller = new AbortController();
    const onGone = () => controller.abort(new FabricError(499, 'client_disconnected', 'The client closed the connection.'));
    res.gone.addEventListener('abort', onGone);
    const unwatch = this.cancels.watch(caller.taskId, caller.sessionId, controller);
    const deadlineTimer = setTimeout(() => controller.abort(new FabricError(504, 'upstream_timeout', 'The call passed its deadline (FABRIC_GATEWAY_TIMEOUT_MS or the session token\'s expiry).')), Math.max(0, deadline - Date.now()));
    const started = performance.now();
    const record: CallRecord = {
      callId,
      model: p.route.model,
      upstream: p.route.upstream.name,
      stream: p.stream,
      inputTokens: 0,
      outputTokens: 0,
      costMicros: 0n,
      usageSource: 'none',
      outcome: 'complete',
      status: 200,
      tries: 0,
      durationMs: 0,
    };
    let failure: unknown;
    let answer: { json: unknown } | { streamDone: boolean } | undefined;
    try {
      const { response, tries } = await forward({
        url: `${p.route.upstream.baseUrl}/${kind === 'chat' ? 'chat/completions' : 'embeddings'}`,
        apiKey: p.route.upstream.apiKey,
        body: JSON.stringify(p.upstreamBody),
        signal: controller.signal,
        deadline,
        attemptTimeoutMs: this.o.config.attemptTimeoutMs,
        maxRetries: this.o.config.maxRetries,
        retryBaseMs: this.o.config.retryBaseMs,
        traceparent: traceparentOf(span),
      });
      record.tries = tries;
      record.status = response.status;
      if (!response.ok) {
        record.outcome = 'upstream_error';
        failure = await this.upstreamError(response, p.route);
      } else if (p.stream) answer = { streamDone: await this.relayStream(p, response, res, controller.signal, record, callId) };
      else answer = { json: await this.relayJson(p, response, record) };
    } catch (err) {
      failure = err;
      if (err instanceof UpstreamFailure) record.outcome = 'upstream_error';
      else if (controller.signal.aborted) record.outcome = (controller.signal.reason as FabricError)?.code === 'client_disconnected' ? 'client_disconnected' : 'cancelled';
      else record.outcome = 'upstream_error';
    } finally {
      clearTimeout(deadlineTimer);
      unwatch();
      res.gone.removeEventListener('abort', onGone);
    }
    record.durationMs = Math.round((performance.now() - started) * 100) / 100;
    upstreamLatency.observe({ upstream: record.upstream, model: record.model, outcome: record.outcome === 'complete' ? 'ok' : 'error' }, record.durationMs / 1000);
    gatewayCalls.inc({ model: record.model, outcome: record.outcome });
    endUpstreamSpan(span, record, failure !== undefined);
    this.limiter.refund(caller.agentId, caller.tenantId, p.worst.tokens - record.inputTokens - record.outputTokens);
    if (failure !== undefined) {
      if (p.stream) res.end();
      await this.settle(caller, hold, key, record);
      throw this.asGatewayError(failure);
    }
    // answered first, charged right after (off the caller's latency): until then the call's
    // worst case stays reserved, so the budget cannot be overspent meanwhile
    if (answer && 'json' in answer) res.json(200, answer.json, { 'x-fabric-call-id': callId });
    else {
      if (answer && 'streamDone' in answer && answer.streamDone) res.write('data: [DONE]\n\n');
      res.end();
    }
    await this.settle(caller, hold, key, record).catch((err: unknown) => logger().error({ err, call_id: callId }, 'gateway: metering a call failed; its reservation expires with the sweeper'));
  }

  /**
   * Before forwarding. With credit leases: the caller's session and task checked without a
   * lock, from the caller cache (caller-cache.ts: read once, dropped when the database announces
   * a stop) — a stop committed after this check is one the cancel watch sees, exactly as a stop
   * committed after a locked admit — then the worst case held against the agent's lease
   * (credit-lease.ts: 429 quota_exceeded when the budgets cannot cover it), then the model
   * policy (a refusal gives the hold back; nothing was written). A task still holding what it
   * reserved at submit takes the per-call path (fabric_gateway_admit hands that back), once.
   */
  private async admit(t: TokenCaller, p: Prepared, key: string, deadline: number): Promise<{ caller: Caller; hold?: Hold }> {
    if (!this.leases) return { caller: await admitCall(this.o.db, this.policy, t, p.route.model, key, p.worst, deadline) };
    const { holdsOwn, ...caller } = await this.callers.load(t);
    if (holdsOwn) return { caller: await admitCall(this.o.db, this.policy, t, p.route.model, key, p.worst, deadline) };
    const hold = await this.leases.admit(caller.tenantId, caller.agentId, p.worst, deadline);
    let refused: string | null;
    try {
      refused = await this.policy.check({ tenantId: caller.tenantId, agentId: caller.agentId, taskId: caller.taskId, configured: caller.configured }, p.route.model);
    } catch (err) {
      await this.leases.unhold(hold);
      throw err;
    }
    if (refused) {
      await this.leases.unhold(hold);
      throw new FabricError(403, 'model_not_allowed', refused, { param: 'model' });
    }
    return { caller, hold };
  }

  /** After the call: metered with its lease's batch, or alone (fabric_gateway_settle) when it held its own reservation. */
  private settle(caller: Caller, hold: Hold | undefined, key: string, record: CallRecord) {
    return hold ? this.leases!.settle(hold, caller, key, record) : settleCall(this.o.db, caller, key, record);
  }

  private priced(p: Prepared, record: CallRecord, input: number, output: number, source: CallRecord['usageSource']): void {
    record.inputTokens = input;
    record.outputTokens = output;
    record.usageSource = source;
    record.costMicros = costMicros(p.route.price, input, output);
  }

  /** The provider's JSON answer (passed back as it is), with its usage recorded. */
  private async relayJson(p: Prepared, response: UpstreamResponse, record: CallRecord): Promise<unknown> {
    const text = await response.text();
    let json: { usage?: { prompt_tokens?: number; completion_tokens?: number }; choices?: { message?: { content?: unknown } }[] };
    try {
      json = JSON.parse(text) as typeof json;
    } catch {
      // the provider answered and may have charged: count the prompt, then report its fault
      this.priced(p, record, p.promptTokens, 0, 'estimated');
      throw new FabricError(502, 'upstream_error', `Upstream ${p.route.upstream.name} answered with something that is not JSON.`);
    }
    const u = json.usage;
    if (u && typeof u.prompt_tokens === 'number') this.priced(p, record, u.prompt_tokens, u.completion_tokens ?? 0, 'upstream');
    else {
      const out = (json.choices ?? []).reduce((n, c) => n + textTokens(typeof c.message?.content === 'string' ? c.message.content : ''), 0);
      this.priced(p, record, p.promptTokens, out, 'estimated');
    }
    return json;
  }

  /**
   * Passes the provider's events through as they come, reading the usage chunk it sends last
   * (include_usage is always asked for; the chunk is dropped unless the client asked too). If
   * the stream stops early — client gone, task stopped, provider failed — what was produced is
   * still metered: the provider's usage if it arrived, else the prompt plus the streamed text
   * counted with the tokenizer. The final `[DONE]` is left to the caller (returns whether it
   * came), which ends the stream.
   */
  private async relayStream(p: Prepared, response: UpstreamResponse, res: Responder, signal: AbortSignal, record: CallRecord, callId: string): Promise<boolean> {
    res.startStream({ 'x-fabric-call-id': callId });
    const splitter = new SseSplitter();
    let produced = '';
    let done = false;
    let usage: { prompt_tokens?: number; completion_tokens?: number } | undefined;
    const handle = (event: string) => {
      const data = eventData(event);
      if (data === '[DONE]') {
        done = true;
        return;
      }
      if (data) {
        try {
          const chunk = JSON.parse(data) as { usage?: typeof usage; choices?: { delta?: { content?: string | null; tool_calls?: { function?: { arguments?: string } }[] } }[] };
          if (chunk.usage) usage = chunk.usage;
          for (const c of chunk.choices ?? []) {
            if (typeof c.delta?.content === 'string') produced += c.delta.content;
            for (const tc of c.delta?.tool_calls ?? []) produced += tc.function?.arguments ?? '';
          }
          if (chunk.usage && (chunk.choices ?? []).length === 0 && !p.clientWantsUsage) return;
        } catch {
          // not JSON: pass it through untouched
        }
      }
      res.write(`${event}\n\n`);
    };
    const reader = response.body!.getReader();
    const stop = () => void reader.cancel(signal.reason).catch(() => {});
    signal.addEventListener('abort', stop);
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (signal.aborted) throw signal.reason;
        if (done) break;
        for (const event of splitter.push(value)) handle(event);
      }
      const rest = splitter.rest();
      if (rest.trim()) handle(rest);
    } catch (err) {
      if (signal.aborted) {
        const reason = signal.reason as FabricError;
        if (reason?.code !== 'client_disconnected') res.write(`data: ${JSON.stringify(openAiErrorBody(reason))}\n\n`);
      } else res.write(`data: ${JSON.stringify(openAiErrorBody(new FabricError(502, 'upstream_error', `Upstream ${p.route.upstream.name} broke off the stream.`)))}\n\n`);
      throw signal.aborted ? signal.reason : err;
    } finally {
      signal.removeEventListener('abort', stop);
      if (usage && typeof usage.prompt_tokens === 'number') this.priced(p, record, usage.prompt_tokens, usage.completion_tokens ?? 0, 'upstream');
      else this.priced(p, record, p.promptTokens, textTokens(produced), 'estimated');
    }
    return done;
  }

  /** A provider's non-2xx (after retries) as the caller's error: its message scrubbed of keys. */
  private async upstreamError(response: UpstreamResponse, route: ModelRoute): Promise<FabricError> {
    const text = await response.text().catch(() => '');
    let upstream: { message?: string; type?: string; code?: string; param?: string } = {};
    try {
      upstream = (JSON.parse(text) as { error?: typeof upstream }).error ?? {};
    } catch {
      // not OpenAI-shaped: the status says enough
    }
    const said = scrub(String(upstream.message ?? text.slice(0, 300)), this.secrets);
    const name = route.upstream.name;
    if (response.status === 429) {
      const after = Number(response.headers.get('retry-after'));
      return new FabricError(429, 'upstream_rate_limited', `Upstream ${name} is rate limiting the fabric (after retries); retry later. It said: ${said}`, {
        retry_after_seconds: Number.isFinite(after) && after > 0 ? after : 1,
        type: 'rate_limit_error',
      });
    }
    if (response.status >= 500) return new FabricError(502, 'upstream_error', `Upstream ${name} failed with ${response.status} (after retries); retry later. It said: ${said}`);
    if (response.status === 401 || response.status === 403)
      return new FabricError(502, 'upstream_auth_failed', `Upstream ${name} refused the fabric's key (${response.status}); an operator must fix its key in FABRIC_GATEWAY_UPSTREAMS.`);
    return new FabricError(response.status, typeof upstream.code === 'string' ? upstream.code : 'upstream_invalid_request', `Upstream ${name} refused the request: ${said}`, {
      param: upstream.param ?? null,
      type: upstream.type ?? 'invalid_request_error',
    });
  }

  private asGatewayError(err: unknown): unknown {
    if (err instanceof UpstreamFailure)
      return err.kind === 'timeout'
        ? new FabricError(504, 'upstream_timeout', `The provider did not answer in time (after retries): ${err.message}. Retry, or lower max_tokens.`)
        : new FabricError(502, 'upstream_unreachable', `The provider could not be reached (after retries): ${scrub(err.message, this.secrets)}.`);
    if (!(err instanceof FabricError)) logger().error({ err }, 'gateway call failed');
    return err;
  }

  /** Stops the cancel watch, settles what is queued and hands the credit leases back. */
  async close(): Promise<void> {
    this.cancels.close();
    await this.callers.close();
    await this.leases?.close();
  }
}

/** OpenAI's error type for a status (what its clients switch on). */
export function openAiErrorType(status: number, code: string): string {
  if (code === 'quota_exceeded') return 'insufficient_quota';
  if (status === 400 || status === 404 || status === 409 || status === 413 || status === 415 || status === 422) return status === 404 ? 'not_found_error' : 'invalid_request_error';
  if (status === 401) return 'authentication_error';
  if (status === 403) return 'permission_error';
  if (status === 429) return 'rate_limit_error';
  return 'api_error';
}

/** `{"error": {"message", "type", "code", "param"}}` — OpenAI's error shape, plus the fabric's detail fields. */
export function openAiErrorBody(err: { status: number; code: string; message: string; details?: Record<string, unknown> }) {
  const { type, param, retry_after_seconds: _retry, ...rest } = err.details ?? {};
  void _retry;
  return { error: { message: err.message, type: typeof type === 'string' ? type : openAiErrorType(err.status, err.code), code: err.code, param: typeof param === 'string' ? param : null, ...rest } };
}
