import { Histogram } from 'prom-client';
import { registry } from './metrics.js';

/** Bucket bounds of the embed latency histogram; the in-process p99 interpolates within them as Prometheus does. */
export const EMBED_LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 10, 30];

export const memoryEmbedLatency = new Histogram({
  name: 'agent_fabric_memory_embed_latency_seconds',
  help: 'Time semantic memory waited for its embedding provider per call (memory.embed_latency_p99 is histogram_quantile(0.99, …) of this; alert above 0.5 s).',
  buckets: EMBED_LATENCY_BUCKETS,
  registers: [registry],
});

/**
 * The q-quantile of a histogram's observations from its cumulative bucket counts (same order as
 * `bounds`, +Inf last), interpolated linearly inside the bucket as PromQL's histogram_quantile
 * does; observations past the last bound count as that bound. NaN without observations.
 */
export function histogramQuantile(q: number, bounds: readonly number[], cumulative: readonly number[]): number {
  const total = cumulative[cumulative.length - 1] ?? 0;
  if (total <= 0) return Number.NaN;
  const rank = q * total;
  for (let i = 0; i < bounds.length; i++) {
    const below = i === 0 ? 0 : cumulative[i - 1]!;
    if (cumulative[i]! >= rank) {
      const lower = i === 0 ? 0 : bounds[i - 1]!;
      const inBucket = cumulative[i]! - below;
      return inBucket <= 0 ? bounds[i]! : lower + (bounds[i]! - lower) * ((rank - below) / inBucket);
    }
  }
  return bounds[bounds.length - 1]!;
}
