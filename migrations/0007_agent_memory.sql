-- Key-value memory of each agent (isolation-runtime-prd §3.2, FR-04, FR-06): a JSON value per
-- key, optionally expiring. Keys sort bytewise (COLLATE "C") so a prefix listing is one index
-- range. Expired rows are never returned (reads check expires_at) and a sweeper deletes them.
CREATE TABLE agent_memory_kv (
  tenant_id   text NOT NULL,
  agent_id    uuid NOT NULL,
  key         text COLLATE "C" NOT NULL CHECK (octet_length(key) BETWEEN 1 AND 512),
  value       jsonb NOT NULL,
  expires_at  timestamptz,
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (agent_id, key),
  FOREIGN KEY (agent_id, tenant_id) REFERENCES agents (id, tenant_id)
);
CREATE INDEX agent_memory_kv_expiry ON agent_memory_kv (expires_at) WHERE expires_at IS NOT NULL;
