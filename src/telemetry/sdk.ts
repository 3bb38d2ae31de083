import { context, propagation, trace, type TracerProvider } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  AlwaysOffSampler,
  AlwaysOnSampler,
  BasicTracerProvider,
  BatchSpanProcessor,
  ParentBasedSampler,
  SimpleSpanProcessor,
  TraceIdRatioBasedSampler,
  type ReadableSpan,
  type Sampler,
  type Span,
  type SpanExporter,
  type SpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import type { Context } from '@opentelemetry/api';
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from '@opentelemetry/semantic-conventions';
import type { TracingConfig } from '../config/index.js';
import { telemetryAllowed } from './zero-telemetry.js';

/** The running SDK as tracing.ts holds it. */
export type SdkHandle = TracerProvider & { shutdown(): Promise<void> };

function samplerFor(config: TracingConfig): Sampler {
  const ratio = new TraceIdRatioBasedSampler(config.samplerRatio);
  switch (config.sampler) {
    case 'always_on':
      return new AlwaysOnSampler();
    case 'always_off':
      return new AlwaysOffSampler();
    case 'traceidratio':
      return ratio;
    case 'parentbased_always_off':
      return new ParentBasedSampler({ root: new AlwaysOffSampler() });
    case 'parentbased_traceidratio':
      return new ParentBasedSampler({ root: ratio });
    default:
      return new ParentBasedSampler({ root: new AlwaysOnSampler() });
  }
}

/**
 * Drops, before export, every span of a tenant in zero-telemetry mode (README "Zero-telemetry
 * mode": trace export is product telemetry). A span names its tenant in `fabric.tenant_id`, set
 * at start or — for a request span — once the caller is known, so the check runs when it ends.
 */
class ZeroTelemetrySpanFilter implements SpanProcessor {
  constructor(private readonly inner: SpanProcessor) {}
  onStart(span: Span, parent: Context): void {
    this.inner.onStart(span, parent);
  }
  onEnd(span: ReadableSpan): void {
    const tenant = span.attributes['fabric.tenant_id'];
    if (typeof tenant === 'string' && !telemetryAllowed('trace_export', tenant)) return;
    this.inner.onEnd(span);
  }
  forceFlush(): Promise<void> {
    return this.inner.forceFlush();
  }
  shutdown(): Promise<void> {
    return this.inner.shutdown();
  }
}

/**
 * The OpenTelemetry SDK (2.x: span processors are given to the provider's constructor):
 * resource, sampler, a batch (or, in tests, simple) processor exporting OTLP/HTTP — or to
 * `exporter` — registered as the global provider with an AsyncLocalStorage context manager
 * and the W3C trace-context propagator. Loaded only when tracing starts.
 */
export function startSdk(config: TracingConfig, options: { exporter?: SpanExporter; simple?: boolean }): SdkHandle {
  const exporter = options.exporter ?? new OTLPTraceExporter({ url: config.tracesUrl, headers: config.headers });
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ ...config.resourceAttributes, [ATTR_SERVICE_NAME]: config.serviceName, [ATTR_SERVICE_VERSION]: '0.1.0' }),
    sampler: samplerFor(config),
    spanProcessors: [new ZeroTelemetrySpanFilter(options.simple ? new SimpleSpanProcessor(exporter) : new BatchSpanProcessor(exporter))],
  });
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  trace.setGlobalTracerProvider(provider);
  return provider;
}
