/**
 * Requests and tokens per minute, per agent and per tenant: token buckets in this process's
 * memory. With several API processes each enforces the limits on its own share of the traffic
 * (so the fleet-wide ceiling is the limit × processes behind the balancer); budgets, which
 * are about money, are the cross-process guarantee and live in the database. A bucket holds
 * one minute's allowance and refills continuously; 0 disables a limit.
 */
export interface RateLimits {
  agentRpm: number;
  agentTpm: number;
  tenantRpm: number;
  tenantTpm: number;
}

class Bucket {
  private level: number;
  private at: number;
  constructor(private readonly perMinute: number, now: number) {
    this.level = perMinute;
    this.at = now;
  }
  private refill(now: number): void {
    this.level = Math.min(this.perMinute, this.level + ((now - this.at) * this.perMinute) / 60_000);
    this.at = now;
  }
  /** Seconds until `n` would fit (0: it fits now). A request larger than a minute's allowance waits for a full bucket. */
  wait(n: number, now: number): number {
    this.refill(now);
    const need = Math.min(n, this.perMinute);
    return this.level >= need ? 0 : ((need - this.level) * 60) / this.perMinute;
  }
  take(n: number): void {
    this.level -= Math.min(n, this.perMinute);
  }
  give(n: number): void {
    this.level = Math.min(this.perMinute, this.level + n);
  }
}

export interface RateDecision {
  /** Seconds to wait before retrying, when refused. */
  retryAfterSeconds: number;
  /** Which limit refused it. */
  limit: 'agent_rpm' | 'agent_tpm' | 'tenant_rpm' | 'tenant_tpm';
}

const MAX_KEYS = 100_000;

export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();
  /** `limits` may be a function of the tenant, read on every call (operator runtime settings change them live). */
  constructor(private readonly limits: RateLimits | ((tenantId: string) => RateLimits), private readonly now: () => number = Date.now) {}

  private bucket(key: string, perMinute: number): Bucket {
    let b = this.buckets.get(key);
    if (!b) {
      if (this.buckets.size >= MAX_KEYS) this.buckets.clear();
      b = new Bucket(perMinute, this.now());
      this.buckets.set(key, b);
    }
    return b;
  }

  private pairs(agentId: string, tenantId: string, tokens: number) {
    const l = typeof this.limits === 'function' ? this.limits(tenantId) : this.limits;
    // the limit is part of the key: a changed limit starts a fresh bucket of the new size
    return [
      ['agent_rpm', `ar:${agentId}:${l.agentRpm}`, l.agentRpm, 1],
      ['agent_tpm', `at:${agentId}:${l.agentTpm}`, l.agentTpm, tokens],
      ['tenant_rpm', `tr:${tenantId}:${l.tenantRpm}`, l.tenantRpm, 1],
      ['tenant_tpm', `tt:${tenantId}:${l.tenantTpm}`, l.tenantTpm, tokens],
    ] as const;
  }

  /** Takes one request and `tokens` from every limit, or none and says how long to wait. */
  admit(agentId: string, tenantId: string, tokens: number): RateDecision | null {
    const now = this.now();
    const active = this.pairs(agentId, tenantId, tokens).filter(([, , perMinute]) => perMinute > 0);
    for (const [limit, key, perMinute, n] of active) {
      const wait = this.bucket(key, perMinute).wait(n, now);
      if (wait > 0) return { limit, retryAfterSeconds: Math.max(1, Math.ceil(wait)) };
    }
    for (const [, key, perMinute, n] of active) this.bucket(key, perMinute).take(n);
    return null;
  }

  /** Gives back tokens taken at admission that the call did not use. */
  refund(agentId: string, tenantId: string, tokens: number): void {
    if (tokens <= 0) return;
    for (const [limit, key, perMinute] of this.pairs(agentId, tenantId, tokens))
      if (perMinute > 0 && limit.endsWith('tpm')) this.buckets.get(key)?.give(tokens);
  }
}
