-- The model gateway's admit and settle, each one statement (bench/gateway: every database
-- round trip costs 0.1-0.25 ms, and a transaction of five statements held the task, quota and
-- budget rows across all of them). Same checks, same order, same locks as the transactions
-- they replace (src/gateway/ledger.ts); row locks now last one statement.

-- Could fabric_budget_alerts have anything to record for this agent's quota or these budgets?
-- Its own condition (used + reserved at the alert threshold, or past it), checked without
-- writing, so the gateway calls it only when an alert may be due (every one is recorded once
-- per period anyway).
CREATE FUNCTION fabric_gateway_alert_due(p_agent uuid, p_budgets uuid[]) RETURNS boolean
LANGUAGE sql STABLE AS $$
  SELECT EXISTS (
           SELECT 1 FROM agent_quotas q
            CROSS JOIN LATERAL (VALUES (q.monthly_tokens_used + q.tokens_reserved, q.monthly_token_limit),
                                       ((q.monthly_cost_used_usd * 1000000)::bigint + q.cost_reserved_micros, (q.monthly_cost_limit_usd * 1000000)::bigint)) d(val, lim)
            WHERE q.agent_id = p_agent AND d.val > 0 AND d.val * 100 >= d.lim * q.alert_threshold_pct)
      OR EXISTS (
           SELECT 1 FROM budgets b
            CROSS JOIN LATERAL (VALUES (b.tokens_used + b.tokens_reserved, b.max_tokens_per_day + b.tokens_carried),
                                       (b.cost_used_micros + b.cost_reserved_micros, b.max_cost_per_day_micros + b.cost_carried_micros),
                                       (b.compute_ms_used, b.max_compute_seconds_per_day * 1000 + b.compute_ms_carried)) d(val, lim)
            WHERE b.id = ANY (coalesce(p_budgets, '{}')) AND d.lim IS NOT NULL AND d.val > 0 AND d.val * 100 >= d.lim * b.alert_threshold_percent)
$$;

-- Before a call is forwarded: the caller's session and task (task row locked, the budget
-- writers' lock order starts there), then — only if the session is running and the task is
-- running and not being stopped — what the task reserved at submit is handed back (its calls
-- hold their own worst cases from then on) and the call's worst case is reserved under
-- p_key against the agent's quota and every budget above it (fabric_budget_reserve: FA429
-- quota_exceeded when a `block` entity cannot cover it, and nothing was changed). Returns the
-- caller's row (none: unknown session or task) for the gateway to check and attribute; the
-- reservation was made iff the row says running.
CREATE FUNCTION fabric_gateway_admit(p_tenant text, p_agent uuid, p_session uuid, p_task uuid, p_key text,
                                     p_tokens bigint, p_cost bigint, p_expires_at timestamptz)
RETURNS TABLE (session_id uuid, session_status text, task_id uuid, task_status text, cancel_requested boolean,
               stop_error jsonb, attempts int, workspace_id uuid, owner_user_id uuid, model text, models jsonb)
LANGUAGE plpgsql AS $$
DECLARE
  r record;
  v_ok boolean;
  v_bok boolean;
  v_budgets uuid[];
BEGIN
  IF p_session IS NOT NULL THEN
    SELECT s.id AS sid, s.status AS sstatus, t.id AS tid, t.status AS tstatus, t.cancel_requested AS cancel, t.stop_error AS serr,
           t.attempts AS att, a.workspace_id AS ws, a.owner_user_id AS owner, a.config ->> 'model' AS mdl, a.config -> 'models' AS mdls
      INTO r
      FROM agent_sessions s JOIN tasks t ON t.id = s.task_id JOIN agents a ON a.id = t.agent_id
     WHERE s.id = p_session AND s.tenant_id = p_tenant AND s.agent_id = p_agent
       FOR NO KEY UPDATE OF t;
  ELSE
    SELECT NULL::uuid AS sid, NULL::text AS sstatus, t.id AS tid, t.status AS tstatus, t.cancel_requested AS cancel, t.stop_error AS serr,
           t.attempts AS att, a.workspace_id AS ws, a.owner_user_id AS owner, a.config ->> 'model' AS mdl, a.config -> 'models' AS mdls
      INTO r
      FROM tasks t JOIN agents a ON a.id = t.agent_id
     WHERE t.id = p_task AND t.tenant_id = p_tenant AND t.agent_id = p_agent
       FOR NO KEY UPDATE OF t;
  END IF;
  IF NOT FOUND THEN
    RETURN;
  END IF;
  IF (r.sid IS NULL OR r.sstatus = 'running') AND r.tstatus = 'running' AND NOT r.cancel THEN
    IF EXISTS (SELECT 1 FROM budget_reservations x WHERE x.task_id = r.tid AND x.tenant_id = p_tenant AND x.status = 'open') THEN
      PERFORM fabric_budget_release(ARRAY(SELECT x.id FROM budget_reservations x WHERE x.task_id = r.tid AND x.tenant_id = p_tenant AND x.status = 'open'), 'released');
    END IF;
    -- fast path for one call of one agent: fabric_budget_reserve's checks and charges, written
    -- for a single row (its jsonb batching cost ~1 ms a call). The agent's quota, then the
    -- budgets covering it in id order, are locked and checked: each `block` limit must hold
    -- used + reserved + max(requested, 1); compute (not requested here) must not be exhausted.
    SELECT q.overage_policy <> 'block'
           OR (q.monthly_tokens_used + q.tokens_reserved + greatest(p_tokens, 1) <= q.monthly_token_limit
               AND (q.monthly_cost_used_usd * 1000000)::bigint + q.cost_reserved_micros + greatest(p_cost, 1) <= (q.monthly_cost_limit_usd * 1000000)::bigint)
      INTO v_ok
      FROM agent_quotas q WHERE q.agent_id = p_agent FOR UPDATE;
    SELECT array_agg(l.id ORDER BY l.id), bool_and(l.ok) INTO v_budgets, v_bok FROM (
      SELECT b.id, b.overage_policy <> 'block'
             OR (coalesce(b.tokens_used + b.tokens_reserved + greatest(p_tokens, 1) <= fabric_budget_hard(b.max_tokens_per_day, b.hard_threshold_percent, b.tokens_carried), true)
                 AND coalesce(b.cost_used_micros + b.cost_reserved_micros + greatest(p_cost, 1) <= fabric_budget_hard(b.max_cost_per_day_micros, b.hard_threshold_percent, b.cost_carried_micros), true)
                 AND coalesce(b.compute_ms_used + 1 <= fabric_budget_hard(b.max_compute_seconds_per_day * 1000, b.hard_threshold_percent, b.compute_ms_carried), true)) AS ok
        FROM budgets b
       WHERE b.tenant_id = p_tenant AND fabric_budget_covers(b, r.ws, r.owner)
       ORDER BY b.id FOR UPDATE
    ) l;
    IF coalesce(v_ok, true) AND coalesce(v_bok, true) AND (p_tokens > 0 OR p_cost > 0) THEN
      INSERT INTO budget_reservations (tenant_id, agent_id, task_id, idempotency_key, budget_ids, tokens_requested, cost_requested_micros,
                                       tokens_reserved, cost_reserved_micros, expires_at)
      VALUES (p_tenant, p_agent, NULL, p_key, coalesce(v_budgets, '{}'), p_tokens, p_cost, p_tokens, p_cost, p_expires_at);
      UPDATE agent_quotas q SET tokens_reserved = q.tokens_reserved + p_tokens, cost_reserved_micros = q.cost_reserved_micros + p_cost, updated_at = now()
       WHERE q.agent_id = p_agent;
      IF v_budgets IS NOT NULL THEN
        UPDATE budgets b SET tokens_reserved = b.tokens_reserved + p_tokens, cost_reserved_micros = b.cost_reserved_micros + p_cost, updated_at = now()
         WHERE b.id = ANY (v_budgets);
      END IF;
      IF fabric_gateway_alert_due(p_agent, v_budgets) THEN
        PERFORM fabric_budget_alerts(ARRAY[p_agent], v_budgets);
      END IF;
    ELSE
      -- a limit cannot cover it (or nothing to hold): the general function decides and says
      -- which limit (FA429 with its detail), under the locks already held
      PERFORM fabric_budget_reserve(p_tenant, jsonb_build_array(jsonb_build_object('agent_id', p_agent, 'task_id', NULL, 'key', p_key,
                                                                                    'tokens', p_tokens, 'cost_micros', p_cost)), p_expires_at);
    END IF;
  END IF;
  RETURN QUERY SELECT r.sid, r.sstatus, r.tid, r.tstatus, r.cancel, r.serr, r.att, r.ws, r.owner, r.mdl, r.mdls;
END
$$;

-- After a call (or its failure): the task row locked first (the budget writers' lock order),
-- the call's reservation (p_key) released, what it used metered when it used anything
-- (p_usage: one fabric_budget_settle item, stored and counted once by its key, at the task's
-- current attempt) and, when that spend took a `block` entity past its hard limit, the running
-- task stopped with INSUFFICIENT_FUNDS exactly as stopForInsufficientFunds (src/budget/meter.ts)
-- does: cancel_requested + stop_error, a task.running event and an audit row. Then the
-- model.call event (p_event, token counts only). Returns {exhausted, stopped, agent_id}.
CREATE FUNCTION fabric_gateway_settle(p_tenant text, p_task uuid, p_agent uuid, p_key text, p_usage jsonb, p_event jsonb, p_request_id text)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
  v_task record;
  v_ex record;
  v_exhausted jsonb;
  v_error jsonb;
  v_stopped uuid;
  v_stopped_agent uuid;
  v_revision int;
  v_attempt int;
  v_shown text;
  v_rel_agent uuid;
  v_rel_budgets uuid[];
  v_rt bigint;
  v_rc bigint;
  v_ut bigint;
  v_uc bigint;
  v_ws uuid;
  v_owner uuid;
  v_charged boolean;
  v_cover uuid[];
  v_budgets uuid[];
BEGIN
  SELECT t.agent_id, t.attempts INTO v_task FROM tasks t WHERE t.tenant_id = p_tenant AND t.id = p_task FOR NO KEY UPDATE;
  IF p_usage IS NOT NULL AND v_task IS NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'FA404', MESSAGE = 'not_found', DETAIL = json_build_object('resource', 'task', 'id', p_task)::text;
  END IF;
  IF EXISTS (SELECT 1 FROM budget_reservations x WHERE x.task_id = p_task AND x.status = 'open') THEN
    -- the task holds reservations of its own, which spend consumes first: the general path
    IF EXISTS (SELECT 1 FROM budget_reservations x WHERE x.tenant_id = p_tenant AND x.idempotency_key = p_key AND x.status = 'open') THEN
      PERFORM fabric_budget_release(ARRAY(SELECT x.id FROM budget_reservations x WHERE x.tenant_id = p_tenant AND x.idempotency_key = p_key AND x.status = 'open'), 'released');
    END IF;
    IF p_usage IS NOT NULL THEN
      PERFORM fabric_budget_settle(jsonb_build_array(jsonb_build_object('id', p_task, 'attempt', v_task.attempts, 'usage', jsonb_build_array(p_usage))), false);
    END IF;
  ELSE
    -- fast path, one call: fabric_budget_release of its reservation and fabric_budget_settle of
    -- its usage written for a single row, in the same lock order (reservation, quota, budgets
    -- by id). Nothing of the task's own is open, so spend consumes no reservation.
    UPDATE budget_reservations x SET tokens_reserved = 0, cost_reserved_micros = 0, settled_at = now(),
           status = CASE WHEN x.tokens_committed > 0 OR x.cost_committed_micros > 0 THEN 'committed' ELSE 'released' END
      FROM (SELECT y.id, y.agent_id, y.budget_ids, y.tokens_reserved, y.cost_reserved_micros FROM budget_reservations y
             WHERE y.tenant_id = p_tenant AND y.idempotency_key = p_key AND y.status = 'open' FOR UPDATE) o
     WHERE x.id = o.id
    RETURNING o.agent_id, o.budget_ids, o.tokens_reserved, o.cost_reserved_micros INTO v_rel_agent, v_rel_budgets, v_rt, v_rc;
    v_rt := coalesce(v_rt, 0);
    v_rc := coalesce(v_rc, 0);
    IF p_usage IS NOT NULL THEN
      INSERT INTO agent_quota_usage (tenant_id, agent_id, workspace_id, user_id, task_id, attempt, session_id, dimension, model,
                                     input_tokens, output_tokens, quantity, cost_micros, billing_subject, period_start, idempotency_key)
      SELECT t.tenant_id, t.agent_id, a.workspace_id, a.owner_user_id, t.id, v_task.attempts, u.session_id, u.dimension,
             coalesce(u.model, a.config ->> 'model'), coalesce(u.input_tokens, 0), coalesce(u.output_tokens, 0),
             coalesce(u.quantity, 0), coalesce(u.cost_micros, 0), t.billing_subject,
             coalesce(q.period_start, date_trunc('month', now())), u.key
        FROM jsonb_to_record(p_usage) AS u(dimension text, model text, input_tokens bigint, output_tokens bigint, quantity bigint, cost_micros bigint, session_id uuid, key text)
        JOIN tasks t ON t.id = p_task JOIN agents a ON a.id = t.agent_id LEFT JOIN agent_quotas q ON q.agent_id = t.agent_id
      ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
      RETURNING quantity, cost_micros, workspace_id, user_id INTO v_ut, v_uc, v_ws, v_owner;
    END IF;
    v_ut := coalesce(v_ut, 0);
    v_uc := coalesce(v_uc, 0);
    v_charged := v_ut > 0 OR v_uc > 0;
    IF v_charged OR v_rt > 0 OR v_rc > 0 THEN
      UPDATE agent_quotas q
         SET monthly_tokens_used = q.monthly_tokens_used + CASE WHEN q.agent_id = v_task.agent_id THEN v_ut ELSE 0 END,
             monthly_cost_used_usd = q.monthly_cost_used_usd + CASE WHEN q.agent_id = v_task.agent_id THEN v_uc ELSE 0 END / 1000000.0,
             tokens_reserved = q.tokens_reserved - CASE WHEN q.agent_id = v_rel_agent THEN v_rt ELSE 0 END,
             cost_reserved_micros = q.cost_reserved_micros - CASE WHEN q.agent_id = v_rel_agent THEN v_rc ELSE 0 END,
             updated_at = now()
       WHERE q.agent_id IN (CASE WHEN v_charged THEN v_task.agent_id END, CASE WHEN v_rt > 0 OR v_rc > 0 THEN v_rel_agent END);
      IF v_charged THEN
        SELECT array_agg(b.id) INTO v_cover FROM budgets b WHERE b.tenant_id = p_tenant AND fabric_budget_covers(b, v_ws, v_owner);
      END IF;
      v_budgets := ARRAY(SELECT DISTINCT x FROM unnest(coalesce(v_cover, '{}') || CASE WHEN v_rt > 0 OR v_rc > 0 THEN coalesce(v_rel_budgets, '{}') ELSE '{}' END) x ORDER BY x);
      IF cardinality(v_budgets) > 0 THEN
        PERFORM 1 FROM budgets b WHERE b.id = ANY (v_budgets) ORDER BY b.id FOR UPDATE;
        UPDATE budgets b
           SET tokens_used = b.tokens_used + CASE WHEN b.id = ANY (coalesce(v_cover, '{}')) THEN v_ut ELSE 0 END,
               cost_used_micros = b.cost_used_micros + CASE WHEN b.id = ANY (coalesce(v_cover, '{}')) THEN v_uc ELSE 0 END,
               tokens_reserved = b.tokens_reserved - CASE WHEN b.id = ANY (coalesce(v_rel_budgets, '{}')) THEN v_rt ELSE 0 END,
               cost_reserved_micros = b.cost_reserved_micros - CASE WHEN b.id = ANY (coalesce(v_rel_budgets, '{}')) THEN v_rc ELSE 0 END,
               updated_at = now()
         WHERE b.id = ANY (v_budgets);
      END IF;
      IF v_charged AND fabric_gateway_alert_due(v_task.agent_id, v_cover) THEN
        PERFORM fabric_budget_alerts(ARRAY[v_task.agent_id], v_cover);
      END IF;
    END IF;
  END IF;
  IF p_usage IS NOT NULL THEN
    -- the first `block` limit (the agent's quota, then the budgets above it) spend is past (exhaustedLimit)
    SELECT * INTO v_ex FROM (
      SELECT 1 AS lvl, 'agent' AS entity_type, q.agent_id::text AS entity_id, d.ord, d.name AS lim_name, d.unit, d.lim AS limit_value, d.used
        FROM agent_quotas q
        CROSS JOIN LATERAL (VALUES (1, 'monthly_token_limit', 'tokens', q.monthly_token_limit, q.monthly_tokens_used),
                                   (2, 'monthly_cost_limit_usd', 'micro_usd', (q.monthly_cost_limit_usd * 1000000)::bigint, (q.monthly_cost_used_usd * 1000000)::bigint)) d(ord, name, unit, lim, used)
       WHERE q.agent_id = v_task.agent_id AND q.overage_policy = 'block'
      UNION ALL
      SELECT 2, 'budget', b.id::text, d.ord, d.name, d.unit, d.lim, d.used
        FROM agents a JOIN budgets b ON b.tenant_id = a.tenant_id AND fabric_budget_covers(b, a.workspace_id, a.owner_user_id)
        CROSS JOIN LATERAL (VALUES
          (1, 'max_tokens_per_day', 'tokens', fabric_budget_hard(b.max_tokens_per_day, b.hard_threshold_percent, b.tokens_carried), b.tokens_used),
          (2, 'max_cost_per_day_usd', 'micro_usd', fabric_budget_hard(b.max_cost_per_day_micros, b.hard_threshold_percent, b.cost_carried_micros), b.cost_used_micros),
          (3, 'max_compute_seconds_per_day', 'compute_ms', fabric_budget_hard(b.max_compute_seconds_per_day * 1000, b.hard_threshold_percent, b.compute_ms_carried), b.compute_ms_used)
        ) d(ord, name, unit, lim, used)
       WHERE a.id = v_task.agent_id AND b.overage_policy = 'block'
    ) x WHERE x.limit_value IS NOT NULL AND x.used > x.limit_value ORDER BY lvl, entity_id, ord LIMIT 1;
    IF FOUND THEN
      v_exhausted := jsonb_build_object('entity_type', v_ex.entity_type, 'entity_id', v_ex.entity_id, 'limit', v_ex.lim_name, 'unit', v_ex.unit,
                                        'limit_value', v_ex.limit_value, 'used', v_ex.used);
      v_shown := CASE WHEN v_ex.unit = 'micro_usd'
                      THEN trim_scale(v_ex.used / 1000000.0)::text || ' of ' || trim_scale(v_ex.limit_value / 1000000.0)::text || ' USD'
                      ELSE v_ex.used::text || ' of ' || v_ex.limit_value::text || ' ' || v_ex.unit END;
      v_error := jsonb_build_object('code', 'INSUFFICIENT_FUNDS',
        'message', 'Spend passed the hard limit ' || v_ex.lim_name || ' of ' || v_ex.entity_type || ' ' || v_ex.entity_id || ' (' || v_shown
                   || '); the task was stopped. Raise the limit or wait for the next period, then submit it again.',
        'limit', v_exhausted);
      UPDATE tasks t SET cancel_requested = true, stop_error = v_error, revision = t.revision + 1, updated_at = now()
       WHERE t.tenant_id = p_tenant AND t.id = p_task AND t.status = 'running' AND t.stop_error IS NULL
      RETURNING t.id, t.agent_id, t.revision, t.attempts INTO v_stopped, v_stopped_agent, v_revision, v_attempt;
      IF v_stopped IS NOT NULL THEN
        INSERT INTO system_events (tenant_id, agent_id, event_type, subject_type, subject_id, data, request_id)
        VALUES (p_tenant, v_stopped_agent, 'task.running', 'task', v_stopped::text,
                jsonb_build_object('status', 'running', 'revision', v_revision, 'attempt', v_attempt,
                                   'error', jsonb_build_object('code', 'INSUFFICIENT_FUNDS', 'message', 'Spend passed a hard limit; the worker is stopping the attempt.')),
                p_request_id);
        INSERT INTO audit_log (tenant_id, actor_sub, actor_role, action, target_type, target_id, before, after, request_id)
        VALUES (p_tenant, 'budget', 'system', 'task.insufficient_funds', 'task', v_stopped::text, NULL, v_error, p_request_id);
      END IF;
    END IF;
  END IF;
  INSERT INTO system_events (tenant_id, agent_id, event_type, subject_type, subject_id, data, request_id)
  VALUES (p_tenant, p_agent, 'model.call', 'task', p_task::text,
          p_event || CASE WHEN v_stopped IS NOT NULL THEN '{"stopped": "INSUFFICIENT_FUNDS"}'::jsonb ELSE '{}'::jsonb END, p_request_id);
  RETURN jsonb_build_object('exhausted', v_exhausted, 'stopped', v_stopped IS NOT NULL, 'agent_id', v_task.agent_id);
END
$$;
