import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { InMemorySpanExporter, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { loadConfig } from '../src/config/index.js';
import { detectSandboxHost, missingFor, prepareSandboxRoot } from '../src/sandbox/index.js';
import { setZeroTelemetryLookup, startTracing, stopTracing } from '../src/telemetry/index.js';
import type { Worker } from '../src/worker/index.js';
import { startTestApp, type TestApp } from './support/app.js';
import { ENGINE } from './support/engine.js';
import { gatewayAgent, metered, startGatewayApp, type GatewayApp } from './support/gateway.js';
import { PROMPT_MARKER } from './support/planted-secrets.js';
import { provisionAgent, scriptedExecutor, startWorker, submit, terminal, waitForTask } from './support/queue.js';
import { testSandboxExecutor } from './support/sandbox.js';

/** A handler that calls the model gateway the way an in-process agent does, forwarding (or not) the attempt's trace context. */
function gatewayCaller(t: () => GatewayApp) {
  return scriptedExecutor({
    chat: async (task, ctx) => {
      const token = await t().token('agent', { sub: task.agent_id });
      const forward = (task.payload as { forward?: boolean }).forward !== false;
      const res = await fetch(`${t().base}/v1/chat/completions`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${token}`,
          'content-type': 'application/json',
          'x-fabric-task-id': task.id,
          ...(forward && ctx.traceparent ? { traceparent: ctx.traceparent } : {}),
        },
        body: JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: `${PROMPT_MARKER} say hi` }] }),
      });
      if (res.status !== 200) throw new Error(`gateway answered ${res.status}: ${await res.text()}`);
      return { ok: true };
    },
  });
}

const byName = (spans: ReadableSpan[], name: string) => spans.filter((s) => s.name === name);
const parentOf = (s: ReadableSpan) => s.parentSpanContext?.spanId;

async function storedTraceparent(t: GatewayApp, taskId: string): Promise<string | null> {
  return (await t.db.query<{ traceparent: string | null }>('SELECT traceparent FROM tasks WHERE id = $1', [taskId])).rows[0]!.traceparent;
}

describe(`tracing: one task is one trace (${ENGINE})`, () => {
  const exporter = new InMemorySpanExporter();
  let t: GatewayApp;
  let worker: Worker;

  before(async () => {
    await startTracing(loadConfig({}).tracing, { exporter, simple: true });
    t = await startGatewayApp();
    worker = await startWorker(t, gatewayCaller(() => t));
  });
  after(async () => {
    await worker?.stop(1000);
    await t?.close();
    await stopTracing();
  });

  it('the submit request, the worker attempt, the gateway request and its upstream call share one trace id, each the parent of the next; traceparent goes upstream and trace_id into the logs', async () => {
    const agent = await gatewayAgent(t);
    exporter.reset();
    const res = await submit(t, { agent_id: agent, type: 'chat', payload: {} });
    assert.equal(res.statusCode, 201, res.body);
    const taskId: string = res.json().task.id;
    const done = await waitForTask(t, taskId, (x) => x.status === 'completed' || x.status === 'failed' || x.status === 'dead_lettered');
    assert.equal(done.status, 'completed', JSON.stringify(done.error));
    await metered(t, taskId, 1);

    const spans = exporter.getFinishedSpans();
    const [submitSpan] = byName(spans, 'POST /api/tasks');
    assert.ok(submitSpan, `no POST /api/tasks span among ${spans.map((s) => s.name).join(', ')}`);
    const traceId = submitSpan.spanContext().traceId;
    const attempt = byName(spans, 'task.attempt').find((s) => s.attributes['fabric.task_id'] === taskId);
    assert.ok(attempt, 'no task.attempt span');
    const gatewayRequest = byName(spans, 'POST /v1/chat/completions')[0];
    assert.ok(gatewayRequest, 'no span of the gateway request');
    const upstream = byName(spans, 'chat gpt-4o-mini')[0];
    assert.ok(upstream, 'no span of the upstream call');

    for (const s of [attempt, gatewayRequest, upstream]) assert.equal(s.spanContext().traceId, traceId, `${s.name} is in another trace`);
    assert.equal(parentOf(attempt), submitSpan.spanContext().spanId, 'the attempt is a child of the submit request');
    assert.equal(parentOf(gatewayRequest), attempt.spanContext().spanId, 'the gateway request is a child of the attempt');
    assert.equal(parentOf(upstream), gatewayRequest.spanContext().spanId, 'the upstream call is a child of the gateway request');
    assert.equal(attempt.attributes['fabric.task.outcome'], 'completed');
    assert.equal(upstream.attributes['gen_ai.usage.input_tokens'] !== undefined, true);

    // the task row keeps the submit's context; the provider got the upstream span's
    assert.equal(await storedTraceparent(t, taskId), `00-${traceId}-${submitSpan.spanContext().spanId}-01`);
    const sent = t.fake.requests.at(-1)!;
    assert.equal(sent.traceparent, `00-${traceId}-${upstream.spanContext().spanId}-01`);

    // log lines written inside the trace carry its id
    const traced = t.logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.trace_id === traceId);
    assert.ok(traced.some((l) => l.route === '/v1/chat/completions' && l.task_id === taskId && l.agent_id === agent), 'the gateway request line has trace_id, task_id and agent_id');
    assert.ok(traced.some((l) => l.route === '/api/tasks' && typeof l.request_id === 'string' && typeof l.span_id === 'string'));
    // no span attribute holds the prompt
    for (const s of spans) assert.ok(!JSON.stringify(s.attributes).includes(PROMPT_MARKER), `${s.name} carries the prompt`);
  });

  it('a model call that sends no traceparent still joins its task\'s trace (through the stored context)', async () => {
    const agent = await gatewayAgent(t);
    exporter.reset();
    const res = await submit(t, { agent_id: agent, type: 'chat', payload: { forward: false } });
    assert.equal(res.statusCode, 201, res.body);
    const taskId: string = res.json().task.id;
    assert.equal((await waitForTask(t, taskId, (x) => x.status === 'completed' || x.status === 'dead_lettered')).status, 'completed');
    await metered(t, taskId, 1);
    const spans = exporter.getFinishedSpans();
    const submitSpan = byName(spans, 'POST /api/tasks')[0]!;
    const upstream = byName(spans, 'chat gpt-4o-mini').find((s) => s.attributes['fabric.task_id'] === taskId);
    assert.ok(upstream);
    assert.equal(upstream.spanContext().traceId, submitSpan.spanContext().traceId);
    assert.equal(parentOf(upstream), submitSpan.spanContext().spanId);
  });

  it('a tenant in zero-telemetry mode has none of its spans exported (trace export is product telemetry); other tenants still do', async () => {
    const agent = await gatewayAgent(t);
    const tenant = (await t.db.query<{ tenant_id: string }>('SELECT tenant_id FROM agents WHERE id = $1', [agent])).rows[0]!.tenant_id;
    const remove = setZeroTelemetryLookup((id) => id === tenant);
    try {
      exporter.reset();
      const res = await submit(t, { agent_id: agent, type: 'chat', payload: {} });
      assert.equal(res.statusCode, 201, res.body);
      const taskId: string = res.json().task.id;
      assert.equal((await waitForTask(t, taskId, (x) => x.status === 'completed' || x.status === 'dead_lettered')).status, 'completed');
      await metered(t, taskId, 1);
      const spans = exporter.getFinishedSpans();
      for (const name of ['POST /api/tasks', 'task.attempt', 'POST /v1/chat/completions', 'chat gpt-4o-mini'])
        assert.equal(byName(spans, name).length, 0, `${name} of a zero-telemetry tenant was exported`);
      assert.ok(!spans.some((s) => s.attributes['fabric.tenant_id'] === tenant));
    } finally {
      remove();
    }
    exporter.reset();
    const res = await submit(t, { agent_id: agent, type: 'chat', payload: {} });
    assert.equal((await waitForTask(t, res.json().task.id, (x) => x.status === 'completed' || x.status === 'dead_lettered')).status, 'completed');
    assert.ok(byName(exporter.getFinishedSpans(), 'task.attempt').length > 0, 'with the mode off the spans are exported again');
  });

  it('with tracing off no span is recorded, the tasks\' traceparent column stays NULL and nothing goes upstream', async () => {
    await stopTracing();
    const off = await startGatewayApp();
    const offWorker = await startWorker(off, gatewayCaller(() => off));
    try {
      const agent = await gatewayAgent(off);
      exporter.reset();
      const res = await submit(off, { agent_id: agent, type: 'chat', payload: {} });
      assert.equal(res.statusCode, 201, res.body);
      const taskId: string = res.json().task.id;
      assert.equal((await waitForTask(off, taskId, (x) => x.status === 'completed' || x.status === 'dead_lettered')).status, 'completed');
      await metered(off, taskId, 1);
      assert.equal(exporter.getFinishedSpans().length, 0);
      assert.equal(await storedTraceparent(off, taskId), null);
      assert.equal(off.fake.requests.at(-1)!.traceparent, undefined);
      const lines = off.logs.map((l) => JSON.parse(l) as Record<string, unknown>);
      assert.ok(lines.length > 0 && lines.every((l) => l.trace_id === undefined));
    } finally {
      await offWorker.stop(1000);
      await off.close();
    }
  });
});

const sandboxHost = detectSandboxHost();

describe(`tracing: a sandbox session is a span of its attempt (${ENGINE})`, { skip: missingFor('process', sandboxHost) }, () => {
  const exporter = new InMemorySpanExporter();
  let t: TestApp;
  let worker: Worker;
  let root: string;

  before(async () => {
    await startTracing(loadConfig({}).tracing, { exporter, simple: true });
    t = await startTestApp();
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'fabric-tracing-sandbox-'));
    fs.chmodSync(root, 0o755);
    const code = path.join(root, 'code');
    fs.mkdirSync(code, { mode: 0o755 });
    // the program reports the trace context it was handed
    fs.writeFileSync(path.join(code, 'traced.js'), `require('fs').writeFileSync(process.env.FABRIC_WORKSPACE + '/result.json', JSON.stringify({ traceparent: process.env.TRACEPARENT || null }));`, { mode: 0o644 });
    worker = await startWorker(t, testSandboxExecutor(t, prepareSandboxRoot(path.join(root, 'sandbox')), { uidBase: 310_000, uidCount: 20 }));
  });
  after(async () => {
    await worker?.stop(1000);
    await t?.close();
    await stopTracing();
    if (root) fs.rmSync(root, { recursive: true, force: true });
  });

  it('sandbox.session is a child of task.attempt in the submit\'s trace, and the program gets its context as TRACEPARENT', async () => {
    const code = path.join(root, 'code');
    const agent = await provisionAgent(t, { isolation: { level: 'process', memory_mb: 128 }, entrypoint: { command: ['node', path.join(code, 'traced.js')], code_dir: code } });
    const res = await submit(t, { agent_id: agent, type: 'traced' });
    assert.equal(res.statusCode, 201, res.body);
    const done = await waitForTask(t, res.json().task.id, terminal, 20_000);
    assert.equal(done.status, 'completed', JSON.stringify(done.error));
    const spans = exporter.getFinishedSpans();
    const submitSpan = byName(spans, 'POST /api/tasks')[0]!;
    const attempt = byName(spans, 'task.attempt')[0]!;
    const session = byName(spans, 'sandbox.session')[0];
    assert.ok(session, `no sandbox.session span among ${spans.map((s) => s.name).join(', ')}`);
    assert.equal(session.spanContext().traceId, submitSpan.spanContext().traceId);
    assert.equal(parentOf(attempt), submitSpan.spanContext().spanId);
    assert.equal(parentOf(session), attempt.spanContext().spanId);
    assert.equal((done.result as { traceparent: string }).traceparent, `00-${session.spanContext().traceId}-${session.spanContext().spanId}-01`);
  });
});
