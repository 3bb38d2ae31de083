import type { Tx } from '../db/index.js';
import { currentContext } from '../telemetry/index.js';

export interface LedgerEntry {
  tenantId: string;
  agentId?: string | null;
  /** What moved: `provision`, `usage`, `adjustment`, … */
  entryType: string;
  tokens?: number;
  /** USD, exact: a decimal string (or a number for amounts a double holds exactly). */
  costUsd?: number | string;
  details?: Record<string, unknown>;
}

/** Appends one immutable ledger row inside the caller's transaction (US-10). */
export async function recordLedgerEntry(tx: Tx, entry: LedgerEntry): Promise<number> {
  const r = await tx.query<{ id: number }>(
    `INSERT INTO ledger_entries (tenant_id, agent_id, entry_type, tokens, cost_usd, details, request_id)
     VALUES ($1, $2, $3, $4, $5::numeric, $6, $7) RETURNING id`,
    [
      entry.tenantId,
      entry.agentId ?? null,
      entry.entryType,
      entry.tokens ?? 0,
      String(entry.costUsd ?? 0),
      JSON.stringify(entry.details ?? {}),
      currentContext().request_id ?? null,
    ],
  );
  return r.rows[0]!.id;
}
