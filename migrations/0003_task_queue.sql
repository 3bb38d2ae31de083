-- The durable task queue: tasks, their dependencies and attempts, and per-agent claim state.

CREATE TABLE tasks (
  id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id             text NOT NULL,
  agent_id              uuid NOT NULL,
  type                  text NOT NULL,
  payload               jsonb NOT NULL DEFAULT '{}',
  metadata              jsonb NOT NULL DEFAULT '{}',
  -- 0 critical, 1 high, 2 normal, 3 low
  priority              smallint NOT NULL CHECK (priority BETWEEN 0 AND 3),
  status                text NOT NULL CHECK (status IN ('queued', 'waiting', 'running', 'completed', 'failed', 'cancelled', 'timed_out', 'dead_lettered')),
  revision              integer NOT NULL DEFAULT 1,
  run_at                timestamptz NOT NULL DEFAULT now(),
  -- claim order within an agent: when it became ready plus a per-priority offset, so a
  -- lower priority waits behind newer higher ones only for a bounded time (aging)
  sort_key              timestamptz,
  ready_at              timestamptz,
  timeout_seconds       integer NOT NULL CHECK (timeout_seconds > 0),
  retry_on_timeout      boolean NOT NULL DEFAULT false,
  max_retries           integer NOT NULL CHECK (max_retries >= 0),
  -- attempts made before the last manual re-drive: retries are counted from here
  attempts_base         integer NOT NULL DEFAULT 0,
  attempts              integer NOT NULL DEFAULT 0,
  estimated_tokens      bigint,
  pending_dependencies  integer NOT NULL DEFAULT 0,
  lease_owner           text,
  lease_expires_at      timestamptz,
  cancel_requested      boolean NOT NULL DEFAULT false,
  result                jsonb,
  error                 jsonb,
  created_by            text NOT NULL,
  created_at            timestamptz NOT NULL DEFAULT now(),
  updated_at            timestamptz NOT NULL DEFAULT now(),
  started_at            timestamptz,
  finished_at           timestamptz,
  FOREIGN KEY (agent_id, tenant_id) REFERENCES agents (id, tenant_id),
  UNIQUE (id, tenant_id)
);
-- what claimers read: ready tasks of an agent in claim order
CREATE INDEX tasks_ready ON tasks (agent_id, sort_key, id) WHERE status = 'queued';
-- depth and running counts per agent (both bounded by the agent's limits)
CREATE INDEX tasks_agent_status ON tasks (agent_id, status);
CREATE INDEX tasks_leases ON tasks (lease_expires_at) WHERE status = 'running';
CREATE INDEX tasks_due ON tasks (run_at) WHERE status = 'waiting' AND pending_dependencies = 0;
CREATE INDEX tasks_tenant_created ON tasks (tenant_id, created_at, id);

CREATE TABLE task_dependencies (
  task_id     uuid NOT NULL REFERENCES tasks (id),
  depends_on  uuid NOT NULL REFERENCES tasks (id),
  PRIMARY KEY (task_id, depends_on)
);
CREATE INDEX task_dependencies_upstream ON task_dependencies (depends_on);

CREATE TABLE task_attempts (
  task_id      uuid NOT NULL REFERENCES tasks (id),
  attempt      integer NOT NULL,
  worker_id    text NOT NULL,
  started_at   timestamptz NOT NULL DEFAULT now(),
  finished_at  timestamptz,
  outcome      text CHECK (outcome IN ('completed', 'failed', 'timed_out', 'cancelled', 'lease_lost')),
  error        jsonb,
  PRIMARY KEY (task_id, attempt)
);

-- One row per agent that ever had a task: claimers lock it (SKIP LOCKED) so only one
-- worker at a time claims for an agent, which keeps max_concurrency exact; last_claimed_at
-- drives round-robin fairness across agents.
CREATE TABLE agent_queue_state (
  agent_id         uuid PRIMARY KEY REFERENCES agents (id),
  last_claimed_at  timestamptz NOT NULL DEFAULT '-infinity'
);

-- Event streams read a tenant's (or an agent's) events after an id.
CREATE INDEX system_events_tenant_id ON system_events (tenant_id, id);
CREATE INDEX system_events_tenant_agent_id ON system_events (tenant_id, agent_id, id);
