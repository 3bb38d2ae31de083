import type { Tx } from '../db/index.js';
import { currentContext } from '../telemetry/index.js';

/** One state change, persisted in `system_events`. */
export interface SystemEvent {
  tenantId: string;
  agentId?: string | null;
  /** Dotted name, e.g. `agent.provisioned`. */
  eventType: string;
  subjectType: string;
  subjectId: string;
  data?: Record<string, unknown>;
}

/** Records a state change inside the caller's transaction; returns the event id. */
export async function recordEvent(tx: Tx, event: SystemEvent): Promise<number> {
  const r = await tx.query<{ id: number }>(
    `INSERT INTO system_events (tenant_id, agent_id, event_type, subject_type, subject_id, data, request_id)
     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id`,
    [event.tenantId, event.agentId ?? null, event.eventType, event.subjectType, event.subjectId, JSON.stringify(event.data ?? {}), currentContext().request_id ?? null],
  );
  return r.rows[0]!.id;
}
