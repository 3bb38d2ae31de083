/** One state change, persisted in `system_events`. */
export interface SystemEvent {
  tenantId: string;
  agentId?: string | null;
  /** Dotted name, e.g. `agent.provisioned`, `task.completed`. */
  eventType: string;
  subjectType: string;
  subjectId: string;
  data?: Record<string, unknown>;
}

