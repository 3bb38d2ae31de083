import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { trace } from '@opentelemetry/api';
import { InMemorySpanExporter } from '@opentelemetry/sdk-trace-base';
import { OTLP_HEADER_KEY } from '../../test/support/planted-secrets.js';
import { ConfigError, loadConfig } from '../config/index.js';
import { logger } from './logger.js';
import { activeTraceIds, activeTraceparent, contextFromTraceparent, SpanKind, startLinkedSpan, startSpan, startTracing, stopTracing, tracingEnabled, withActiveSpan } from './tracing.js';

describe('tracing configuration (OTEL_* variables)', () => {
  it('is off by default, and with OTEL_SDK_DISABLED or OTEL_TRACES_EXPORTER=none whatever the endpoint', () => {
    assert.equal(loadConfig({}).tracing.enabled, false);
    const endpoint = { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318/' };
    assert.equal(loadConfig(endpoint).tracing.enabled, true);
    assert.equal(loadConfig({ ...endpoint, OTEL_SDK_DISABLED: 'true' }).tracing.enabled, false);
    assert.equal(loadConfig({ ...endpoint, OTEL_TRACES_EXPORTER: 'none' }).tracing.enabled, false);
    assert.equal(loadConfig({ OTEL_TRACES_EXPORTER: 'otlp' }).tracing.tracesUrl, 'http://localhost:4318/v1/traces');
  });

  it('reads the endpoint, service name, sampler, headers and resource attributes as the OTEL spec defines them', () => {
    const c = loadConfig({
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318/',
      OTEL_SERVICE_NAME: 'fleet-a',
      OTEL_TRACES_SAMPLER: 'parentbased_traceidratio',
      OTEL_TRACES_SAMPLER_ARG: '0.25',
      OTEL_EXPORTER_OTLP_HEADERS: `api-key=${OTLP_HEADER_KEY},x-team=a%20b`,
      OTEL_EXPORTER_OTLP_TRACES_HEADERS: 'x-team=c',
      OTEL_RESOURCE_ATTRIBUTES: 'deployment.environment=prod',
    }).tracing;
    assert.deepEqual(c, {
      enabled: true,
      serviceName: 'fleet-a',
      tracesUrl: 'http://collector:4318/v1/traces',
      headers: { 'api-key': OTLP_HEADER_KEY, 'x-team': 'c' },
      sampler: 'parentbased_traceidratio',
      samplerRatio: 0.25,
      resourceAttributes: { 'deployment.environment': 'prod' },
    });
    assert.equal(loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://a:4318', OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://b:9999/traces' }).tracing.tracesUrl, 'http://b:9999/traces');
    // the resolved config may be logged by an operator's tooling: its headers are redacted
    logger().info({ tracing: { headers: c.headers } }, 'tracing configured');
  });

  it('refuses bad values with a message naming the variable', () => {
    assert.throws(() => loadConfig({ OTEL_TRACES_SAMPLER: 'sometimes' }), (e: Error) => e instanceof ConfigError && /OTEL_TRACES_SAMPLER/.test(e.message));
    assert.throws(() => loadConfig({ OTEL_TRACES_SAMPLER_ARG: '2' }), (e: Error) => e instanceof ConfigError && /OTEL_TRACES_SAMPLER_ARG/.test(e.message));
    assert.throws(() => loadConfig({ OTEL_EXPORTER_OTLP_HEADERS: 'novalue' }), (e: Error) => e instanceof ConfigError && /OTEL_EXPORTER_OTLP_HEADERS/.test(e.message));
    assert.throws(() => loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'collector' }), (e: Error) => e instanceof ConfigError && /OTEL_EXPORTER_OTLP_ENDPOINT/.test(e.message));
  });
});

describe('tracing helpers', () => {
  it('off: no SDK, no span, no context — the API keeps its no-op tracer', async () => {
    await startTracing(loadConfig({}).tracing);
    assert.equal(tracingEnabled(), false);
    assert.equal(startSpan('x', SpanKind.INTERNAL, {}), undefined);
    assert.equal(startLinkedSpan('x', SpanKind.CONSUMER, '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', {}), undefined);
    assert.equal(activeTraceparent(), undefined);
    assert.deepEqual(activeTraceIds(), {});
    assert.equal(trace.getTracer('t').startSpan('x').isRecording(), false);
  });

  it('on: a stored traceparent continues its trace, and the active span shows in traceparent and log ids', async () => {
    const exporter = new InMemorySpanExporter();
    await startTracing(loadConfig({}).tracing, { exporter, simple: true });
    try {
      const stored = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
      assert.ok(contextFromTraceparent(stored));
      assert.equal(contextFromTraceparent('00-garbage'), undefined);
      const span = startLinkedSpan('task.attempt', SpanKind.CONSUMER, stored, { 'fabric.task_id': 't1' })!;
      withActiveSpan(span, () => {
        const id = span.spanContext().spanId;
        assert.equal(activeTraceparent(), `00-0af7651916cd43dd8448eb211c80319c-${id}-01`);
        assert.deepEqual(activeTraceIds(), { trace_id: '0af7651916cd43dd8448eb211c80319c', span_id: id });
        startSpan('child', SpanKind.INTERNAL, {})!.end();
      });
      span.end();
      const [child, attempt] = exporter.getFinishedSpans();
      assert.equal(attempt!.parentSpanContext?.spanId, 'b7ad6b7169203331');
      assert.equal(child!.parentSpanContext?.spanId, attempt!.spanContext().spanId);
      // a task submitted untraced starts a trace of its own
      const fresh = startLinkedSpan('task.attempt', SpanKind.CONSUMER, null, {})!;
      assert.notEqual(fresh.spanContext().traceId, '0af7651916cd43dd8448eb211c80319c');
      fresh.end();
    } finally {
      await stopTracing();
    }
    assert.equal(tracingEnabled(), false);
  });

  it('an export the collector refuses is reported through the warn hook (the server logs it), not thrown', async () => {
    const warnings: string[] = [];
    const config = loadConfig({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://127.0.0.1:1/v1/traces' }).tracing;
    await startTracing(config, { warn: (message, err) => warnings.push(`${message} ${err instanceof Error ? err.message : String(err)}`) });
    startSpan('lost', SpanKind.INTERNAL, {})!.end();
    await stopTracing(); // flushes: the export fails (nothing listens on port 1)
    assert.ok(warnings.length > 0, 'the failed export was reported');
  });
});
