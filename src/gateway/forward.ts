import { setTimeout as sleep } from 'node:timers/promises';

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
}

const RETRYABLE = (status: number) => status === 429 || status >= 500;

/** Seconds of a Retry-After header (delta form), if any. */
function retryAfterMs(res: Response): number | undefined {
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
export async function forward(r: ForwardRequest): Promise<{ response: Response; tries: number }> {
  for (let attempt = 0; ; attempt++) {
    const left = r.deadline - Date.now();
    const tryTimeout = AbortSignal.timeout(Math.max(1, Math.min(r.attemptTimeoutMs, left)));
    let outcome: { response: Response } | { error: UpstreamFailure };
    try {
      const response = await fetch(r.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...(r.apiKey ? { authorization: `Bearer ${r.apiKey}` } : {}) },
        body: r.body,
        signal: AbortSignal.any([r.signal, tryTimeout]),
      });
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
    if ('response' in outcome) await outcome.response.body?.cancel().catch(() => {});
    await sleep(wait, undefined, { signal: r.signal }).catch(() => {
      throw r.signal.reason;
    });
  }
}
