import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { GatewayUpstream } from '../config/index.js';

/**
 * A local OpenAI-compatible provider for tests, the example agent in dev and the bench — not
 * a model. Its replies are deterministic ("[fake] " and the start of the last user message,
 * cut to max_tokens words), labelled as fake (`system_fingerprint: "fabric-fake"`), with
 * usage figures that are counted (one token per word) or configured. Failures and latency
 * can be injected: `failures` is consumed one per request (500, 429, or "timeout": the
 * request is held until the connection closes).
 */
export interface FakeUpstreamOptions {
  /** Delay before every answer (ms); streams also wait chunkDelayMs between chunks. */
  latencyMs?: number;
  chunkDelayMs?: number;
  /** Usage to report instead of counting (per request). */
  usage?: { prompt_tokens: number; completion_tokens: number };
  /** Leave the usage out (of the JSON answer and of the final stream chunk). */
  omitUsage?: boolean;
  /** The key it expects (401 otherwise); default: any. */
  apiKey?: string;
}

export type InjectedFailure = 500 | 429 | 'timeout';

export interface FakeRequest {
  path: string;
  authorization: string | undefined;
  /** The W3C trace context the gateway sent (tracing on). */
  traceparent: string | undefined;
  body: Record<string, unknown>;
}

export interface FakeUpstream {
  url: string;
  /** Every request received, in order. */
  requests: FakeRequest[];
  options: FakeUpstreamOptions;
  /** Failures for the next requests, in order. */
  failures: InjectedFailure[];
  close(): Promise<void>;
}

const words = (s: string) => s.split(/\s+/).filter(Boolean);

function lastUserText(body: Record<string, unknown>): string {
  const messages = Array.isArray(body.messages) ? (body.messages as { role?: string; content?: unknown }[]) : [];
  const m = [...messages].reverse().find((x) => x.role === 'user') ?? messages.at(-1);
  return typeof m?.content === 'string' ? m.content : JSON.stringify(m?.content ?? '');
}

function reply(body: Record<string, unknown>): string[] {
  const max = Number(body.max_completion_tokens ?? body.max_tokens ?? 64);
  return ['[fake]', ...words(lastUserText(body))].slice(0, Math.max(1, max));
}

function promptTokens(body: Record<string, unknown>): number {
  const messages = Array.isArray(body.messages) ? (body.messages as { content?: unknown }[]) : [];
  return messages.reduce((n, m) => n + words(typeof m.content === 'string' ? m.content : JSON.stringify(m.content ?? '')).length + 4, 3);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function startFakeUpstream(options: FakeUpstreamOptions = {}, port = 0): Promise<FakeUpstream> {
  const requests: FakeRequest[] = [];
  const failures: InjectedFailure[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => void answer(req, res, Buffer.concat(chunks).toString('utf8')));
  });
  server.keepAliveTimeout = 60_000;
  const send = (res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
    res.writeHead(status, { 'content-type': 'application/json', ...headers });
    res.end(JSON.stringify(body));
  };
  async function answer(req: http.IncomingMessage, res: http.ServerResponse, raw: string) {
    let body: Record<string, unknown> = {};
    try {
      body = raw ? (JSON.parse(raw) as Record<string, unknown>) : {};
    } catch {
      return send(res, 400, { error: { message: 'invalid JSON', type: 'invalid_request_error', code: null, param: null } });
    }
    const path = (req.url ?? '').replace(/^\/v1/, '');
    requests.push({ path, authorization: req.headers.authorization, traceparent: req.headers.traceparent as string | undefined, body });
    const failure = failures.shift();
    if (failure === 'timeout') return; // held: the caller's timeout ends it
    if (failure === 500) return send(res, 500, { error: { message: 'injected failure', type: 'server_error', code: null, param: null } });
    if (failure === 429) return send(res, 429, { error: { message: 'injected rate limit', type: 'rate_limit_error', code: 'rate_limit_exceeded', param: null } }, { 'retry-after': '0' });
    if (options.apiKey && req.headers.authorization !== `Bearer ${options.apiKey}`)
      return send(res, 401, { error: { message: 'Incorrect API key provided.', type: 'invalid_request_error', code: 'invalid_api_key', param: null } });
    if (options.latencyMs) await sleep(options.latencyMs);
    const model = String(body.model ?? 'fake');
    if (path === '/embeddings') {
      const inputs = Array.isArray(body.input) ? body.input : [body.input];
      const n = inputs.reduce<number>((s, x) => s + words(String(x)).length, 0);
      return send(res, 200, {
        object: 'list',
        model,
        data: inputs.map((x, i) => ({ object: 'embedding', index: i, embedding: Array.from({ length: 8 }, (_, d) => ((String(x).length * (d + 1)) % 17) / 17) })),
        ...(options.omitUsage ? {} : { usage: { prompt_tokens: options.usage?.prompt_tokens ?? n, total_tokens: options.usage?.prompt_tokens ?? n } }),
      });
    }
    if (path !== '/chat/completions') return send(res, 404, { error: { message: `no route ${path}`, type: 'invalid_request_error', code: 'not_found', param: null } });
    const out = reply(body);
    const usage = options.usage ?? { prompt_tokens: promptTokens(body), completion_tokens: out.length };
    const withUsage = { ...usage, total_tokens: usage.prompt_tokens + usage.completion_tokens };
    const id = `chatcmpl-fake-${requests.length}`;
    const base = { id, created: Math.floor(Date.now() / 1000), model, system_fingerprint: 'fabric-fake' };
    if (body.stream !== true)
      return send(res, 200, {
        ...base,
        object: 'chat.completion',
        choices: [{ index: 0, message: { role: 'assistant', content: out.join(' '), refusal: null }, finish_reason: 'stop', logprobs: null }],
        ...(options.omitUsage ? {} : { usage: withUsage }),
      });
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    let closed = false;
    res.on('close', () => (closed = true));
    const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) => res.write(`data: ${JSON.stringify({ ...base, object: 'chat.completion.chunk', choices, ...extra })}\n\n`);
    chunk([{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }]);
    for (let i = 0; i < out.length && !closed; i++) {
      if (options.chunkDelayMs) await sleep(options.chunkDelayMs);
      chunk([{ index: 0, delta: { content: (i ? ' ' : '') + out[i] }, finish_reason: null }]);
    }
    if (closed) return;
    chunk([{ index: 0, delta: {}, finish_reason: 'stop' }]);
    const includeUsage = (body.stream_options as { include_usage?: boolean } | undefined)?.include_usage === true;
    if (includeUsage && !options.omitUsage) chunk([], { usage: withUsage });
    res.end('data: [DONE]\n\n');
  }
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
  return {
    url,
    requests,
    options,
    failures,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** The fake as an upstream: a few familiar model names (free), labelled fake in /v1/models. */
export function fakeUpstreamConfig(url: string, apiKey = 'fake-upstream-key'): GatewayUpstream {
  const free = { inputMicrosPer1M: 0, outputMicrosPer1M: 0 };
  return { name: 'fake', baseUrl: url, apiKey, fake: true, models: { 'gpt-4o-mini': free, 'gpt-4o': free, 'fake-chat': free, 'text-embedding-3-small': free } };
}
