import type { EmbeddingProvider } from '../../src/embeddings/index.js';
import type { TestApp } from './app.js';
import { multipartBody } from './multipart.js';

/** The /metrics text of a test app. */
export async function scrape(t: TestApp): Promise<string> {
  const res = await t.app.inject({ method: 'GET', url: '/metrics' });
  if (res.statusCode !== 200) throw new Error(`/metrics answered ${res.statusCode}`);
  return res.body;
}

/**
 * The value of one series in Prometheus text: `name` with exactly these labels (any order), or
 * undefined when the series is absent.
 */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  const want = Object.entries(labels)
    .map(([k, v]) => `${k}="${v}"`)
    .sort()
    .join(',');
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const got = (m[2] ?? '').match(/[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"/g) ?? [];
    if (got.sort().join(',') === want) return Number(m[3]);
  }
  return undefined;
}

/** Every label set of a metric, as objects. */
export function metricSeries(text: string, name: string): Record<string, string>[] {
  const out: Record<string, string>[] = [];
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} \S+$/.exec(line);
    if (!m || m[1] !== name) continue;
    out.push(Object.fromEntries([...m[2]!.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1]!, x[2]!])));
  }
  return out;
}

/** An embedding provider that takes `delayMs` per call (changeable) and returns a fixed 3-d vector. */
export function slowEmbeddings(delayMs = 0): EmbeddingProvider & { delayMs: number } {
  const p = {
    provider: 'test',
    model: 'slow',
    delayMs,
    async embed(texts: string[]) {
      await new Promise((r) => setTimeout(r, p.delayMs));
      return texts.map((_, i) => new Float32Array([1, i, 0]));
    },
    async warm() {},
  };
  return p;
}

/** Uploads `size` bytes as a file of `agentId` (as admin); returns the response. */
export async function uploadFile(t: TestApp, agentId: string, size: number, name = 'blob.bin') {
  const body = multipartBody([['name', name]], { filename: name, contentType: 'application/octet-stream', size });
  return t.app.inject({ method: 'POST', url: `/api/agents/${agentId}/files`, headers: { ...(await t.auth('admin')), ...body.headers }, payload: body.payload });
}
