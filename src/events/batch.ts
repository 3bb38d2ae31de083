import type { Tx } from '../db/index.js';
import { currentContext } from '../telemetry/index.js';
import { EVENTS_CHANNEL } from './channel.js';
import type { SystemEvent } from './types.js';

/** Records many state changes in one statement (batch submits); each is announced at commit. */
export async function recordEvents(tx: Tx, events: readonly SystemEvent[]): Promise<void> {
  if (events.length === 0) return;
  const rows = events.map((e) => ({
    tenant_id: e.tenantId,
    agent_id: e.agentId ?? null,
    event_type: e.eventType,
    subject_type: e.subjectType,
    subject_id: e.subjectId,
    data: e.data ?? {},
  }));
  await tx.query(
    `INSERT INTO system_events (tenant_id, agent_id, event_type, subject_type, subject_id, data, request_id)
     SELECT r.tenant_id, r.agent_id, r.event_type, r.subject_type, r.subject_id, r.data, $2
       FROM jsonb_to_recordset($1::jsonb) AS r(tenant_id text, agent_id uuid, event_type text, subject_type text, subject_id text, data jsonb)`,
    [JSON.stringify(rows), currentContext().request_id ?? null],
  );
  tx.notifyAfterCommit(EVENTS_CHANNEL);
}
