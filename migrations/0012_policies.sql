-- Policies and approvals (issue 8): versioned policies attached to a tenant, workspace, role or
-- agent; the decision log; approval requests.

CREATE TABLE policies (
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id    text NOT NULL REFERENCES tenants(id),
  name         text NOT NULL,
  description  text,
  scope_type   text NOT NULL CHECK (scope_type IN ('tenant', 'workspace', 'role', 'agent')),
  -- workspace id, role name or agent id; NULL for tenant, and for agent policies that agents list in their config
  scope_id     text,
  priority     integer NOT NULL DEFAULT 0,
  rules        jsonb NOT NULL,
  enabled      boolean NOT NULL DEFAULT true,
  -- bumped by every change; decisions record the version that made them
  version      integer NOT NULL DEFAULT 1,
  created_by   text NOT NULL,
  updated_by   text NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now(),
  deleted_at   timestamptz,
  CHECK ((scope_type = 'tenant') = (scope_id IS NULL) OR scope_type = 'agent')
);
CREATE UNIQUE INDEX policies_live_name ON policies (tenant_id, name) WHERE deleted_at IS NULL;
CREATE INDEX policies_tenant ON policies (tenant_id) WHERE deleted_at IS NULL;

-- Every decision, allows included (FR-POL-5). Written in batches off the request path.
CREATE TABLE policy_decisions (
  id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id       text NOT NULL,
  decided_at      timestamptz NOT NULL,
  door            text NOT NULL,
  agent_id        uuid,
  task_id         uuid,
  actor_sub       text,
  actor_role      text,
  action          text NOT NULL,
  resource        text NOT NULL,
  context         jsonb NOT NULL,
  decision        text NOT NULL CHECK (decision IN ('allow', 'deny', 'require_approval')),
  policy_id       uuid,
  policy_version  integer,
  rule_index      integer,
  scope_level     text,
  reason          text NOT NULL,
  latency_us      integer NOT NULL,
  approval_id     uuid
);
CREATE INDEX policy_decisions_tenant ON policy_decisions (tenant_id, decided_at DESC, id DESC);
CREATE INDEX policy_decisions_agent ON policy_decisions (tenant_id, agent_id, decided_at DESC, id DESC);

CREATE TABLE approvals (
  id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id       text NOT NULL REFERENCES tenants(id),
  status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'rejected', 'expired')),
  action          text NOT NULL,
  resource        text NOT NULL,
  context         jsonb NOT NULL,
  -- the same request again (agent, action, resource, context) finds this one
  request_key     text NOT NULL,
  agent_id        uuid,
  task_id         uuid,
  requested_by    text NOT NULL,
  policy_id       uuid,
  policy_version  integer,
  rule_index      integer,
  reason          text NOT NULL,
  approvers       jsonb NOT NULL,
  expires_at      timestamptz NOT NULL,
  created_at      timestamptz NOT NULL DEFAULT now(),
  decided_at      timestamptz,
  decided_by      text,
  decided_role    text,
  comment         text,
  -- an approved request lets the same action through once (a check that finds it uses it)
  used_at         timestamptz
);
CREATE UNIQUE INDEX approvals_one_pending ON approvals (tenant_id, request_key) WHERE status = 'pending';
CREATE INDEX approvals_tenant_status ON approvals (tenant_id, status, created_at DESC);
CREATE INDEX approvals_key ON approvals (tenant_id, request_key, status);
