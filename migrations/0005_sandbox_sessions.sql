-- One row per sandbox session (one attempt of a task in a sandbox): what ran, how it ended,
-- what it used, what it left as artifacts, and the evidence that its storage was wiped.
CREATE TABLE agent_sessions (
  id            uuid PRIMARY KEY,
  tenant_id     text NOT NULL,
  agent_id      uuid NOT NULL,
  task_id       uuid NOT NULL REFERENCES tasks (id),
  attempt       integer NOT NULL,
  worker_id     text NOT NULL,
  isolation     text NOT NULL CHECK (isolation IN ('process', 'container')),
  status        text NOT NULL CHECK (status IN ('running', 'completed', 'failed', 'timed_out', 'cancelled', 'killed', 'error')),
  exit_code     integer,
  signal        text,
  error         jsonb,
  usage         jsonb,
  artifacts     jsonb NOT NULL DEFAULT '[]',
  wipe          jsonb,
  started_at    timestamptz NOT NULL DEFAULT now(),
  ended_at      timestamptz,
  FOREIGN KEY (agent_id, tenant_id) REFERENCES agents (id, tenant_id)
);
CREATE INDEX agent_sessions_agent ON agent_sessions (tenant_id, agent_id, started_at DESC, id);
CREATE INDEX agent_sessions_running ON agent_sessions (worker_id) WHERE status = 'running';
