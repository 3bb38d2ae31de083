import http from 'node:http';
import https from 'node:https';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * The provider's answer: status and headers as they came, the body read once — whole
 * (`text()`) or as a web stream (`body`, for event streams). node:http with keep-alive agents
 * rather than fetch: fetch's web-stream plumbing cost about 0.2–0.5 ms a call (bench/gateway).
 */
export interface UpstreamResponse {
  status: number;
  ok: boolean;
  headers: { get(name: string): string | null };
  text(): Promise<string>;
  readonly body: ReadableStream<Uint8Array> | null;
}

const agents = {
  'http:': new http.Agent({ keepAlive: true, maxSockets: 256 }),
  'https:': new https.Agent({ keepAlive: true, maxSockets: 256 }),
};

function wrap(res: http.IncomingMessage): UpstreamResponse {
  const status = res.statusCode ?? 0;
  // an abort after the headers destroys the answer with an error: readers see it, nobody else must
  res.on('error', () => {});
  let body: ReadableStream<Uint8Array> | undefined;
  return {
    status,
    ok: status >= 200 && status < 300,
    headers: {
      get(name: string) {
        const v = res.headers[name.toLowerCase()];
        return v === undefined ? null : Array.isArray(v) ? v.join(', ') : v;
      },
    },
    text() {
      return new Promise<string>((resolve, reject) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.once('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
        res.once('error', reject);
        res.once('close', () => {
          if (!res.complete) reject(new Error('the provider closed the connection mid-answer'));
        });
      });
    },
    get body() {
      body ??= Readable.toWeb(res) as unknown as ReadableStream<Uint8Array>;
      return body;
    },
  };
}

/** POSTs `body` and resolves at the response headers; `signal` aborts the request and its answer. */
function post(url: string, headers: Record<string, string>, body: string, signal: AbortSignal): Promise<UpstreamResponse> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const agent = agents[u.protocol as keyof typeof agents];
    if (!agent) return reject(new Error(`unsupported protocol ${u.protocol}`));
    const payload = Buffer.from(body);
    const req = (u.protocol === 'https:' ? https : http).request(
      u,
      { method: 'POST', agent, signal, headers: { ...headers, 'content-length': String(payload.length) } },
      (res) => resolve(wrap(res)),
    );
    req.once('error', reject);
    req.end(payload);
  });
}

/** A try that failed without a response worth passing back. */
export class UpstreamFailure extends Error {
  constructor(readonly kind: 'timeout' | 'unreachable', message: string) {
    super(message);
  }
}

export interface ForwardRequest {
  url: string;
  apiKey: string | undefined;
  body: string;
  /** Aborted when the call must stop: the client left, the task was stopped, the deadline passed. */
  signal: AbortSignal;
  /** The caller's deadline (ms since the epoch): no try starts or waits past it. */
  deadline: number;
  attemptTimeoutMs: number;
  maxRetries: number;
  retryBaseMs: number;
  /** W3C trace context of the call's span, sent as the `traceparent` header (tracing on). */
  traceparent?: string | undefined;
}

const RETRYABLE = (status: number) => status === 429 || status >= 500;

/** Seconds of a Retry-After header (delta form), if any. */
function retryAfterMs(res: UpstreamResponse): number | undefined {
  const v = Number(res.headers.get('retry-after'));
  return Number.isFinite(v) && v >= 0 ? v * 1000 : undefined;
}

/**
 * POSTs to the provider; a timeout (no response headers within attemptTimeoutMs), a network
 * error, a 429 or a 5xx is retried after an exponential backoff with full jitter (a provider's
 * Retry-After wins) while the deadline allows. Returns the last response (the caller maps a
 * non-2xx) and how many tries it took; throws UpstreamFailure when no try got a response, or
 * the signal's reason when the call was aborted.
 */
export async function forward(r: ForwardRequest): Promise<{ response: UpstreamResponse; tries: number }> {
  for (let attempt = 0; ; attempt++) {
    const left = r.deadline - Date.now();
    const tryTimeout = AbortSignal.timeout(Math.max(1, Math.min(r.attemptTimeoutMs, left)));
    let outcome: { response: UpstreamResponse } | { error: UpstreamFailure };
    try {
      const response = await post(
        r.url,
        { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...(r.apiKey ? { authorization: `Bearer ${r.apiKey}` } : {}), ...(r.traceparent ? { traceparent: r.traceparent } : {}) },
        r.body,
        AbortSignal.any([r.signal, tryTimeout]),
      );
      outcome = { response };
    } catch (err) {
      if (r.signal.aborted) throw r.signal.reason;
      outcome = tryTimeout.aborted
        ? { error: new UpstreamFailure('timeout', `the provider sent no response within ${Math.round(Math.min(r.attemptTimeoutMs, left))} ms`) }
        : { error: new UpstreamFailure('unreachable', `the provider could not be reached (${(err as Error).cause ? String(((err as Error).cause as Error).message ?? '') : (err as Error).message})`) };
    }
    if ('response' in outcome && !RETRYABLE(outcome.response.status)) return { response: outcome.response, tries: attempt + 1 };
    const backoff = Math.random() * r.retryBaseMs * 2 ** attempt;
    const wait = 'response' in outcome ? Math.max(retryAfterMs(outcome.response) ?? 0, backoff) : backoff;
    if (attempt >= r.maxRetries || Date.now() + wait >= r.deadline) {
      if ('response' in outcome) return { response: outcome.response, tries: attempt + 1 };
      throw outcome.error;
    }
    if ('response' in outcome) await outcome.response.text().catch(() => '');
    await sleep(wait, undefined, { signal: r.signal }).catch(() => {
      throw r.signal.reason;
    });
  }
}
