-- Per-agent files (isolation-runtime-prd §3.1). The bytes live in a storage provider (local
-- filesystem or S3-compatible) under storage_key = <tenant>/<agent>/<id>; a row exists only for
-- a file whose bytes were stored completely. size counts against agent_quotas.storage_used_bytes,
-- changed in the same transaction as the row (insert adds, delete subtracts).
CREATE TABLE agent_files (
  id            uuid PRIMARY KEY,
  tenant_id     text NOT NULL,
  agent_id      uuid NOT NULL,
  task_id       uuid REFERENCES tasks (id),
  name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
  size          bigint NOT NULL CHECK (size >= 0),
  sha256        text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
  content_type  text NOT NULL,
  storage_key   text NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  FOREIGN KEY (agent_id, tenant_id) REFERENCES agents (id, tenant_id)
);
-- listing an agent's files newest first, optionally by task
CREATE INDEX agent_files_agent ON agent_files (tenant_id, agent_id, created_at DESC, id DESC);
CREATE INDEX agent_files_task ON agent_files (tenant_id, agent_id, task_id, created_at DESC, id DESC) WHERE task_id IS NOT NULL;
