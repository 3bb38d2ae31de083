-- Metered usage, one row per metered event (isolation-runtime-prd §3.5 FR-16, session-billing
-- usage reports): what was used, by whom, for which task and session, in which unit, and what
-- it cost in integer micro-USD. Rows are only ever inserted; the budget counters and the usage
-- report both derive from them (a reconciliation test checks they agree to the micro-unit).
--   dimension  unit of quantity
--   tokens     tokens (input_tokens + output_tokens)
--   compute    milliseconds of sandbox wall time
--   artifacts  artifact operations (files written by a task)
--   storage    byte-hours of stored files
CREATE TABLE agent_quota_usage (
  id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id       text NOT NULL REFERENCES tenants (id),
  agent_id        uuid,
  workspace_id    uuid,
  user_id         uuid,
  task_id         uuid,
  attempt         integer,
  session_id      uuid,
  dimension       text NOT NULL CHECK (dimension IN ('tokens', 'compute', 'artifacts', 'storage')),
  model           text,
  input_tokens    bigint NOT NULL DEFAULT 0 CHECK (input_tokens >= 0),
  output_tokens   bigint NOT NULL DEFAULT 0 CHECK (output_tokens >= 0),
  quantity        bigint NOT NULL CHECK (quantity >= 0),
  cost_micros     bigint NOT NULL DEFAULT 0 CHECK (cost_micros >= 0),
  -- who pays: the task's user or its organization (tenant), copied from the task
  billing_subject text CHECK (billing_subject IN ('USER', 'ORG')),
  -- the budget period (tenant time zone) the event counts in
  period_start    timestamptz NOT NULL,
  -- a retried report of the same event is stored once
  idempotency_key text,
  created_at      timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, idempotency_key)
);
CREATE INDEX agent_quota_usage_agent ON agent_quota_usage (tenant_id, agent_id, period_start);
CREATE INDEX agent_quota_usage_task ON agent_quota_usage (task_id);
CREATE INDEX agent_quota_usage_period ON agent_quota_usage (tenant_id, period_start, id);

-- Who pays for a task, resolved at submission from its workspace and never changed after.
ALTER TABLE tasks ADD COLUMN billing_subject text CHECK (billing_subject IN ('USER', 'ORG'));
