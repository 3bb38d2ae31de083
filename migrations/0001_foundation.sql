-- Foundation: tenancy, agents, quotas, ledger, events, idempotency, audit.
-- Shipped migrations are append-only: change the schema in a new numbered file.

CREATE TABLE tenants (
  id          text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
  name        text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  deleted_at  timestamptz
);

CREATE TABLE workspaces (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id   text NOT NULL REFERENCES tenants(id),
  name        text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, name),
  -- lets children reference (workspace, tenant) so a row can never point across tenants
  UNIQUE (id, tenant_id)
);

CREATE TABLE users (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id   text NOT NULL REFERENCES tenants(id),
  email       text NOT NULL,
  name        text,
  role        text NOT NULL CHECK (role IN ('admin', 'operator', 'member', 'viewer')),
  created_at  timestamptz NOT NULL DEFAULT now(),
  deleted_at  timestamptz,
  UNIQUE (tenant_id, email),
  UNIQUE (id, tenant_id)
);

CREATE TABLE agents (
  id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id        text NOT NULL REFERENCES tenants(id),
  workspace_id     uuid NOT NULL,
  owner_user_id    uuid,
  name             text NOT NULL,
  description      text,
  -- AgentConfig of agent-fabric.md: model, tools, isolation, budget, policies
  config           jsonb NOT NULL,
  -- what the agent runs; the execution issue defines how it is used
  entrypoint       jsonb,
  max_queue_depth  integer NOT NULL DEFAULT 100 CHECK (max_queue_depth > 0),
  max_concurrency  integer NOT NULL DEFAULT 1 CHECK (max_concurrency > 0),
  status           text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'paused', 'deleted')),
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now(),
  deleted_at       timestamptz,
  FOREIGN KEY (workspace_id, tenant_id) REFERENCES workspaces(id, tenant_id),
  FOREIGN KEY (owner_user_id, tenant_id) REFERENCES users(id, tenant_id),
  UNIQUE (id, tenant_id)
);
CREATE UNIQUE INDEX agents_live_name ON agents (tenant_id, name) WHERE deleted_at IS NULL;
CREATE INDEX agents_tenant_created ON agents (tenant_id, created_at, id);

CREATE TABLE agent_quotas (
  agent_id                uuid PRIMARY KEY,
  tenant_id               text NOT NULL,
  monthly_token_limit     bigint NOT NULL CHECK (monthly_token_limit >= 0),
  monthly_tokens_used     bigint NOT NULL DEFAULT 0 CHECK (monthly_tokens_used >= 0),
  monthly_cost_limit_usd  numeric(14, 6) NOT NULL CHECK (monthly_cost_limit_usd >= 0),
  monthly_cost_used_usd   numeric(14, 6) NOT NULL DEFAULT 0 CHECK (monthly_cost_used_usd >= 0),
  storage_limit_bytes     bigint NOT NULL CHECK (storage_limit_bytes >= 0),
  storage_used_bytes      bigint NOT NULL DEFAULT 0 CHECK (storage_used_bytes >= 0),
  overage_policy          text NOT NULL DEFAULT 'block' CHECK (overage_policy IN ('block', 'alert_only', 'allow')),
  alert_threshold_pct     numeric(5, 2) NOT NULL DEFAULT 80 CHECK (alert_threshold_pct BETWEEN 0 AND 100),
  period_start            timestamptz NOT NULL DEFAULT date_trunc('month', now()),
  created_at              timestamptz NOT NULL DEFAULT now(),
  updated_at              timestamptz NOT NULL DEFAULT now(),
  FOREIGN KEY (agent_id, tenant_id) REFERENCES agents(id, tenant_id)
);

-- Every unit of value that moves (provisioning, usage, adjustments) is one immutable row.
CREATE TABLE ledger_entries (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id   text NOT NULL REFERENCES tenants(id),
  agent_id    uuid,
  entry_type  text NOT NULL,
  tokens      bigint NOT NULL DEFAULT 0,
  cost_usd    numeric(14, 6) NOT NULL DEFAULT 0,
  details     jsonb NOT NULL DEFAULT '{}',
  request_id  text,
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ledger_entries_agent ON ledger_entries (tenant_id, agent_id, created_at);

-- State changes of agents, tasks, sessions, quotas and policies.
CREATE TABLE system_events (
  id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id     text NOT NULL REFERENCES tenants(id),
  agent_id      uuid,
  event_type    text NOT NULL,
  subject_type  text NOT NULL,
  subject_id    text NOT NULL,
  data          jsonb NOT NULL DEFAULT '{}',
  request_id    text,
  created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX system_events_subject ON system_events (tenant_id, subject_type, subject_id, id);

-- First response of a create, replayed for 24 h per (tenant, key).
CREATE TABLE idempotency_keys (
  tenant_id     text NOT NULL,
  key           text NOT NULL,
  request_hash  text NOT NULL,
  method        text NOT NULL,
  path          text NOT NULL,
  status_code   integer NOT NULL,
  response      jsonb NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  expires_at    timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);

-- Administrative and security events (the audit issue adds the hash chain).
CREATE TABLE audit_log (
  id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id    text,
  actor_sub    text NOT NULL,
  actor_role   text NOT NULL,
  action       text NOT NULL,
  target_type  text NOT NULL,
  target_id    text NOT NULL,
  before       jsonb,
  after        jsonb,
  request_id   text,
  created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_tenant ON audit_log (tenant_id, created_at);
