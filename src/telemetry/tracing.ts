import { context, diag, DiagLogLevel, propagation, trace, ROOT_CONTEXT, SpanKind, SpanStatusCode, type Attributes, type Context, type Span } from '@opentelemetry/api';
import type { SpanExporter } from '@opentelemetry/sdk-trace-base';
import type { TracingConfig } from '../config/index.js';
import type { SdkHandle } from './sdk.js';
import { scrubError, scrubText } from './scrub.js';

export { SpanKind, SpanStatusCode, type Span } from '@opentelemetry/api';

/**
 * OpenTelemetry tracing (FR-TEL-2). Off by default: then no SDK is loaded (sdk.ts is imported
 * only when tracing starts: its modules cost ~0.3 s of CPU to load), the API's no-op tracer
 * stays in place, and every helper here returns before touching it — a disabled fabric pays
 * one boolean test per instrumented step.
 */

const TRACER = 'agent-fabric';
let provider: SdkHandle | undefined;
let warnHook: TracingOptions['warn'];

export interface TracingOptions {
  /** Export here instead of OTLP/HTTP (tests: an InMemorySpanExporter). */
  exporter?: SpanExporter;
  /** Export each span when it ends instead of in batches (tests). Default false. */
  simple?: boolean;
  /** Where the SDK's own warnings and errors go (an export the collector refused, a dropped batch); default: nowhere. */
  warn?: (message: string, err: unknown) => void;
}

/** Whether spans are being recorded in this process. */
export function tracingEnabled(): boolean {
  return provider !== undefined;
}

/** Starts the SDK when `config.enabled` (or an exporter is given); a no-op otherwise. Idempotent. */
export async function startTracing(config: TracingConfig, options: TracingOptions = {}): Promise<void> {
  if (provider || (!config.enabled && !options.exporter)) return;
  const { startSdk } = await import('./sdk.js');
  if (provider) return; // started meanwhile
  const warn = (warnHook = options.warn);
  if (warn) {
    const report = (message: string, ...args: unknown[]) => warn(message, args.find((a) => a instanceof Error) ?? (args.length ? String(args[0]) : undefined));
    const ignore = () => {};
    diag.setLogger({ error: report, warn: report, info: ignore, debug: ignore, verbose: ignore }, DiagLogLevel.WARN);
  }
  provider = startSdk(config, options);
}

/** Flushes what is buffered and stops the SDK (at shutdown; tests between runs). */
export async function stopTracing(): Promise<void> {
  const p = provider;
  if (!p) return;
  provider = undefined;
  // the last batch may not get out (collector down): that is worth a warning, not a failed stop
  await p.shutdown().catch((err: unknown) => warnHook?.('the last spans could not be exported', err));
  warnHook = undefined;
  trace.disable();
  context.disable();
  propagation.disable();
  diag.disable();
}

/** Starts a span under the active context (or `parent`); undefined when tracing is off. */
export function startSpan(name: string, kind: SpanKind, attributes: Attributes, parent?: Context): Span | undefined {
  if (!provider) return undefined;
  return trace.getTracer(TRACER).startSpan(name, { kind, attributes }, parent ?? context.active());
}

/** Adds attributes to the active span (e.g. the tenant, once a handler knows the caller); nothing when tracing is off. */
export function annotateActiveSpan(attributes: Attributes): void {
  if (provider) trace.getActiveSpan()?.setAttributes(attributes);
}

/** Runs `fn` with `span` as the active span (children and log lines see it); plain `fn()` without one. */
export function withActiveSpan<T>(span: Span | undefined, fn: () => T): T {
  if (!span) return fn();
  return context.with(trace.setSpan(context.active(), span), fn);
}

/** Ends `span`, marking it failed with `error` when given. */
export function endSpan(span: Span | undefined, error?: { code?: string; message?: string } | Error): void {
  if (!span) return;
  if (error) {
    // what goes to the collector is scrubbed like a log line: an error's text may quote a credential
    if (error instanceof Error) {
      const e = scrubError(error) as { type?: string; message?: string; stack?: string };
      span.recordException({ name: e.type ?? error.name, message: e.message, stack: e.stack });
    }
    span.setStatus({ code: SpanStatusCode.ERROR, message: 'code' in error && error.code ? String(error.code) : (scrubText(error.message) as string) });
  }
  span.end();
}

/** The W3C `traceparent` of the active span (stored with a submitted task, sent upstream), or undefined. */
export function activeTraceparent(): string | undefined {
  if (!provider) return undefined;
  const carrier: Record<string, string> = {};
  propagation.inject(context.active(), carrier, { set: (c, k, v) => void (c[k] = v) });
  return carrier.traceparent;
}

/** The context a `traceparent` (from a task row or a request header) names, to parent spans on. */
export function contextFromTraceparent(traceparent: string | null | undefined): Context | undefined {
  if (!provider || !traceparent) return undefined;
  const ctx = propagation.extract(ROOT_CONTEXT, { traceparent } as Record<string, string>, { get: (c, k) => c[k], keys: (c) => Object.keys(c) });
  return trace.getSpanContext(ctx) ? ctx : undefined;
}

/** trace_id and span_id of the active span, for log lines; {} when tracing is off or no span is active. */
export function activeTraceIds(): { trace_id?: string; span_id?: string } {
  if (!provider) return {};
  const sc = trace.getActiveSpan()?.spanContext();
  return sc ? { trace_id: sc.traceId, span_id: sc.spanId } : {};
}

/** Whether the active context's span continues a trace a caller sent (its traceparent header). */
const INBOUND = Symbol.for('agent-fabric.inbound-trace');

/**
 * Starts the server span of an HTTP request, continuing the caller's trace when its headers
 * carry a valid `traceparent`; runs `fn` (the rest of the request's hooks) inside it.
 * Without tracing, `fn()` alone and undefined.
 */
export function startServerSpan<T>(name: string, headers: Record<string, string | string[] | undefined>, attributes: Attributes, fn: (span: Span | undefined) => T): T {
  if (!provider) return fn(undefined);
  const inbound = typeof headers.traceparent === 'string' ? contextFromTraceparent(headers.traceparent) : undefined;
  const parent = inbound ?? ROOT_CONTEXT;
  const span = trace.getTracer(TRACER).startSpan(name, { kind: SpanKind.SERVER, attributes }, parent);
  return context.with(trace.setSpan(parent.setValue(INBOUND, inbound !== undefined), span), () => fn(span));
}

/** True when the active request's span continues a caller's trace (false outside a request, or without tracing). */
export function requestContinuesTrace(): boolean {
  return provider !== undefined && context.active().getValue(INBOUND) === true;
}

/** Starts a span continuing the trace `traceparent` names (a stored task's), or a new trace without one; undefined when tracing is off. */
export function startLinkedSpan(name: string, kind: SpanKind, traceparent: string | null | undefined, attributes: Attributes): Span | undefined {
  if (!provider) return undefined;
  return trace.getTracer(TRACER).startSpan(name, { kind, attributes }, contextFromTraceparent(traceparent) ?? ROOT_CONTEXT);
}

/** The W3C `traceparent` naming `span` (to send with a request the span covers). */
export function traceparentOf(span: Span | undefined): string | undefined {
  if (!span) return undefined;
  const carrier: Record<string, string> = {};
  propagation.inject(trace.setSpan(ROOT_CONTEXT, span), carrier, { set: (c, k, v) => void (c[k] = v) });
  return carrier.traceparent;
}
