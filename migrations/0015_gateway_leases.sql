-- Credit leases for the model gateway (src/gateway/credit-lease.ts, bench/README.md "Gateway"):
-- a process reserves a slice of an agent's headroom once — an ordinary budget_reservations row
-- (task_id NULL, key gwlease:<uuid>) counted in the quota's and every covering budget's
-- `reserved`, with an expiry the reservation sweeper honours — and admits that agent's calls
-- against it in memory. Calls are then settled in batches (one statement, one commit for all
-- the calls that ended meanwhile). Lock order as every budget writer (0010): task rows,
-- reservations, agent_quotas (agent id order), budgets (id order).

-- The first `block` limit the agent's spend is past and, if there is one, the INSUFFICIENT_FUNDS
-- stop of its running task — exactly as fabric_gateway_settle (0013) and stopForInsufficientFunds
-- (src/budget/meter.ts) do it: cancel_requested + stop_error, a task.running event, an audit row.
-- Returns {exhausted, stopped}.
CREATE FUNCTION fabric_gateway_stop_if_exhausted(p_tenant text, p_task uuid, p_agent uuid, p_request_id text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
  v_ex record;
  v_exhausted jsonb;
  v_error jsonb;
  v_shown text;
  v_stopped uuid;
  v_stopped_agent uuid;
  v_revision int;
  v_attempt int;
BEGIN
  SELECT * INTO v_ex FROM (
    SELECT 1 AS lvl, 'agent' AS entity_type, q.agent_id::text AS entity_id, d.ord, d.name AS lim_name, d.unit, d.lim AS limit_value, d.used
      FROM agent_quotas q
      CROSS JOIN LATERAL (VALUES (1, 'monthly_token_limit', 'tokens', q.monthly_token_limit, q.monthly_tokens_used),
                                 (2, 'monthly_cost_limit_usd', 'micro_usd', (q.monthly_cost_limit_usd * 1000000)::bigint, (q.monthly_cost_used_usd * 1000000)::bigint)) d(ord, name, unit, lim, used)
     WHERE q.agent_id = p_agent AND q.overage_policy = 'block'
    UNION ALL
    SELECT 2, 'budget', b.id::text, d.ord, d.name, d.unit, d.lim, d.used
      FROM agents a JOIN budgets b ON b.tenant_id = a.tenant_id AND fabric_budget_covers(b, a.workspace_id, a.owner_user_id)
      CROSS JOIN LATERAL (VALUES
        (1, 'max_tokens_per_day', 'tokens', fabric_budget_hard(b.max_tokens_per_day, b.hard_threshold_percent, b.tokens_carried), b.tokens_used),
        (2, 'max_cost_per_day_usd', 'micro_usd', fabric_budget_hard(b.max_cost_per_day_micros, b.hard_threshold_percent, b.cost_carried_micros), b.cost_used_micros),
        (3, 'max_compute_seconds_per_day', 'compute_ms', fabric_budget_hard(b.max_compute_seconds_per_day * 1000, b.hard_threshold_percent, b.compute_ms_carried), b.compute_ms_used)
      ) d(ord, name, unit, lim, used)
     WHERE a.id = p_agent AND b.overage_policy = 'block'
  ) x WHERE x.limit_value IS NOT NULL AND x.used > x.limit_value ORDER BY lvl, entity_id, ord LIMIT 1;
  IF NOT FOUND THEN
    RETURN jsonb_build_object('exhausted', NULL, 'stopped', false);
  END IF;
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
  RETURN jsonb_build_object('exhausted', v_exhausted, 'stopped', v_stopped IS NOT NULL);
END
$$;

-- Takes (p_key new) or grows (p_key open) an agent's credit lease. The agent's quota and the
-- budgets covering it are locked and their headroom read (limit - used - reserved, `block`
-- entities only; a budget's hard limit as fabric_budget_reserve computes it). The call asking
-- needs p_need (its worst case): if any headroom is short of max(need, 1), or a block budget's
-- compute is exhausted, fabric_budget_reserve decides under the same locks (FA429
-- quota_exceeded with its detail, nothing changed) — the same rule and refusal as
-- fabric_gateway_admit. Otherwise it grants max(need, min(p_want, headroom / 2)) of tokens and
-- of cost (so leases never take all that is left and a process racing near the limit still
-- finds half), added to the reservation row, the quota's and those budgets' `reserved`. A lease
-- whose row is no longer open (swept) or whose covering budgets changed is `stale`: nothing is
-- granted and the caller starts a new lease. Returns (granted_tokens, granted_cost, stale).
CREATE FUNCTION fabric_gateway_lease(p_tenant text, p_agent uuid, p_key text, p_need_tokens bigint, p_need_cost bigint,
                                     p_want_tokens bigint, p_want_cost bigint, p_expires_at timestamptz)
RETURNS TABLE (granted_tokens bigint, granted_cost bigint, stale boolean)
LANGUAGE plpgsql AS $$
DECLARE
  v_ws uuid;
  v_owner uuid;
  v_res_id uuid;
  v_res_status text;
  v_res_budgets uuid[];
  v_qt bigint;
  v_qc bigint;
  v_budgets uuid[];
  v_bt bigint;
  v_bc bigint;
  v_compute_ok boolean;
  v_ht bigint;
  v_hc bigint;
  v_t bigint;
  v_c bigint;
  v_check text;
BEGIN
  SELECT a.workspace_id, a.owner_user_id INTO v_ws, v_owner FROM agents a WHERE a.id = p_agent AND a.tenant_id = p_tenant;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'FA404', MESSAGE = 'not_found', DETAIL = json_build_object('resource', 'agent', 'id', p_agent)::text;
  END IF;
  SELECT r.id, r.status, r.budget_ids INTO v_res_id, v_res_status, v_res_budgets
    FROM budget_reservations r WHERE r.tenant_id = p_tenant AND r.idempotency_key = p_key AND r.agent_id = p_agent FOR UPDATE;
  IF v_res_id IS NOT NULL AND v_res_status <> 'open' THEN
    RETURN QUERY SELECT 0::bigint, 0::bigint, true;
    RETURN;
  END IF;
  SELECT CASE WHEN q.overage_policy = 'block' THEN q.monthly_token_limit - q.monthly_tokens_used - q.tokens_reserved END,
         CASE WHEN q.overage_policy = 'block' THEN (q.monthly_cost_limit_usd * 1000000)::bigint - (q.monthly_cost_used_usd * 1000000)::bigint - q.cost_reserved_micros END
    INTO v_qt, v_qc
    FROM agent_quotas q WHERE q.agent_id = p_agent FOR UPDATE;
  SELECT array_agg(l.id ORDER BY l.id), min(l.ht), min(l.hc), bool_and(l.compute_ok) INTO v_budgets, v_bt, v_bc, v_compute_ok FROM (
    SELECT b.id,
           CASE WHEN b.overage_policy = 'block' THEN fabric_budget_hard(b.max_tokens_per_day, b.hard_threshold_percent, b.tokens_carried) - b.tokens_used - b.tokens_reserved END AS ht,
           CASE WHEN b.overage_policy = 'block' THEN fabric_budget_hard(b.max_cost_per_day_micros, b.hard_threshold_percent, b.cost_carried_micros) - b.cost_used_micros - b.cost_reserved_micros END AS hc,
           b.overage_policy <> 'block'
             OR coalesce(b.compute_ms_used + 1 <= fabric_budget_hard(b.max_compute_seconds_per_day * 1000, b.hard_threshold_percent, b.compute_ms_carried), true) AS compute_ok
      FROM budgets b
     WHERE b.tenant_id = p_tenant AND fabric_budget_covers(b, v_ws, v_owner)
     ORDER BY b.id FOR UPDATE
  ) l;
  IF v_res_id IS NOT NULL AND v_res_budgets IS DISTINCT FROM coalesce(v_budgets, '{}') THEN
    RETURN QUERY SELECT 0::bigint, 0::bigint, true;
    RETURN;
  END IF;
  v_ht := least(v_qt, v_bt);
  v_hc := least(v_qc, v_bc);
  IF (p_need_tokens <= 0 AND p_need_cost <= 0)
     OR (coalesce(v_ht >= greatest(p_need_tokens, 1), true) AND coalesce(v_hc >= greatest(p_need_cost, 1), true) AND coalesce(v_compute_ok, true)) THEN
    -- (nothing needed: the lease only outlives a later deadline, and grows if there is room)
    v_t := greatest(p_need_tokens, least(p_want_tokens, coalesce(greatest(v_ht, 0) / 2, p_want_tokens)));
    v_c := greatest(p_need_cost, least(p_want_cost, coalesce(greatest(v_hc, 0) / 2, p_want_cost)));
  ELSE
    -- a limit cannot cover the call: the general function refuses with its detail (FA429)
    v_check := p_key || ':check:' || gen_random_uuid()::text;
    PERFORM fabric_budget_reserve(p_tenant, jsonb_build_array(jsonb_build_object('agent_id', p_agent, 'task_id', NULL, 'key', v_check,
                                                                                  'tokens', p_need_tokens, 'cost_micros', p_need_cost)), p_expires_at);
    -- it did not refuse after all: give its hold back and lease exactly the need
    PERFORM fabric_budget_release(ARRAY(SELECT x.id FROM budget_reservations x WHERE x.tenant_id = p_tenant AND x.idempotency_key = v_check AND x.status = 'open'), 'released');
    v_t := p_need_tokens;
    v_c := p_need_cost;
  END IF;
  IF v_res_id IS NULL THEN
    INSERT INTO budget_reservations (tenant_id, agent_id, task_id, idempotency_key, budget_ids, tokens_requested, cost_requested_micros,
                                     tokens_reserved, cost_reserved_micros, expires_at)
    VALUES (p_tenant, p_agent, NULL, p_key, coalesce(v_budgets, '{}'), v_t, v_c, v_t, v_c, p_expires_at);
  ELSE
    UPDATE budget_reservations x
       SET tokens_requested = x.tokens_requested + v_t, cost_requested_micros = x.cost_requested_micros + v_c,
           tokens_reserved = x.tokens_reserved + v_t, cost_reserved_micros = x.cost_reserved_micros + v_c,
           expires_at = greatest(x.expires_at, p_expires_at)
     WHERE x.id = v_res_id;
  END IF;
  UPDATE agent_quotas q SET tokens_reserved = q.tokens_reserved + v_t, cost_reserved_micros = q.cost_reserved_micros + v_c, updated_at = now()
   WHERE q.agent_id = p_agent;
  IF v_budgets IS NOT NULL THEN
    UPDATE budgets b SET tokens_reserved = b.tokens_reserved + v_t, cost_reserved_micros = b.cost_reserved_micros + v_c, updated_at = now()
     WHERE b.id = ANY (v_budgets);
  END IF;
  IF fabric_gateway_alert_due(p_agent, v_budgets) THEN
    PERFORM fabric_budget_alerts(ARRAY[p_agent], v_budgets);
  END IF;
  RETURN QUERY SELECT v_t, v_c, false;
END
$$;

-- Settles a batch of leased calls in one statement (one commit): p_calls is
-- [{tenant, task, agent, lease, usage, event, request_id}] (usage: one fabric_budget_settle item,
-- or null when the call used nothing), p_release is [{tenant, key}] of leases to close after.
-- Every lock is taken first, in the budget writers' order, so batches from several processes
-- cannot deadlock. Per call: the usage row (once per key), what it used moved from its lease's
-- `reserved` to `used` (at most what the lease still holds — spend beyond that is charged
-- anyway, as fabric_gateway_settle charges spend beyond a call's reservation), the quota's and
-- covering budgets' counters, due alerts, the INSUFFICIENT_FUNDS stop when spend passed a
-- `block` hard limit, and the model.call event. Then the listed leases are released
-- (fabric_budget_release). Returns one {released_tokens, released_cost, exhausted, stopped,
-- agent_id} per call, in order.
CREATE FUNCTION fabric_gateway_settle_leased(p_calls jsonb, p_release jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
  c record;
  v_task record;
  v_lease record;
  v_ut bigint;
  v_uc bigint;
  v_ws uuid;
  v_owner uuid;
  v_rt bigint;
  v_rc bigint;
  v_cover uuid[];
  v_lease_budgets uuid[];
  v_stop jsonb;
  v_out jsonb := '[]'::jsonb;
BEGIN
  PERFORM 1 FROM tasks t
    JOIN jsonb_to_recordset(p_calls) AS x(tenant text, task uuid) ON t.tenant_id = x.tenant AND t.id = x.task
   ORDER BY t.id FOR NO KEY UPDATE OF t;
  PERFORM 1 FROM budget_reservations r
    JOIN (SELECT x.tenant, x.lease AS key FROM jsonb_to_recordset(p_calls) AS x(tenant text, lease text)
          UNION SELECT y.tenant, y.key FROM jsonb_to_recordset(coalesce(p_release, '[]')) AS y(tenant text, key text)) k
      ON r.tenant_id = k.tenant AND r.idempotency_key = k.key
   ORDER BY r.id FOR UPDATE OF r;
  PERFORM 1 FROM agent_quotas q WHERE q.agent_id IN (SELECT x.agent FROM jsonb_to_recordset(p_calls) AS x(agent uuid)) ORDER BY q.agent_id FOR UPDATE;
  PERFORM 1 FROM budgets b
   WHERE b.id IN (SELECT unnest(r.budget_ids) FROM budget_reservations r JOIN jsonb_to_recordset(p_calls) AS x(tenant text, lease text)
                     ON r.tenant_id = x.tenant AND r.idempotency_key = x.lease)
      OR EXISTS (SELECT 1 FROM jsonb_to_recordset(p_calls) AS x(tenant text, agent uuid) JOIN agents a ON a.id = x.agent AND a.tenant_id = x.tenant
                  WHERE b.tenant_id = x.tenant AND fabric_budget_covers(b, a.workspace_id, a.owner_user_id))
   ORDER BY b.id FOR UPDATE;

  FOR c IN SELECT * FROM jsonb_to_recordset(p_calls) AS x(tenant text, task uuid, agent uuid, lease text, usage jsonb, event jsonb, request_id text) LOOP
    SELECT t.agent_id, t.attempts INTO v_task FROM tasks t WHERE t.tenant_id = c.tenant AND t.id = c.task;
    IF c.usage IS NOT NULL AND v_task IS NULL THEN
      RAISE EXCEPTION USING ERRCODE = 'FA404', MESSAGE = 'not_found', DETAIL = json_build_object('resource', 'task', 'id', c.task)::text;
    END IF;
    v_ut := 0; v_uc := 0; v_rt := 0; v_rc := 0; v_ws := NULL; v_owner := NULL; v_cover := NULL; v_lease_budgets := NULL;
    IF c.usage IS NOT NULL THEN
      INSERT INTO agent_quota_usage (tenant_id, agent_id, workspace_id, user_id, task_id, attempt, session_id, dimension, model,
                                     input_tokens, output_tokens, quantity, cost_micros, billing_subject, period_start, idempotency_key)
      SELECT t.tenant_id, t.agent_id, a.workspace_id, a.owner_user_id, t.id, v_task.attempts, u.session_id, u.dimension,
             coalesce(u.model, a.config ->> 'model'), coalesce(u.input_tokens, 0), coalesce(u.output_tokens, 0),
             coalesce(u.quantity, 0), coalesce(u.cost_micros, 0), t.billing_subject,
             coalesce(q.period_start, date_trunc('month', now())), u.key
        FROM jsonb_to_record(c.usage) AS u(dimension text, model text, input_tokens bigint, output_tokens bigint, quantity bigint, cost_micros bigint, session_id uuid, key text)
        JOIN tasks t ON t.id = c.task AND t.tenant_id = c.tenant JOIN agents a ON a.id = t.agent_id LEFT JOIN agent_quotas q ON q.agent_id = t.agent_id
      ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
      RETURNING quantity, cost_micros, workspace_id, user_id INTO v_ut, v_uc, v_ws, v_owner;
      v_ut := coalesce(v_ut, 0);
      v_uc := coalesce(v_uc, 0);
    END IF;
    IF v_ut > 0 OR v_uc > 0 THEN
      UPDATE budget_reservations r
         SET tokens_reserved = r.tokens_reserved - least(v_ut, o.rt), cost_reserved_micros = r.cost_reserved_micros - least(v_uc, o.rc),
             tokens_committed = r.tokens_committed + v_ut, cost_committed_micros = r.cost_committed_micros + v_uc
        FROM (SELECT y.id, y.tokens_reserved AS rt, y.cost_reserved_micros AS rc FROM budget_reservations y
               WHERE y.tenant_id = c.tenant AND y.idempotency_key = c.lease AND y.agent_id = c.agent AND y.status = 'open') o
       WHERE r.id = o.id
      RETURNING least(v_ut, o.rt), least(v_uc, o.rc), r.budget_ids INTO v_rt, v_rc, v_lease_budgets;
      v_rt := coalesce(v_rt, 0);
      v_rc := coalesce(v_rc, 0);
      UPDATE agent_quotas q
         SET monthly_tokens_used = q.monthly_tokens_used + CASE WHEN q.agent_id = v_task.agent_id THEN v_ut ELSE 0 END,
             monthly_cost_used_usd = q.monthly_cost_used_usd + CASE WHEN q.agent_id = v_task.agent_id THEN v_uc ELSE 0 END / 1000000.0,
             tokens_reserved = q.tokens_reserved - CASE WHEN q.agent_id = c.agent THEN v_rt ELSE 0 END,
             cost_reserved_micros = q.cost_reserved_micros - CASE WHEN q.agent_id = c.agent THEN v_rc ELSE 0 END,
             updated_at = now()
       WHERE q.agent_id IN (v_task.agent_id, c.agent);
      SELECT array_agg(b.id) INTO v_cover FROM budgets b WHERE b.tenant_id = c.tenant AND fabric_budget_covers(b, v_ws, v_owner);
      UPDATE budgets b
         SET tokens_used = b.tokens_used + CASE WHEN b.id = ANY (coalesce(v_cover, '{}')) THEN v_ut ELSE 0 END,
             cost_used_micros = b.cost_used_micros + CASE WHEN b.id = ANY (coalesce(v_cover, '{}')) THEN v_uc ELSE 0 END,
             tokens_reserved = b.tokens_reserved - CASE WHEN b.id = ANY (coalesce(v_lease_budgets, '{}')) THEN v_rt ELSE 0 END,
             cost_reserved_micros = b.cost_reserved_micros - CASE WHEN b.id = ANY (coalesce(v_lease_budgets, '{}')) THEN v_rc ELSE 0 END,
             updated_at = now()
       WHERE b.id = ANY (coalesce(v_cover, '{}') || coalesce(v_lease_budgets, '{}'));
      IF fabric_gateway_alert_due(v_task.agent_id, v_cover) THEN
        PERFORM fabric_budget_alerts(ARRAY[v_task.agent_id], v_cover);
      END IF;
    END IF;
    v_stop := CASE WHEN c.usage IS NOT NULL THEN fabric_gateway_stop_if_exhausted(c.tenant, c.task, v_task.agent_id, c.request_id)
                   ELSE jsonb_build_object('exhausted', NULL, 'stopped', false) END;
    INSERT INTO system_events (tenant_id, agent_id, event_type, subject_type, subject_id, data, request_id)
    VALUES (c.tenant, c.agent, 'model.call', 'task', c.task::text,
            c.event || CASE WHEN (v_stop ->> 'stopped')::boolean THEN '{"stopped": "INSUFFICIENT_FUNDS"}'::jsonb ELSE '{}'::jsonb END, c.request_id);
    v_out := v_out || jsonb_build_array(v_stop || jsonb_build_object('released_tokens', v_rt, 'released_cost', v_rc, 'agent_id', v_task.agent_id));
  END LOOP;

  IF p_release IS NOT NULL AND jsonb_array_length(p_release) > 0 THEN
    PERFORM fabric_budget_release(ARRAY(SELECT r.id FROM budget_reservations r JOIN jsonb_to_recordset(p_release) AS y(tenant text, key text)
                                          ON r.tenant_id = y.tenant AND r.idempotency_key = y.key WHERE r.status = 'open'), 'released');
  END IF;
  RETURN v_out;
END
$$;
