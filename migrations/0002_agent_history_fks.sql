-- Ledger entries and events that name an agent must name one of the same tenant, so the
-- database itself refuses a cross-tenant or dangling reference (agents are soft-deleted,
-- so history keeps its agent row). Tenant-level rows leave agent_id NULL.
ALTER TABLE ledger_entries
  ADD CONSTRAINT ledger_entries_agent_fk FOREIGN KEY (agent_id, tenant_id) REFERENCES agents (id, tenant_id);
ALTER TABLE system_events
  ADD CONSTRAINT system_events_agent_fk FOREIGN KEY (agent_id, tenant_id) REFERENCES agents (id, tenant_id);
