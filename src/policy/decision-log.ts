import type { Queryable } from '../db/index.js';
import { badRequest } from '../errors/index.js';
import { logger } from '../telemetry/index.js';
import { policyDecisionLogDropped } from './metrics.js';
import type { Decision } from './schemas.js';

/** Which door asked: the check API, task submission, the egress proxy or the model gateway. */
export type Door = 'api' | 'task.submit' | 'egress' | 'gateway';

/** One row of policy_decisions. */
export interface DecisionEntry {
  tenantId: string;
  at: Date;
  door: Door;
  agentId: string | null;
  taskId: string | null;
  actorSub: string | null;
  actorRole: string | null;
  action: string;
  resource: string;
  context: Record<string, unknown>;
  decision: Decision;
  policyId: string | null;
  policyVersion: number | null;
  ruleIndex: number | null;
  scopeLevel: string | null;
  reason: string;
  latencyUs: number;
  approvalId: string | null;
}

export interface DecisionLogOptions {
  /** Longest a decision waits in memory before its batch is written. Default 200 ms. */
  flushMs?: number;
  /** A batch is written at once when it reaches this many. Default 500. */
  batchSize?: number;
  /** Decisions held at most while the database is slow; beyond, the oldest are dropped and counted. Default 50 000. */
  maxBuffered?: number;
}

/**
 * The decision log (FR-POL-5): every decision is pushed here synchronously (no I/O on the
 * check's path) and written in batches — one INSERT per batch, every `flushMs` or `batchSize`
 * rows. A crash loses at most the last `flushMs` of decisions; a database that refuses a batch
 * twice loses it, counted in agent_fabric_policy_decision_log_dropped_total and logged.
 */
export class DecisionLog {
  private buffer: DecisionEntry[] = [];
  private timer: NodeJS.Timeout | undefined;
  private writing: Promise<void> = Promise.resolve();
  private readonly flushMs: number;
  private readonly batchSize: number;
  private readonly maxBuffered: number;

  constructor(
    private readonly db: Queryable,
    o: DecisionLogOptions = {},
  ) {
    this.flushMs = o.flushMs ?? 200;
    this.batchSize = o.batchSize ?? 500;
    this.maxBuffered = o.maxBuffered ?? 50_000;
  }

  push(e: DecisionEntry): void {
    this.buffer.push(e);
    if (this.buffer.length > this.maxBuffered) {
      const over = this.buffer.length - this.maxBuffered;
      this.buffer.splice(0, over);
      policyDecisionLogDropped.inc(over);
    }
    if (this.buffer.length >= this.batchSize) void this.flush();
    else if (!this.timer) {
      this.timer = setTimeout(() => void this.flush(), this.flushMs);
      this.timer.unref();
    }
  }

  /** Writes everything pushed so far; resolves when it is in the database (or given up on). */
  flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const batch = this.buffer;
    this.buffer = [];
    this.writing = this.writing.then(() => (batch.length ? this.write(batch) : undefined));
    return this.writing;
  }

  private async write(batch: DecisionEntry[]): Promise<void> {
    for (let start = 0; start < batch.length; start += this.batchSize) {
      const rows = batch.slice(start, start + this.batchSize).map((e) => ({
        tenant_id: e.tenantId,
        decided_at: e.at.toISOString(),
        door: e.door,
        agent_id: e.agentId,
        task_id: e.taskId,
        actor_sub: e.actorSub,
        actor_role: e.actorRole,
        action: e.action,
        resource: e.resource,
        context: e.context,
        decision: e.decision,
        policy_id: e.policyId,
        policy_version: e.policyVersion,
        rule_index: e.ruleIndex,
        scope_level: e.scopeLevel,
        reason: e.reason,
        latency_us: e.latencyUs,
        approval_id: e.approvalId,
      }));
      const sql = `INSERT INTO policy_decisions (tenant_id, decided_at, door, agent_id, task_id, actor_sub, actor_role, action, resource, context, decision,
                     policy_id, policy_version, rule_index, scope_level, reason, latency_us, approval_id)
                   SELECT tenant_id, decided_at, door, agent_id, task_id, actor_sub, actor_role, action, resource, coalesce(context, '{}'), decision,
                     policy_id, policy_version, rule_index, scope_level, reason, latency_us, approval_id
                     FROM jsonb_to_recordset($1::jsonb) AS x(tenant_id text, decided_at timestamptz, door text, agent_id uuid, task_id uuid, actor_sub text,
                       actor_role text, action text, resource text, context jsonb, decision text, policy_id uuid, policy_version int, rule_index int,
                       scope_level text, reason text, latency_us int, approval_id uuid)`;
      const json = JSON.stringify(rows);
      try {
        await this.db.query(sql, [json]).catch(() => this.db.query(sql, [json]));
      } catch (err) {
        policyDecisionLogDropped.inc(rows.length);
        logger().error({ err, decisions: rows.length }, 'policy decisions could not be written to the decision log');
      }
    }
  }

  async close(): Promise<void> {
    await this.flush();
  }
}

export interface DecisionRow {
  id: string;
  decided_at: string;
  door: Door;
  agent_id: string | null;
  task_id: string | null;
  actor_sub: string | null;
  actor_role: string | null;
  action: string;
  resource: string;
  context: Record<string, unknown>;
  decision: Decision;
  policy_id: string | null;
  policy_version: number | null;
  rule: number | null;
  scope_level: string | null;
  reason: string;
  latency_ms: number;
  approval_id: string | null;
}

export interface DecisionQuery {
  agentId?: string | undefined;
  decision?: Decision | undefined;
  action?: string | undefined;
  since?: string | undefined;
  /** Keyset: rows older than this id. */
  before?: string | undefined;
  limit: number;
}

/** Newest first, keyset-paged by id. */
export async function queryDecisions(q: Queryable, tenantId: string, f: DecisionQuery): Promise<{ decisions: DecisionRow[]; next_cursor: string | null }> {
  if (f.since !== undefined && Number.isNaN(Date.parse(f.since))) throw badRequest('invalid_input', `since "${f.since}" is not a time; use ISO 8601, e.g. 2026-03-01T00:00:00Z.`);
  if (f.before !== undefined && !/^\d{1,19}$/.test(f.before)) throw badRequest('invalid_cursor', 'cursor is not one this API returned; start again without it.');
  const r = await q.query<Omit<DecisionRow, 'decided_at' | 'latency_ms' | 'rule' | 'id'> & { id: string | number; decided_at: Date; latency_us: number; rule_index: number | null }>(
    `SELECT * FROM policy_decisions
      WHERE tenant_id = $1 AND ($2::uuid IS NULL OR agent_id = $2) AND ($3::text IS NULL OR decision = $3) AND ($4::text IS NULL OR action = $4)
        AND ($5::timestamptz IS NULL OR decided_at >= $5) AND ($6::bigint IS NULL OR id < $6)
      ORDER BY id DESC LIMIT $7`,
    [tenantId, f.agentId ?? null, f.decision ?? null, f.action ?? null, f.since ?? null, f.before ?? null, f.limit + 1],
  );
  const rows = r.rows.slice(0, f.limit).map(({ latency_us, rule_index, ...row }) => ({ ...row, id: String(row.id), decided_at: row.decided_at.toISOString(), rule: rule_index, latency_ms: latency_us / 1000 }));
  return { decisions: rows, next_cursor: r.rows.length > f.limit ? rows.at(-1)!.id : null };
}
