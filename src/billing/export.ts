import { Readable } from 'node:stream';
import { z } from 'zod';
import type { Queryable } from '../db/index.js';
import { meteredEvents, type MeteredEvent } from './metered.js';
import { billingPeriod, type BillingPeriod } from './period.js';
import type { PlanTerms } from './plans.js';
import { PeriodName } from './report.js';
import { termsForPeriod } from './terms.js';
import { UNITS } from './units.js';

export const ExportFormat = z.enum(['csv', 'jsonl']);
export type ExportFormat = z.infer<typeof ExportFormat>;

export const ExportQuery = z
  .object({
    period: PeriodName.default('current'),
    format: ExportFormat.default('csv'),
    agent_id: z.uuid().optional(),
    user_id: z.uuid().optional(),
  })
  .strict();
export type ExportQuery = z.infer<typeof ExportQuery>;

export const CONTENT_TYPES: Record<ExportFormat, string> = { csv: 'text/csv; charset=utf-8', jsonl: 'application/x-ndjson; charset=utf-8' };

/** The columns of a line item, in order: from the task and session to the charge. */
export const EXPORT_COLUMNS = [
  'id', 'created_at', 'period_start', 'tenant_id', 'billing_subject', 'workspace_id', 'user_id', 'agent_id',
  'task_id', 'attempt', 'session_id', 'dimension', 'unit', 'model', 'input_tokens', 'output_tokens',
  'quantity', 'cost_micros', 'overage_quantity', 'overage_charge_micros', 'idempotency_key',
] as const;

type Line = Record<(typeof EXPORT_COLUMNS)[number], string | number | null>;

/** Integers as JSON numbers (they are exact below 2^53; larger ones are written as strings). */
const int = (v: bigint) => (v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v.toString());

function lineOf(e: MeteredEvent): Line {
  return {
    id: int(BigInt(e.id)),
    created_at: e.created_at.toISOString(),
    period_start: e.period_start.toISOString(),
    tenant_id: e.tenant_id,
    billing_subject: e.billing_subject,
    workspace_id: e.workspace_id,
    user_id: e.user_id,
    agent_id: e.agent_id,
    task_id: e.task_id,
    attempt: e.attempt,
    session_id: e.session_id,
    dimension: e.dimension,
    unit: UNITS[e.dimension].unit,
    model: e.model,
    input_tokens: int(e.input_tokens),
    output_tokens: int(e.output_tokens),
    quantity: int(e.quantity),
    cost_micros: int(e.cost_micros),
    overage_quantity: int(e.overage_quantity),
    overage_charge_micros: int(e.overage_charge_micros),
    idempotency_key: e.idempotency_key,
  };
}

/** RFC 4180: quote a field with a comma, quote or line break; double its quotes. */
function csvField(v: string | number | null): string {
  if (v === null) return '';
  const s = String(v);
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

async function* lines(q: Queryable, tenantId: string, query: ExportQuery, period: BillingPeriod, terms: PlanTerms | null): AsyncGenerator<string> {
  const agentId = query.agent_id?.toLowerCase();
  const userId = query.user_id?.toLowerCase();
  if (query.format === 'csv') yield `${EXPORT_COLUMNS.join(',')}\r\n`;
  for await (const e of meteredEvents(q, tenantId, period, terms)) {
    if ((agentId && e.agent_id !== agentId) || (userId && e.user_id !== userId)) continue;
    const line = lineOf(e);
    yield query.format === 'csv' ? `${EXPORT_COLUMNS.map((c) => csvField(line[c])).join(',')}\r\n` : `${JSON.stringify(line)}\n`;
  }
}

/**
 * The period's metered events as a stream, one line per agent_quota_usage row (CSV with a
 * header, or JSON lines), each with its share of the overage, so an invoice line is traceable
 * to the task, attempt and session that used it. Rows are read a page at a time as the client
 * reads: nothing is held whole in memory.
 */
export async function exportUsage(q: Queryable, tenantId: string, query: ExportQuery, now: Date, defaultPlan: string | undefined): Promise<Readable> {
  // What can fail for the caller's reasons fails here, before the 200 is sent.
  const period = await billingPeriod(q, tenantId, now, query.period === 'current' ? 0 : -1);
  const terms = await termsForPeriod(q, tenantId, period, defaultPlan);
  return Readable.from(lines(q, tenantId, query, period, terms), { objectMode: false });
}
