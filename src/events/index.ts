import type { Tx } from '../db/index.js';
import { currentContext } from '../telemetry/index.js';
import { EVENTS_CHANNEL } from './channel.js';
import type { SystemEvent } from './types.js';

export { EVENTS_CHANNEL } from './channel.js';
export type { SystemEvent } from './types.js';

/** Records a state change inside the caller's transaction and announces it at commit; returns the event id. */
export async function recordEvent(tx: Tx, event: SystemEvent): Promise<number> {
  const r = await tx.query<{ id: number }>(
    `INSERT INTO system_events (tenant_id, agent_id, event_type, subject_type, subject_id, data, request_id)
     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id`,
    [event.tenantId, event.agentId ?? null, event.eventType, event.subjectType, event.subjectId, JSON.stringify(event.data ?? {}), currentContext().request_id ?? null],
  );
  tx.notifyAfterCommit(EVENTS_CHANNEL);
  return r.rows[0]!.id;
}
export { recordEvents } from './batch.js';
export { formatEventFrame, type EventFilter } from './client.js';
export { createEventHub, EventHub, type EventHubOptions } from './stream.js';
export type { StreamedEvent } from './horizon.js';
