import { FabricError } from '../errors/index.js';
import { logger } from '../telemetry/index.js';
import type { EmbeddingProvider } from './provider.js';

export interface OpenAiEmbeddingOptions {
  /** Base URL ending before /embeddings, e.g. https://api.openai.com/v1. */
  baseUrl: string;
  /** Bearer key; omitted for servers that need none. */
  apiKey: string | undefined;
  /** Default text-embedding-3-small. */
  model: string;
  /** Ask for this many dimensions (text-embedding-3 models). */
  dimensions: number | undefined;
  /** One HTTP call's timeout. Default 30000 ms. */
  timeoutMs: number;
  /** Retries after 429, 5xx, timeouts and network errors. Default 4. */
  maxRetries: number;
  /** Most inputs per call. Default 96. */
  batchSize: number;
  /** First backoff; doubles per retry with jitter, capped at 20 s, or Retry-After when sent. Default 500 ms. */
  backoffMs?: number;
  /** How long single calls wait to share a request with others. Default 5 ms. */
  coalesceMs?: number;
}

interface Pending {
  text: string;
  resolve(v: Float32Array): void;
  reject(err: unknown): void;
}

const RETRYABLE = (status: number) => status === 408 || status === 409 || status === 429 || status >= 500;
const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => (clearTimeout(t), reject(signal.reason)), { once: true });
  });

/**
 * Any OpenAI-compatible `POST {baseUrl}/embeddings`. Concurrent single embeds are coalesced
 * into one request (up to `batchSize` inputs); large calls are split into batches; 429, 5xx,
 * timeouts and network errors are retried with exponential backoff (honouring Retry-After).
 */
export function openAiEmbeddingProvider(options: OpenAiEmbeddingOptions): EmbeddingProvider {
  const backoffMs = options.backoffMs ?? 500;
  const coalesceMs = options.coalesceMs ?? 5;
  const queue: Pending[] = [];
  let timer: NodeJS.Timeout | undefined;

  async function call(input: string[], signal?: AbortSignal): Promise<Float32Array[]> {
    const body = JSON.stringify({ model: options.model, input, encoding_format: 'float', ...(options.dimensions ? { dimensions: options.dimensions } : {}) });
    for (let attempt = 0; ; attempt++) {
      let retryAfterMs: number | undefined;
      let reason: string;
      try {
        const res = await fetch(`${options.baseUrl}/embeddings`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...(options.apiKey ? { authorization: `Bearer ${options.apiKey}` } : {}) },
          body,
          signal: signal ? AbortSignal.any([signal, AbortSignal.timeout(options.timeoutMs)]) : AbortSignal.timeout(options.timeoutMs),
        });
        if (res.ok) return parseEmbeddings(await res.json(), input.length);
        const text = (await res.text()).slice(0, 300);
        if (!RETRYABLE(res.status))
          throw new FabricError(502, 'embedding_provider_error', `The embedding provider refused the request (${res.status}): ${text}. Check FABRIC_EMBEDDINGS_MODEL, FABRIC_EMBEDDINGS_API_KEY and FABRIC_EMBEDDINGS_BASE_URL.`);
        const ra = Number(res.headers.get('retry-after'));
        if (Number.isFinite(ra) && ra > 0) retryAfterMs = Math.min(ra * 1000, 60_000);
        reason = `HTTP ${res.status}`;
      } catch (err) {
        if (err instanceof FabricError) throw err;
        if (signal?.aborted) throw err;
        reason = (err as Error).name === 'TimeoutError' ? `timed out after ${options.timeoutMs} ms` : `network error: ${(err as Error).message}`;
      }
      if (attempt >= options.maxRetries)
        throw new FabricError(503, 'embedding_provider_unavailable', `The embedding provider did not answer successfully after ${attempt + 1} tries (${reason}); nothing was stored. Retry shortly.`, { retry_after_seconds: 5 });
      const delay = retryAfterMs ?? Math.min(20_000, backoffMs * 2 ** attempt) * (0.5 + Math.random() / 2);
      logger().warn({ attempt: attempt + 1, reason, delay_ms: Math.round(delay) }, 'embedding call failed; retrying');
      await sleep(delay, signal);
    }
  }

  function flush(): void {
    timer = undefined;
    const batch = queue.splice(0, options.batchSize);
    if (queue.length) timer = setTimeout(flush, 0);
    call(batch.map((p) => p.text)).then(
      (vectors) => batch.forEach((p, i) => p.resolve(vectors[i]!)),
      (err) => batch.forEach((p) => p.reject(err)),
    );
  }

  return {
    provider: 'openai',
    model: options.model,
    async embed(texts, signal) {
      if (texts.length === 1 && !signal) {
        return [await new Promise<Float32Array>((resolve, reject) => {
          queue.push({ text: texts[0]!, resolve, reject });
          if (queue.length >= options.batchSize) {
            clearTimeout(timer);
            flush();
          } else timer ??= setTimeout(flush, coalesceMs);
        })];
      }
      const out: Float32Array[] = [];
      for (let i = 0; i < texts.length; i += options.batchSize) out.push(...(await call(texts.slice(i, i + options.batchSize), signal)));
      return out;
    },
    async warm() {},
  };
}

function parseEmbeddings(json: unknown, expected: number): Float32Array[] {
  const data = (json as { data?: { index?: number; embedding?: unknown }[] })?.data;
  if (!Array.isArray(data) || data.length !== expected)
    throw new FabricError(502, 'embedding_provider_error', `The embedding provider answered without ${expected} embeddings; is FABRIC_EMBEDDINGS_BASE_URL an OpenAI-compatible /v1 endpoint?`);
  const out = new Array<Float32Array>(expected);
  data.forEach((d, i) => {
    const at = typeof d.index === 'number' ? d.index : i;
    if (!Array.isArray(d.embedding) || d.embedding.length === 0 || at < 0 || at >= expected)
      throw new FabricError(502, 'embedding_provider_error', 'The embedding provider sent an embedding that is not a list of numbers.');
    out[at] = Float32Array.from(d.embedding as number[]);
  });
  return out;
}
