import type { Tx } from '../db/index.js';
import { currentContext } from '../telemetry/index.js';
import type { SystemEvent } from './types.js';

/** NOTIFY channel announcing every new system event (delivered at commit). */
export const EVENTS_CHANNEL = 'fabric_events';

/** What the NOTIFY payload carries: enough to filter without reading the row. */
export interface EventNotice {
  id: number;
  tenant_id: string;
  agent_id: string | null;
  subject_type: string;
  subject_id: string;
}

export type { SystemEvent } from './types.js';

/** Records a state change inside the caller's transaction and announces it at commit; returns the event id. */
export async function recordEvent(tx: Tx, event: SystemEvent): Promise<number> {
  const r = await tx.query<{ id: number }>(
    `WITH e AS (
       INSERT INTO system_events (tenant_id, agent_id, event_type, subject_type, subject_id, data, request_id)
       VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id, tenant_id, agent_id, subject_type, subject_id)
     SELECT e.id, pg_notify('${EVENTS_CHANNEL}', json_build_object('id', e.id, 'tenant_id', e.tenant_id, 'agent_id', e.agent_id,
       'subject_type', e.subject_type, 'subject_id', e.subject_id)::text) FROM e`,
    [event.tenantId, event.agentId ?? null, event.eventType, event.subjectType, event.subjectId, JSON.stringify(event.data ?? {}), currentContext().request_id ?? null],
  );
  return r.rows[0]!.id;
}
export { recordEvents } from './batch.js';
export { formatEventFrame, type EventFilter } from './client.js';
export { createEventHub, EventHub, type EventHubOptions } from './stream.js';
export type { StreamedEvent } from './horizon.js';
