-- Quotas and budgets (issue 6): reservations, budgets above the agent, once-per-period alerts,
-- the tenant's time zone for periods, and usage recorded with every attempt's end.
--
-- Money is integer micro-USD (bigint) everywhere new; agent_quotas keeps its numeric(14,6)
-- USD columns (exact decimals), converted with `* 1000000` / `/ 1000000.0` in SQL only.
-- Lock order of every budget writer: task row, reservations, agent_quotas (agent id order),
-- budgets (id order). Errors a caller can cause use SQLSTATE class FA like the queue's:
--   FA429 quota_exceeded {"entity_type", "entity_id", "scope", "limit", "limit_value", "used", "reserved", "requested", "unit"}

-- Periods start at 00:00 in the tenant's time zone (monthly quotas on the 1st, daily budgets).
ALTER TABLE tenants ADD COLUMN time_zone text NOT NULL DEFAULT 'UTC';

-- Estimates held by open reservations count against the limit like spend does.
ALTER TABLE agent_quotas
  ADD COLUMN tokens_reserved bigint NOT NULL DEFAULT 0 CHECK (tokens_reserved >= 0),
  ADD COLUMN cost_reserved_micros bigint NOT NULL DEFAULT 0 CHECK (cost_reserved_micros >= 0);

-- Why a running task is being stopped by the fabric (INSUFFICIENT_FUNDS): set with
-- cancel_requested, the attempt then ends `failed` with this error instead of `cancelled`.
ALTER TABLE tasks ADD COLUMN stop_error jsonb;

-- Budgets above the agent (BudgetConfig of agent-fabric.md): per day in the tenant's time
-- zone; a spend counts against every budget covering the agent (its owner, its workspace,
-- the tenant). A NULL maximum is no limit on that dimension.
CREATE TABLE budgets (
  id                           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id                    text NOT NULL REFERENCES tenants (id),
  scope                        text NOT NULL CHECK (scope IN ('tenant', 'workspace', 'user')),
  scope_id                     text NOT NULL,
  max_tokens_per_day           bigint CHECK (max_tokens_per_day >= 0),
  max_compute_seconds_per_day  bigint CHECK (max_compute_seconds_per_day >= 0),
  max_cost_per_day_micros      bigint CHECK (max_cost_per_day_micros >= 0),
  -- soft threshold: alert; hard threshold: `block` refuses past it
  alert_threshold_percent      numeric(5, 2) NOT NULL DEFAULT 80 CHECK (alert_threshold_percent BETWEEN 0 AND 100),
  hard_threshold_percent       numeric(6, 2) NOT NULL DEFAULT 100 CHECK (hard_threshold_percent > 0 AND hard_threshold_percent <= 1000),
  overage_policy               text NOT NULL DEFAULT 'block' CHECK (overage_policy IN ('block', 'alert_only', 'allow')),
  -- at the period's end: reset (unused allowance lapses) or carry_over (it is added to the next period)
  reset_policy                 text NOT NULL DEFAULT 'reset' CHECK (reset_policy IN ('reset', 'carry_over')),
  tokens_used                  bigint NOT NULL DEFAULT 0 CHECK (tokens_used >= 0),
  compute_ms_used              bigint NOT NULL DEFAULT 0 CHECK (compute_ms_used >= 0),
  cost_used_micros             bigint NOT NULL DEFAULT 0 CHECK (cost_used_micros >= 0),
  tokens_reserved              bigint NOT NULL DEFAULT 0 CHECK (tokens_reserved >= 0),
  cost_reserved_micros         bigint NOT NULL DEFAULT 0 CHECK (cost_reserved_micros >= 0),
  tokens_carried               bigint NOT NULL DEFAULT 0 CHECK (tokens_carried >= 0),
  compute_ms_carried           bigint NOT NULL DEFAULT 0 CHECK (compute_ms_carried >= 0),
  cost_carried_micros          bigint NOT NULL DEFAULT 0 CHECK (cost_carried_micros >= 0),
  period_start                 timestamptz NOT NULL,
  created_at                   timestamptz NOT NULL DEFAULT now(),
  updated_at                   timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, scope, scope_id)
);

-- Units held for a task (or a gateway call) until it commits what it used or releases them.
CREATE TABLE budget_reservations (
  id                     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id              text NOT NULL REFERENCES tenants (id),
  agent_id               uuid NOT NULL,
  task_id                uuid,
  idempotency_key        text NOT NULL,
  -- the budgets charged with it when it was made (released from the same ones)
  budget_ids             uuid[] NOT NULL DEFAULT '{}',
  tokens_requested       bigint NOT NULL DEFAULT 0 CHECK (tokens_requested >= 0),
  cost_requested_micros  bigint NOT NULL DEFAULT 0 CHECK (cost_requested_micros >= 0),
  -- still held
  tokens_reserved        bigint NOT NULL DEFAULT 0 CHECK (tokens_reserved >= 0),
  cost_reserved_micros   bigint NOT NULL DEFAULT 0 CHECK (cost_reserved_micros >= 0),
  -- spend recorded against it (may exceed the request)
  tokens_committed       bigint NOT NULL DEFAULT 0 CHECK (tokens_committed >= 0),
  cost_committed_micros  bigint NOT NULL DEFAULT 0 CHECK (cost_committed_micros >= 0),
  status                 text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'committed', 'released', 'expired')),
  expires_at             timestamptz NOT NULL,
  created_at             timestamptz NOT NULL DEFAULT now(),
  settled_at             timestamptz,
  UNIQUE (tenant_id, idempotency_key)
);
CREATE INDEX budget_reservations_task ON budget_reservations (task_id) WHERE status = 'open';
CREATE INDEX budget_reservations_expiry ON budget_reservations (expires_at) WHERE status = 'open';

-- Alerts, at most one per entity, period and kind (the unique key is the "once"); also the
-- outbox the notifier is fed from (notified_at set when a process took it for delivery).
CREATE TABLE budget_alerts (
  id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id     text NOT NULL REFERENCES tenants (id),
  entity_type   text NOT NULL CHECK (entity_type IN ('agent', 'budget')),
  entity_id     text NOT NULL,
  agent_id      uuid,
  kind          text NOT NULL CHECK (kind IN ('threshold', 'exhausted', 'overage')),
  period_start  timestamptz NOT NULL,
  notify        boolean NOT NULL,
  data          jsonb NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  notified_at   timestamptz,
  UNIQUE (entity_type, entity_id, period_start, kind)
);
CREATE INDEX budget_alerts_pending ON budget_alerts (id) WHERE notify AND notified_at IS NULL;

-- Does budget b cover an agent of this workspace and owner? (tenant budgets cover every agent)
CREATE FUNCTION fabric_budget_covers(b budgets, p_workspace uuid, p_owner uuid) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
  SELECT b.scope = 'tenant' OR (b.scope = 'workspace' AND b.scope_id = p_workspace::text) OR (b.scope = 'user' AND b.scope_id = p_owner::text)
$$;

-- A budget's hard limit in units (NULL: none): the maximum × hard threshold, plus carry-over.
CREATE FUNCTION fabric_budget_hard(p_max bigint, p_pct numeric, p_carried bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE WHEN p_max IS NULL THEN NULL ELSE floor(p_max * p_pct / 100)::bigint + p_carried END
$$;

-- Records the alerts now due for these agents' quotas and these budgets: at the alert
-- threshold, at exhaustion (100 %) and when overage starts (past 100 %), each once per entity
-- and period, with one system event each. Reserved units count (a projection). Returns how
-- many alerts are new.
CREATE FUNCTION fabric_budget_alerts(p_agents uuid[], p_budgets uuid[]) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
  v_n int;
BEGIN
  IF p_agents IS NULL AND p_budgets IS NULL THEN
    RETURN 0;
  END IF;
  WITH state AS (
    SELECT q.tenant_id, 'agent'::text AS entity_type, q.agent_id::text AS entity_id, q.agent_id, q.period_start,
           q.overage_policy AS policy, q.alert_threshold_pct AS pct, d.dim, d.val, d.lim
      FROM agent_quotas q
      CROSS JOIN LATERAL (VALUES
        (1, 'tokens', q.monthly_tokens_used + q.tokens_reserved, q.monthly_token_limit),
        (2, 'cost', (q.monthly_cost_used_usd * 1000000)::bigint + q.cost_reserved_micros, (q.monthly_cost_limit_usd * 1000000)::bigint)
      ) d(ord, dim, val, lim)
     WHERE q.agent_id = ANY (coalesce(p_agents, '{}'))
    UNION ALL
    SELECT b.tenant_id, 'budget', b.id::text, NULL, b.period_start, b.overage_policy, b.alert_threshold_percent, d.dim, d.val, d.lim
      FROM budgets b
      CROSS JOIN LATERAL (VALUES
        (1, 'tokens', b.tokens_used + b.tokens_reserved, b.max_tokens_per_day + b.tokens_carried),
        (2, 'cost', b.cost_used_micros + b.cost_reserved_micros, b.max_cost_per_day_micros + b.cost_carried_micros),
        (3, 'compute', b.compute_ms_used, b.max_compute_seconds_per_day * 1000 + b.compute_ms_carried)
      ) d(ord, dim, val, lim)
     WHERE b.id = ANY (coalesce(p_budgets, '{}')) AND d.lim IS NOT NULL
  ), due AS (
    SELECT DISTINCT ON (s.entity_type, s.entity_id, k.kind) s.*, k.kind
      FROM state s
      CROSS JOIN LATERAL (VALUES ('threshold', s.val * 100 >= s.lim * s.pct), ('exhausted', s.val >= s.lim), ('overage', s.val > s.lim)) k(kind, hit)
     WHERE k.hit AND s.val > 0
     ORDER BY s.entity_type, s.entity_id, k.kind, s.dim
  ), ins AS (
    INSERT INTO budget_alerts (tenant_id, entity_type, entity_id, agent_id, kind, period_start, notify, data)
    SELECT tenant_id, entity_type, entity_id, agent_id, kind, period_start, policy <> 'allow',
           jsonb_build_object('dimension', dim, 'used', val, 'limit', lim, 'policy', policy, 'threshold_pct', pct)
      FROM due
    ON CONFLICT (entity_type, entity_id, period_start, kind) DO NOTHING
    RETURNING *
  ), events AS (
    INSERT INTO system_events (tenant_id, agent_id, event_type, subject_type, subject_id, data)
    SELECT tenant_id, agent_id,
           'budget.' || CASE kind WHEN 'threshold' THEN 'threshold_reached' WHEN 'exhausted' THEN 'exhausted' ELSE 'overage_started' END,
           entity_type, entity_id, data || jsonb_build_object('kind', kind, 'period_start', period_start)
      FROM ins
  )
  SELECT count(*)::int INTO v_n FROM ins;
  IF v_n > 0 THEN
    PERFORM pg_notify('fabric_budget_alerts', '');
  END IF;
  RETURN v_n;
END
$$;

-- Reserves units for tasks (or gateway calls), all or nothing: every agent's quota and every
-- budget above it is checked and charged in one statement, under row locks taken in the
-- documented order, so concurrent reservations can never oversubscribe. Under `block` a
-- request passes only if used + reserved + requested stays within the (hard) limit; a request
-- of 0 units passes only while the limit is not exhausted. Rows whose key already has a
-- reservation are skipped (idempotent). p_rows: [{agent_id, task_id?, key, tokens, cost_micros}].
-- Returns how many alerts became due.
CREATE FUNCTION fabric_budget_reserve(p_tenant text, p_rows jsonb, p_expires_at timestamptz) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
  v_req jsonb;
  v_agents uuid[];
  v_budgets uuid[];
  v_bad record;
BEGIN
  SELECT jsonb_agg(jsonb_build_object('agent_id', r.agent_id, 'task_id', r.task_id, 'key', r.key,
                   'tokens', coalesce(r.tokens, 0), 'cost', coalesce(r.cost_micros, 0),
                   'workspace_id', a.workspace_id, 'owner_user_id', a.owner_user_id))
    INTO v_req
    FROM jsonb_to_recordset(p_rows) AS r(agent_id uuid, task_id uuid, key text, tokens bigint, cost_micros bigint)
    JOIN agents a ON a.id = r.agent_id AND a.tenant_id = p_tenant
   WHERE NOT EXISTS (SELECT 1 FROM budget_reservations x WHERE x.tenant_id = p_tenant AND x.idempotency_key = r.key);
  IF v_req IS NULL THEN
    RETURN 0;
  END IF;

  SELECT array_agg(DISTINCT (r ->> 'agent_id')::uuid) INTO v_agents FROM jsonb_array_elements(v_req) r;
  PERFORM 1 FROM agent_quotas q WHERE q.agent_id = ANY (v_agents) ORDER BY q.agent_id FOR UPDATE;
  SELECT array_agg(l.id) INTO v_budgets FROM (
    SELECT b.id FROM budgets b
     WHERE b.tenant_id = p_tenant
       AND EXISTS (SELECT 1 FROM jsonb_to_recordset(v_req) AS r(workspace_id uuid, owner_user_id uuid)
                    WHERE fabric_budget_covers(b, r.workspace_id, r.owner_user_id))
     ORDER BY b.id FOR UPDATE
  ) l;

  -- the first limit a `block` entity would pass: agents' quotas, then budgets
  WITH req AS (
    SELECT * FROM jsonb_to_recordset(v_req) AS r(agent_id uuid, task_id uuid, key text, tokens bigint, cost bigint, workspace_id uuid, owner_user_id uuid)
  ), checks AS (
    SELECT 1 AS lvl, 'agent'::text AS entity_type, q.agent_id::text AS entity_id, 'agent'::text AS scope, d.ord, d.name, d.unit, d.lim, d.used, d.reserved, d.requested
      FROM agent_quotas q
      JOIN (SELECT agent_id, sum(tokens)::bigint AS tokens, sum(cost)::bigint AS cost FROM req GROUP BY agent_id) n ON n.agent_id = q.agent_id
      CROSS JOIN LATERAL (VALUES
        (1, 'monthly_token_limit', 'tokens', q.monthly_token_limit, q.monthly_tokens_used, q.tokens_reserved, n.tokens),
        (2, 'monthly_cost_limit_usd', 'micro_usd', (q.monthly_cost_limit_usd * 1000000)::bigint, (q.monthly_cost_used_usd * 1000000)::bigint, q.cost_reserved_micros, n.cost)
      ) d(ord, name, unit, lim, used, reserved, requested)
     WHERE q.overage_policy = 'block'
    UNION ALL
    SELECT 2, 'budget', b.id::text, b.scope, d.ord, d.name, d.unit, d.lim, d.used, d.reserved, d.requested
      FROM budgets b
      CROSS JOIN LATERAL (SELECT coalesce(sum(r.tokens), 0)::bigint AS tokens, coalesce(sum(r.cost), 0)::bigint AS cost
                            FROM req r WHERE fabric_budget_covers(b, r.workspace_id, r.owner_user_id)) n
      CROSS JOIN LATERAL (VALUES
        (1, 'max_tokens_per_day', 'tokens', fabric_budget_hard(b.max_tokens_per_day, b.hard_threshold_percent, b.tokens_carried), b.tokens_used, b.tokens_reserved, n.tokens),
        (2, 'max_cost_per_day_usd', 'micro_usd', fabric_budget_hard(b.max_cost_per_day_micros, b.hard_threshold_percent, b.cost_carried_micros), b.cost_used_micros, b.cost_reserved_micros, n.cost),
        (3, 'max_compute_seconds_per_day', 'compute_ms', fabric_budget_hard(b.max_compute_seconds_per_day * 1000, b.hard_threshold_percent, b.compute_ms_carried), b.compute_ms_used, 0::bigint, 0::bigint)
      ) d(ord, name, unit, lim, used, reserved, requested)
     WHERE b.id = ANY (coalesce(v_budgets, '{}')) AND b.overage_policy = 'block'
  )
  SELECT * INTO v_bad FROM checks c
   WHERE c.lim IS NOT NULL AND c.used + c.reserved + greatest(c.requested, 1) > c.lim
   ORDER BY c.lvl, c.entity_id, c.ord LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'FA429', MESSAGE = 'quota_exceeded',
      DETAIL = json_build_object('entity_type', v_bad.entity_type, 'entity_id', v_bad.entity_id, 'scope', v_bad.scope, 'limit', v_bad.name,
                                 'unit', v_bad.unit, 'limit_value', v_bad.lim, 'used', v_bad.used, 'reserved', v_bad.reserved,
                                 'requested', v_bad.requested)::text;
  END IF;

  -- hold the units (rows asking for nothing were only checked)
  WITH req AS (
    SELECT * FROM jsonb_to_recordset(v_req) AS r(agent_id uuid, task_id uuid, key text, tokens bigint, cost bigint, workspace_id uuid, owner_user_id uuid)
     WHERE r.tokens > 0 OR r.cost > 0
  ), reservations AS (
    INSERT INTO budget_reservations (tenant_id, agent_id, task_id, idempotency_key, budget_ids, tokens_requested, cost_requested_micros,
                                     tokens_reserved, cost_reserved_micros, expires_at)
    SELECT p_tenant, r.agent_id, r.task_id, r.key,
           coalesce((SELECT array_agg(b.id ORDER BY b.id) FROM budgets b
                      WHERE b.id = ANY (coalesce(v_budgets, '{}')) AND fabric_budget_covers(b, r.workspace_id, r.owner_user_id)), '{}'),
           r.tokens, r.cost, r.tokens, r.cost, p_expires_at
      FROM req r
  ), quotas AS (
    UPDATE agent_quotas q SET tokens_reserved = q.tokens_reserved + n.tokens, cost_reserved_micros = q.cost_reserved_micros + n.cost, updated_at = now()
      FROM (SELECT agent_id, sum(tokens)::bigint AS tokens, sum(cost)::bigint AS cost FROM req GROUP BY agent_id) n
     WHERE q.agent_id = n.agent_id
  )
  UPDATE budgets b SET tokens_reserved = b.tokens_reserved + n.tokens, cost_reserved_micros = b.cost_reserved_micros + n.cost, updated_at = now()
    FROM (SELECT b2.id, sum(r.tokens)::bigint AS tokens, sum(r.cost)::bigint AS cost
            FROM budgets b2 JOIN req r ON fabric_budget_covers(b2, r.workspace_id, r.owner_user_id)
           WHERE b2.id = ANY (coalesce(v_budgets, '{}')) GROUP BY b2.id) n
   WHERE b.id = n.id;

  RETURN fabric_budget_alerts(v_agents, v_budgets);
END
$$;

-- Gives back what open reservations still hold (p_ids), to the quotas and budgets they were
-- taken from; each ends `committed` if spend was recorded against it, else p_status
-- (released | expired). Callers hold or may take the reservations' locks. Returns how many.
CREATE FUNCTION fabric_budget_release(p_ids uuid[], p_status text) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
  v_rel jsonb;
  v_agents uuid[];
  v_budgets uuid[];
BEGIN
  WITH old AS (
    SELECT r.id, r.agent_id, r.budget_ids, r.tokens_reserved AS rt, r.cost_reserved_micros AS rc
      FROM budget_reservations r WHERE r.id = ANY (p_ids) AND r.status = 'open' ORDER BY r.id FOR UPDATE
  ), upd AS (
    UPDATE budget_reservations r SET tokens_reserved = 0, cost_reserved_micros = 0, settled_at = now(),
           status = CASE WHEN r.tokens_committed > 0 OR r.cost_committed_micros > 0 THEN 'committed' ELSE p_status END
      FROM old WHERE r.id = old.id
    RETURNING old.agent_id, old.budget_ids, old.rt, old.rc
  )
  SELECT jsonb_agg(upd) INTO v_rel FROM upd;
  IF v_rel IS NULL THEN
    RETURN 0;
  END IF;
  SELECT array_agg(DISTINCT (x ->> 'agent_id')::uuid) INTO v_agents FROM jsonb_array_elements(v_rel) x;
  SELECT array_agg(DISTINCT b) INTO v_budgets FROM jsonb_array_elements(v_rel) x, jsonb_array_elements_text(x -> 'budget_ids') b;
  PERFORM 1 FROM agent_quotas q WHERE q.agent_id = ANY (v_agents) ORDER BY q.agent_id FOR UPDATE;
  PERFORM 1 FROM budgets b WHERE b.id = ANY (coalesce(v_budgets, '{}')) ORDER BY b.id FOR UPDATE;
  UPDATE agent_quotas q SET tokens_reserved = q.tokens_reserved - n.rt, cost_reserved_micros = q.cost_reserved_micros - n.rc, updated_at = now()
    FROM (SELECT (x ->> 'agent_id')::uuid AS agent_id, sum((x ->> 'rt')::bigint)::bigint AS rt, sum((x ->> 'rc')::bigint)::bigint AS rc
            FROM jsonb_array_elements(v_rel) x GROUP BY 1) n
   WHERE q.agent_id = n.agent_id;
  UPDATE budgets b SET tokens_reserved = b.tokens_reserved - n.rt, cost_reserved_micros = b.cost_reserved_micros - n.rc, updated_at = now()
    FROM (SELECT b2::uuid AS id, sum((x ->> 'rt')::bigint)::bigint AS rt, sum((x ->> 'rc')::bigint)::bigint AS rc
            FROM jsonb_array_elements(v_rel) x, jsonb_array_elements_text(x -> 'budget_ids') b2 GROUP BY 1) n
   WHERE b.id = n.id;
  RETURN jsonb_array_length(v_rel);
END
$$;

-- Records what attempts used and charges it: one agent_quota_usage row per item (a replayed
-- item — same key — is stored and counted once), the spend consumed from the tasks' open
-- reservations (oldest first), the agents' monthly counters and every budget covering them;
-- with p_final the rest of the tasks' reservations is released. Then due alerts.
-- p_items: [{id (task), attempt, usage: [{dimension, model, input_tokens, output_tokens,
-- quantity, cost_micros, session_id, key}]}]. Returns how many alerts became due.
CREATE FUNCTION fabric_budget_settle(p_items jsonb, p_final boolean) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
  v_used jsonb;
  v_consumed jsonb;
  v_open uuid[];
  v_agents uuid[];
  v_budgets uuid[];
  v_alerts int := 0;
BEGIN
  IF p_items IS NULL OR jsonb_array_length(p_items) = 0 THEN
    RETURN 0;
  END IF;
  -- 1. usage rows, summed per task
  WITH u AS (
    SELECT (i ->> 'id')::uuid AS task_id, (i ->> 'attempt')::int AS attempt, x.*
      FROM jsonb_array_elements(p_items) i
      CROSS JOIN LATERAL jsonb_to_recordset(coalesce(i -> 'usage', '[]')) AS x(dimension text, model text, input_tokens bigint, output_tokens bigint,
                                                                                  quantity bigint, cost_micros bigint, session_id uuid, key text)
  ), ins AS (
    INSERT INTO agent_quota_usage (tenant_id, agent_id, workspace_id, user_id, task_id, attempt, session_id, dimension, model,
                                   input_tokens, output_tokens, quantity, cost_micros, billing_subject, period_start, idempotency_key)
    SELECT t.tenant_id, t.agent_id, a.workspace_id, a.owner_user_id, t.id, u.attempt, u.session_id, u.dimension,
           coalesce(u.model, a.config ->> 'model'), coalesce(u.input_tokens, 0), coalesce(u.output_tokens, 0),
           coalesce(u.quantity, 0), coalesce(u.cost_micros, 0), t.billing_subject,
           coalesce(q.period_start, date_trunc('month', now())), u.key
      FROM u JOIN tasks t ON t.id = u.task_id JOIN agents a ON a.id = t.agent_id LEFT JOIN agent_quotas q ON q.agent_id = t.agent_id
    ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
    RETURNING task_id, agent_id, workspace_id, dimension, quantity, cost_micros
  )
  SELECT jsonb_agg(s) INTO v_used FROM (
    SELECT ins.task_id, ins.agent_id,
           coalesce(sum(ins.quantity) FILTER (WHERE ins.dimension = 'tokens'), 0)::bigint AS tokens,
           coalesce(sum(ins.cost_micros), 0)::bigint AS cost,
           coalesce(sum(ins.quantity) FILTER (WHERE ins.dimension = 'compute'), 0)::bigint AS compute
      FROM ins GROUP BY ins.task_id, ins.agent_id
  ) s;

  -- 2. spend consumes the tasks' open reservations, oldest first
  WITH used AS (
    SELECT * FROM jsonb_to_recordset(coalesce(v_used, '[]')) AS s(task_id uuid, agent_id uuid, tokens bigint, cost bigint, compute bigint)
     WHERE s.tokens > 0 OR s.cost > 0
  ), open AS (
    SELECT r.id, r.agent_id, r.budget_ids, r.tokens_reserved AS rt, r.cost_reserved_micros AS rc, u.tokens AS ut, u.cost AS uc,
           sum(r.tokens_reserved) OVER w AS ct, sum(r.cost_reserved_micros) OVER w AS cc,
           sum(r.tokens_reserved) OVER (PARTITION BY r.task_id) AS tt, sum(r.cost_reserved_micros) OVER (PARTITION BY r.task_id) AS tc,
           row_number() OVER (PARTITION BY r.task_id ORDER BY r.created_at DESC, r.id DESC) AS newest
      FROM budget_reservations r JOIN used u ON u.task_id = r.task_id
     WHERE r.status = 'open'
    WINDOW w AS (PARTITION BY r.task_id ORDER BY r.created_at, r.id)
  ), take AS (
    SELECT o.*, greatest(0, least(o.rt, o.ut - (o.ct - o.rt)))::bigint AS dt, greatest(0, least(o.rc, o.uc - (o.cc - o.rc)))::bigint AS dc,
           -- spend beyond all the task's reservations is committed against its newest one
           CASE WHEN o.newest = 1 THEN greatest(0, o.ut - o.tt) ELSE 0 END::bigint AS over_t,
           CASE WHEN o.newest = 1 THEN greatest(0, o.uc - o.tc) ELSE 0 END::bigint AS over_c
      FROM open o
  ), upd AS (
    UPDATE budget_reservations r SET tokens_reserved = r.tokens_reserved - t.dt, cost_reserved_micros = r.cost_reserved_micros - t.dc,
           tokens_committed = r.tokens_committed + t.dt + t.over_t, cost_committed_micros = r.cost_committed_micros + t.dc + t.over_c
      FROM take t WHERE r.id = t.id
    RETURNING t.agent_id, t.budget_ids, t.dt, t.dc
  )
  SELECT jsonb_agg(upd) INTO v_consumed FROM upd WHERE upd.dt > 0 OR upd.dc > 0;

  -- 3. the counters: quotas, then budgets, each locked in id order
  SELECT array_agg(DISTINCT a) INTO v_agents FROM (
    SELECT (x ->> 'agent_id')::uuid AS a FROM jsonb_array_elements(coalesce(v_used, '[]')) x
     WHERE (x ->> 'tokens')::bigint > 0 OR (x ->> 'cost')::bigint > 0
    UNION SELECT (x ->> 'agent_id')::uuid FROM jsonb_array_elements(coalesce(v_consumed, '[]')) x
  ) s;
  SELECT array_agg(DISTINCT b) INTO v_budgets FROM (
    SELECT bb.id AS b FROM jsonb_to_recordset(coalesce(v_used, '[]')) AS s(agent_id uuid, tokens bigint, cost bigint, compute bigint)
      JOIN agents a ON a.id = s.agent_id JOIN budgets bb ON bb.tenant_id = a.tenant_id AND fabric_budget_covers(bb, a.workspace_id, a.owner_user_id)
     WHERE s.tokens > 0 OR s.cost > 0 OR s.compute > 0
    UNION SELECT b2::uuid FROM jsonb_array_elements(coalesce(v_consumed, '[]')) x, jsonb_array_elements_text(x -> 'budget_ids') b2
  ) s;
  IF v_agents IS NOT NULL THEN
    PERFORM 1 FROM agent_quotas q WHERE q.agent_id = ANY (v_agents) ORDER BY q.agent_id FOR UPDATE;
  END IF;
  IF v_budgets IS NOT NULL THEN
    PERFORM 1 FROM budgets b WHERE b.id = ANY (v_budgets) ORDER BY b.id FOR UPDATE;
  END IF;
  IF v_agents IS NOT NULL THEN
    UPDATE agent_quotas q SET monthly_tokens_used = q.monthly_tokens_used + n.tokens,
           monthly_cost_used_usd = q.monthly_cost_used_usd + n.cost / 1000000.0,
           tokens_reserved = q.tokens_reserved - n.dt, cost_reserved_micros = q.cost_reserved_micros - n.dc, updated_at = now()
      FROM (SELECT agent_id, sum(tokens)::bigint AS tokens, sum(cost)::bigint AS cost, sum(dt)::bigint AS dt, sum(dc)::bigint AS dc FROM (
              SELECT s.agent_id, s.tokens, s.cost, 0::bigint AS dt, 0::bigint AS dc
                FROM jsonb_to_recordset(coalesce(v_used, '[]')) AS s(agent_id uuid, tokens bigint, cost bigint)
              UNION ALL
              SELECT c.agent_id, 0, 0, c.dt, c.dc FROM jsonb_to_recordset(coalesce(v_consumed, '[]')) AS c(agent_id uuid, dt bigint, dc bigint)
            ) x GROUP BY agent_id) n
     WHERE q.agent_id = n.agent_id;
  END IF;
  IF v_budgets IS NOT NULL THEN
    UPDATE budgets b SET tokens_used = b.tokens_used + n.tokens, cost_used_micros = b.cost_used_micros + n.cost,
           compute_ms_used = b.compute_ms_used + n.compute,
           tokens_reserved = b.tokens_reserved - n.dt, cost_reserved_micros = b.cost_reserved_micros - n.dc, updated_at = now()
      FROM (SELECT id, sum(tokens)::bigint AS tokens, sum(cost)::bigint AS cost, sum(compute)::bigint AS compute,
                   sum(dt)::bigint AS dt, sum(dc)::bigint AS dc FROM (
              SELECT bb.id, s.tokens, s.cost, s.compute, 0::bigint AS dt, 0::bigint AS dc
                FROM jsonb_to_recordset(coalesce(v_used, '[]')) AS s(agent_id uuid, tokens bigint, cost bigint, compute bigint)
                JOIN agents a ON a.id = s.agent_id JOIN budgets bb ON bb.id = ANY (v_budgets) AND fabric_budget_covers(bb, a.workspace_id, a.owner_user_id)
              UNION ALL
              SELECT b2::uuid, 0, 0, 0, (x ->> 'dt')::bigint, (x ->> 'dc')::bigint
                FROM jsonb_array_elements(coalesce(v_consumed, '[]')) x, jsonb_array_elements_text(x -> 'budget_ids') b2
            ) y GROUP BY id) n
     WHERE b.id = n.id;
  END IF;
  v_alerts := fabric_budget_alerts(v_agents, v_budgets);

  -- 4. a task that ended gives back what its reservations still hold
  IF p_final THEN
    SELECT array_agg(r.id) INTO v_open FROM budget_reservations r
     WHERE r.task_id IN (SELECT (i ->> 'id')::uuid FROM jsonb_array_elements(p_items) i) AND r.status = 'open';
    IF v_open IS NOT NULL THEN
      PERFORM fabric_budget_release(v_open, 'released');
    END IF;
  END IF;
  RETURN v_alerts;
END
$$;

-- Completing a batch of attempts, as in 0004, plus what each attempt used (p_rows[].usage)
-- recorded and charged in the same statement, and the tasks' reservations settled.
CREATE OR REPLACE FUNCTION fabric_complete_tasks(p_rows jsonb, p_aging_seconds int)
RETURNS TABLE (o_id uuid, o_tenant_id text, o_agent_id uuid, o_status text, o_revision int, o_attempts int, o_released int)
LANGUAGE plpgsql
AS $$
DECLARE
  v_done uuid[];
  v_released int;
BEGIN
  WITH done AS (
    UPDATE tasks t SET status = 'completed', revision = t.revision + 1, lease_owner = NULL, lease_expires_at = NULL,
           updated_at = now(), result = c.result, error = NULL, finished_at = now(), ready_at = NULL, sort_key = NULL
      FROM jsonb_to_recordset(p_rows) AS c(id uuid, attempt int, worker text, result jsonb)
     WHERE t.id = c.id AND t.status = 'running' AND t.attempts = c.attempt AND t.lease_owner = c.worker
    RETURNING t.id, t.tenant_id, t.agent_id, t.revision, t.attempts
  ), attempt_rows AS (
    UPDATE task_attempts a SET finished_at = now(), outcome = 'completed', error = NULL
      FROM done WHERE a.task_id = done.id AND a.attempt = done.attempts
  ), events AS (
    INSERT INTO system_events (tenant_id, agent_id, event_type, subject_type, subject_id, data)
    SELECT done.tenant_id, done.agent_id, 'task.completed', 'task', done.id::text,
           jsonb_build_object('status', 'completed', 'revision', done.revision, 'attempt', done.attempts)
      FROM done ORDER BY done.id
  )
  SELECT array_agg(done.id) INTO v_done FROM done;
  IF v_done IS NULL THEN
    RETURN;
  END IF;

  PERFORM fabric_budget_settle((SELECT jsonb_agg(c) FROM jsonb_array_elements(p_rows) c WHERE (c ->> 'id')::uuid = ANY (v_done)), true);

  WITH counts AS (
    SELECT d.task_id, count(*)::int AS n FROM task_dependencies d WHERE d.depends_on = ANY (v_done) GROUP BY d.task_id
  ), moved AS (
    UPDATE tasks t SET pending_dependencies = t.pending_dependencies - c.n,
           status = CASE WHEN t.pending_dependencies = c.n AND t.run_at <= now() THEN 'queued' ELSE t.status END,
           ready_at = CASE WHEN t.pending_dependencies = c.n AND t.run_at <= now() THEN now() ELSE t.ready_at END,
           sort_key = CASE WHEN t.pending_dependencies = c.n AND t.run_at <= now()
                           THEN now() + make_interval(secs => t.priority * p_aging_seconds) ELSE t.sort_key END,
           revision = CASE WHEN t.pending_dependencies = c.n AND t.run_at <= now() THEN t.revision + 1 ELSE t.revision END,
           updated_at = now()
      FROM counts c
     WHERE t.id = c.task_id AND t.status = 'waiting'
    RETURNING t.id, t.tenant_id, t.agent_id, t.status, t.revision, t.attempts
  ), events AS (
    INSERT INTO system_events (tenant_id, agent_id, event_type, subject_type, subject_id, data)
    SELECT moved.tenant_id, moved.agent_id, 'task.queued', 'task', moved.id::text,
           jsonb_build_object('status', 'queued', 'revision', moved.revision, 'attempt', moved.attempts)
      FROM moved WHERE moved.status = 'queued' ORDER BY moved.id
  )
  SELECT count(*) FILTER (WHERE moved.status = 'queued') INTO v_released FROM moved;

  RETURN QUERY SELECT t.id, t.tenant_id, t.agent_id, t.status, t.revision, t.attempts, v_released FROM tasks t WHERE t.id = ANY (v_done);
END
$$;
