/**
 * One metered thing an attempt used, as it travels from the executor (ctx.reportUsage) or the
 * model gateway (meterUsage) to `agent_quota_usage` (migration 0009). No imports: the queue
 * and the worker carry it without depending on the budget module.
 */
export interface UsageItem {
  dimension: 'tokens' | 'compute' | 'artifacts' | 'storage';
  /** Unit by dimension: tokens, milliseconds of wall time, artifact operations, byte-hours. */
  quantity: number;
  model?: string;
  input_tokens?: number;
  output_tokens?: number;
  /** Integer micro-USD, as a decimal string when it may pass 2^53 (never a float). */
  cost_micros?: number | string;
  session_id?: string;
  /** Unique per tenant: a replayed item is stored and counted once. */
  key: string;
}

/** What an executor reports through `ctx.reportUsage()` (the worker adds keys and compute time). */
export interface UsageReport {
  model?: string;
  input_tokens?: number;
  output_tokens?: number;
  /** Integer micro-USD (1 USD = 1,000,000). */
  cost_micros?: number;
  /** Wall time the work took, in ms (a sandbox reports its session's); otherwise the worker measures the attempt. */
  compute_ms?: number;
  session_id?: string;
}

/** Collects an attempt's usage reports; `items()` turns them into keyed UsageItems. */
export class AttemptUsage {
  private readonly reports: UsageReport[] = [];
  private computeMs: number | undefined;
  private sessionId: string | undefined;

  constructor(
    private readonly taskId: string,
    private readonly attempt: number,
  ) {}

  add(report: UsageReport): void {
    for (const [k, v] of Object.entries(report))
      if (k !== 'model' && k !== 'session_id' && v !== undefined && (!Number.isSafeInteger(v) || (v as number) < 0))
        throw new TypeError(`reportUsage: ${k} must be a non-negative integer, got ${String(v)}`);
    if (report.session_id) this.sessionId = report.session_id;
    if (report.compute_ms !== undefined) this.computeMs = (this.computeMs ?? 0) + report.compute_ms;
    if (report.input_tokens || report.output_tokens || report.cost_micros) this.reports.push(report);
  }

  /** The attempt's items: one per token report, and one compute item (reported, else `measuredMs`). */
  items(measuredMs: number): UsageItem[] {
    const prefix = `task:${this.taskId}:${this.attempt}`;
    const items: UsageItem[] = this.reports.map((r, i) => ({
      dimension: 'tokens',
      quantity: (r.input_tokens ?? 0) + (r.output_tokens ?? 0),
      model: r.model,
      input_tokens: r.input_tokens ?? 0,
      output_tokens: r.output_tokens ?? 0,
      cost_micros: r.cost_micros ?? 0,
      session_id: r.session_id ?? this.sessionId,
      key: `${prefix}:tokens:${i}`,
    }));
    items.push({ dimension: 'compute', quantity: Math.max(0, Math.round(this.computeMs ?? measuredMs)), session_id: this.sessionId, key: `${prefix}:compute` });
    return items;
  }
}
