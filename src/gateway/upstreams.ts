import type { GatewayUpstream } from '../config/index.js';
import type { ModelPrice } from './pricing.js';

/** Where a model is served and what it costs. */
export interface ModelRoute {
  model: string;
  upstream: GatewayUpstream;
  price: ModelPrice;
}

/** The configured upstreams by model: the first upstream listing a model serves it. */
export class ModelCatalog {
  private readonly routes = new Map<string, ModelRoute>();
  constructor(readonly upstreams: readonly GatewayUpstream[]) {
    for (const upstream of upstreams)
      for (const [model, price] of Object.entries(upstream.models)) if (!this.routes.has(model)) this.routes.set(model, { model, upstream, price });
  }
  route(model: string): ModelRoute | undefined {
    return this.routes.get(model);
  }
  all(): ModelRoute[] {
    return [...this.routes.values()];
  }
  /** Every provider key, to scrub from anything passed back or logged. */
  secrets(): string[] {
    return this.upstreams.map((u) => u.apiKey).filter((k): k is string => !!k && k.length >= 4);
  }
}

/** Replaces every provider key in `text` (an upstream's error message may echo it). */
export function scrub(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const s of secrets) out = out.split(s).join('[redacted]');
  return out;
}
