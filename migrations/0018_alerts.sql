-- Alert rules evaluated in-process (README "Alert rules"): one row per firing of a rule for a
-- subject (an agent, a tenant, or the fleet). `held` marks the row that stands for the rule and
-- subject right now (firing, or resolved by hand while its condition still holds); the unique
-- index over held rows is what makes several evaluating processes fire once.
CREATE TABLE alerts (
  id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  -- NULL: a fleet-wide alert (rollback rate, error rate, embed latency), seen by platform_admin
  tenant_id     text REFERENCES tenants (id),
  rule          text NOT NULL,
  subject       text NOT NULL,
  agent_id      uuid,
  severity      text NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
  state         text NOT NULL CHECK (state IN ('firing', 'resolved')),
  held          boolean NOT NULL DEFAULT true,
  value         double precision NOT NULL,
  threshold     double precision NOT NULL,
  summary       text NOT NULL,
  fired_at      timestamptz NOT NULL DEFAULT now(),
  last_seen_at  timestamptz NOT NULL DEFAULT now(),
  resolved_at   timestamptz,
  -- who resolved it by hand (NULL: it resolved because its condition cleared)
  resolved_by   text,
  CHECK (state = 'firing' OR resolved_at IS NOT NULL),
  CHECK (state = 'resolved' OR held)
);
CREATE UNIQUE INDEX alerts_held ON alerts (rule, coalesce(tenant_id, ''), subject) WHERE held;
CREATE INDEX alerts_tenant_fired ON alerts (tenant_id, fired_at DESC, id DESC);

-- Each process's counters over the alert window (transactions, requests, task attempts, embed
-- latency buckets), so rate rules see the whole fleet, not only the evaluating process.
CREATE TABLE alert_process_stats (
  process_id  text PRIMARY KEY,
  updated_at  timestamptz NOT NULL DEFAULT now(),
  stats       jsonb NOT NULL
);

-- The dead-letter gauge and rule count current dead letters per tenant on every scrape.
CREATE INDEX tasks_dead_lettered ON tasks (tenant_id) WHERE status = 'dead_lettered';
