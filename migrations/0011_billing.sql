-- Plans, subscriptions and billing (issue 6; session-billing.md, managed-execution-prd §5.2,
-- §8.1, §8.7). Money is integer micro-USD (bigint); quantities are in the usage ledger's units
-- (agent_quota_usage, migration 0009). Plan terms per dimension are jsonb validated by the
-- application (src/billing/plans.ts): {"included": n | null (unlimited), "overage_rate_micros": n}
-- with the units of src/billing/units.ts.

CREATE TABLE billing_plans (
  id               text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
  name             text NOT NULL,
  description      text,
  -- the monthly subscription fee
  base_fee_micros  bigint NOT NULL CHECK (base_fee_micros >= 0),
  -- {"tokens": {...}, "compute": {...}, "artifacts": {...}, "storage": {...}}
  dimensions       jsonb NOT NULL,
  -- {"remote_execution": bool, "max_concurrency": n | null, <other feature flags>: bool}
  entitlements     jsonb NOT NULL,
  -- false: only a platform_admin may put a tenant on it (e.g. Enterprise, sold by contract)
  self_service     boolean NOT NULL DEFAULT true,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now()
);

-- One subscription per tenant; a cancelled one can be reactivated with a new plan.
CREATE TABLE subscriptions (
  tenant_id     text PRIMARY KEY REFERENCES tenants (id),
  id            uuid NOT NULL DEFAULT gen_random_uuid() UNIQUE,
  plan_id       text NOT NULL REFERENCES billing_plans (id),
  status        text NOT NULL CHECK (status IN ('active', 'suspended', 'cancelled')),
  started_at    timestamptz NOT NULL,
  suspended_at  timestamptz,
  cancelled_at  timestamptz,
  -- a cancelled subscription accepts new tasks until this instant: the end of the billing
  -- period it was cancelled in
  ends_at       timestamptz,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now(),
  CHECK ((status = 'cancelled') = (ends_at IS NOT NULL))
);
CREATE INDEX subscriptions_plan ON subscriptions (plan_id) WHERE status <> 'cancelled';

-- The terms each tenant's periods are priced with, snapshotted: one row per subscribe, plan
-- change, and plan update (effective from the next period). A period is priced with the
-- latest row effective before its end, so a later change of a plan never reprices the past.
CREATE TABLE subscription_plan_history (
  id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id     text NOT NULL REFERENCES tenants (id),
  plan_id       text NOT NULL REFERENCES billing_plans (id),
  -- {"name", "base_fee_micros", "dimensions", "entitlements"} as they were
  terms         jsonb NOT NULL,
  effective_at  timestamptz NOT NULL,
  reason        text NOT NULL CHECK (reason IN ('subscribe', 'change_plan', 'plan_updated')),
  created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX subscription_plan_history_tenant ON subscription_plan_history (tenant_id, effective_at, id);

-- Overage started: one row per tenant, billing period and dimension, so the subscriber is told
-- once. notified_at is set by whoever sends the notification (claimed before sending).
CREATE TABLE billing_overage_notices (
  tenant_id     text NOT NULL REFERENCES tenants (id),
  period_start  timestamptz NOT NULL,
  dimension     text NOT NULL CHECK (dimension IN ('tokens', 'compute', 'artifacts', 'storage')),
  plan_id       text NOT NULL,
  included      bigint NOT NULL,
  consumed      bigint NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  notified_at   timestamptz,
  PRIMARY KEY (tenant_id, period_start, dimension)
);
CREATE INDEX billing_overage_notices_unsent ON billing_overage_notices (created_at) WHERE notified_at IS NULL;

-- Who pays for the tasks of a workspace: the organization (tenant) or the user (a personal
-- workspace), managed-execution-prd V2-FR-BIL-007.
ALTER TABLE workspaces ADD COLUMN billing_subject text NOT NULL DEFAULT 'ORG' CHECK (billing_subject IN ('USER', 'ORG'));

-- A task's billing subject is its workspace's at submission, set as the row is written...
CREATE FUNCTION fabric_task_billing_subject() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.billing_subject IS NULL THEN
    SELECT w.billing_subject INTO NEW.billing_subject
      FROM agents a JOIN workspaces w ON w.id = a.workspace_id AND w.tenant_id = a.tenant_id
     WHERE a.id = NEW.agent_id;
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER tasks_billing_subject BEFORE INSERT ON tasks
  FOR EACH ROW EXECUTE FUNCTION fabric_task_billing_subject();

-- ...tasks from before this migration ran in workspaces that were all ORG...
UPDATE tasks SET billing_subject = 'ORG' WHERE billing_subject IS NULL;

-- ...and never changes afterwards (SQLSTATE FA409, raised by the database, whoever writes).
CREATE FUNCTION fabric_task_billing_subject_fixed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION USING ERRCODE = 'FA409', MESSAGE = 'billing_subject_immutable',
    DETAIL = json_build_object('task_id', OLD.id, 'billing_subject', OLD.billing_subject)::text;
END $$;
CREATE TRIGGER tasks_billing_subject_fixed BEFORE UPDATE OF billing_subject ON tasks
  FOR EACH ROW WHEN (OLD.billing_subject IS DISTINCT FROM NEW.billing_subject)
  EXECUTE FUNCTION fabric_task_billing_subject_fixed();

-- The example plan set: the tiers of managed-execution-prd §5.2. Units: tokens included in
-- tokens, rate per 1,000 tokens; compute included in sandbox seconds, rate per second;
-- artifacts in operations; storage in GiB-hours (730 ≈ 1 GiB for a month). Rates in micro-USD.
INSERT INTO billing_plans (id, name, description, base_fee_micros, dimensions, entitlements, self_service) VALUES
  ('free', 'Free', 'Local execution only (no server sandboxes); small monthly allowance.', 0,
   '{"tokens": {"included": 100000, "overage_rate_micros": 2000},
     "compute": {"included": 0, "overage_rate_micros": 100},
     "artifacts": {"included": 90, "overage_rate_micros": 100000},
     "storage": {"included": 730, "overage_rate_micros": 200}}',
   '{"remote_execution": false, "max_concurrency": 1}', true),
  ('plus', 'Plus', 'Local execution only (no server sandboxes); higher allowance.', 20000000,
   '{"tokens": {"included": 1000000, "overage_rate_micros": 2000},
     "compute": {"included": 0, "overage_rate_micros": 100},
     "artifacts": {"included": 300, "overage_rate_micros": 80000},
     "storage": {"included": 7300, "overage_rate_micros": 200}}',
   '{"remote_execution": false, "max_concurrency": 2}', true),
  ('pro', 'Pro', 'Server sandbox execution (process and container isolation).', 50000000,
   '{"tokens": {"included": 5000000, "overage_rate_micros": 1500},
     "compute": {"included": 180000, "overage_rate_micros": 80},
     "artifacts": {"included": 1000, "overage_rate_micros": 50000},
     "storage": {"included": 36500, "overage_rate_micros": 150}}',
   '{"remote_execution": true, "max_concurrency": 4}', true),
  ('max', 'Max', 'Server sandbox execution with a larger allowance.', 200000000,
   '{"tokens": {"included": 20000000, "overage_rate_micros": 1200},
     "compute": {"included": 792000, "overage_rate_micros": 60},
     "artifacts": {"included": 5000, "overage_rate_micros": 40000},
     "storage": {"included": 73000, "overage_rate_micros": 120}}',
   '{"remote_execution": true, "max_concurrency": 8}', true),
  ('enterprise', 'Enterprise', 'Unlimited execution, highest concurrency; assigned by a platform admin.', 2000000000,
   '{"tokens": {"included": null, "overage_rate_micros": 0},
     "compute": {"included": null, "overage_rate_micros": 0},
     "artifacts": {"included": null, "overage_rate_micros": 0},
     "storage": {"included": null, "overage_rate_micros": 0}}',
   '{"remote_execution": true, "max_concurrency": null}', false);
