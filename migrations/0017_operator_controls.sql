-- Operator controls (README "Operator controls").
--
-- runtime_settings: settings an operator changes without a restart, global (tenant_id NULL)
-- or per tenant. Every process caches them and reloads on NOTIFY fabric_operator (with a
-- polling fallback); src/operator/settings.ts validates the keys and values.
CREATE TABLE runtime_settings (
  tenant_id   text REFERENCES tenants (id) ON DELETE CASCADE,
  key         text NOT NULL CHECK (key ~ '^[a-z][a-z0-9_]{0,62}$'),
  value       jsonb NOT NULL,
  updated_by  text NOT NULL,
  updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX runtime_settings_scope_key ON runtime_settings ((coalesce(tenant_id, '*')), key);

-- kill_switches: while a row exists, no task of its tenant (tenant_id NULL: of any tenant)
-- starts: fabric_claim_tasks skips them and submits are refused (kill_switch_engaged).
-- mode drain lets running tasks finish; stop asked them to cancel when it was engaged.
CREATE TABLE kill_switches (
  tenant_id   text REFERENCES tenants (id) ON DELETE CASCADE,
  mode        text NOT NULL CHECK (mode IN ('drain', 'stop')),
  reason      text NOT NULL,
  engaged_by  text NOT NULL,
  engaged_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX kill_switches_scope ON kill_switches ((coalesce(tenant_id, '*')));

-- The claim of migration 0004, unchanged but for the two kill-switch checks marked below.
CREATE OR REPLACE FUNCTION fabric_claim_tasks(p_worker text, p_limit int, p_lease_seconds int, p_aging_seconds int)
RETURNS TABLE (o_promoted int, o_task tasks, o_waited float8, o_depends_on text[])
LANGUAGE plpgsql
AS $$
DECLARE
  v_agents uuid[];
  v_picks uuid[];
BEGIN
  WITH promoted AS (
    UPDATE tasks SET status = 'queued', ready_at = now(), sort_key = now() + make_interval(secs => priority * p_aging_seconds),
           revision = revision + 1, updated_at = now()
     WHERE id IN (SELECT id FROM tasks WHERE status = 'waiting' AND pending_dependencies = 0 AND run_at <= now()
                   ORDER BY run_at LIMIT 1000 FOR UPDATE SKIP LOCKED)
    RETURNING id, tenant_id, agent_id, revision, attempts
  ), events AS (
    INSERT INTO system_events (tenant_id, agent_id, event_type, subject_type, subject_id, data)
    SELECT tenant_id, agent_id, 'task.queued', 'task', id::text, jsonb_build_object('status', 'queued', 'revision', revision, 'attempt', attempts)
      FROM promoted
  )
  SELECT count(*)::int INTO o_promoted FROM promoted;
  o_task := NULL;
  o_waited := NULL;
  o_depends_on := NULL;
  RETURN NEXT;

  -- a global kill switch: nothing starts anywhere
  IF EXISTS (SELECT 1 FROM kill_switches WHERE tenant_id IS NULL) THEN
    RETURN;
  END IF;

  WITH RECURSIVE ready(agent_id) AS (
    (SELECT t.agent_id FROM tasks t WHERE t.status = 'queued' ORDER BY t.agent_id LIMIT 1)
    UNION ALL
    SELECT (SELECT t.agent_id FROM tasks t WHERE t.status = 'queued' AND t.agent_id > r.agent_id ORDER BY t.agent_id LIMIT 1)
      FROM ready r WHERE r.agent_id IS NOT NULL
  ), locked AS (
    SELECT s.agent_id FROM agent_queue_state s
      JOIN agents a ON a.id = s.agent_id
     WHERE s.agent_id IN (SELECT ready.agent_id FROM ready WHERE ready.agent_id IS NOT NULL)
       -- paused, deleted or busy agents must not fill the LIMIT and starve the rest
       AND a.status = 'active' AND a.deleted_at IS NULL
       -- a tenant's kill switch: its agents are skipped like paused ones
       AND NOT EXISTS (SELECT 1 FROM kill_switches k WHERE k.tenant_id = a.tenant_id)
       AND (SELECT count(*) FROM tasks x WHERE x.agent_id = a.id AND x.status = 'running') < a.max_concurrency
     ORDER BY s.last_claimed_at
     LIMIT greatest(p_limit, 16)
     FOR UPDATE OF s SKIP LOCKED
  )
  SELECT array_agg(locked.agent_id) INTO v_agents FROM locked;
  IF v_agents IS NULL THEN
    RETURN;
  END IF;

  WITH free AS (
    SELECT a.id AS agent_id, s.last_claimed_at,
           a.max_concurrency - (SELECT count(*) FROM tasks x WHERE x.agent_id = a.id AND x.status = 'running') AS slots
      FROM agents a JOIN agent_queue_state s ON s.agent_id = a.id
     WHERE a.id = ANY (v_agents) AND a.status = 'active' AND a.deleted_at IS NULL
  ), picks AS (
    SELECT t.id, t.priority, t.ready_at, f.last_claimed_at,
           row_number() OVER (PARTITION BY f.agent_id ORDER BY t.sort_key, t.id) AS round
      FROM free f
      CROSS JOIN LATERAL (
        SELECT x.id, x.priority, x.ready_at, x.sort_key FROM tasks x
         WHERE x.agent_id = f.agent_id AND x.status = 'queued'
         ORDER BY x.sort_key, x.id LIMIT greatest(f.slots, 0)
      ) t
  ), ordered AS (
    SELECT picks.id FROM picks
     ORDER BY round,
              greatest(0, priority - floor(extract(epoch FROM now() - ready_at) / p_aging_seconds)::int),
              last_claimed_at, ready_at, picks.id
     LIMIT p_limit
  )
  SELECT array_agg(ordered.id) INTO v_picks FROM ordered;
  IF v_picks IS NULL THEN
    RETURN;
  END IF;

  RETURN QUERY
  WITH before AS (
    SELECT t.id, extract(epoch FROM clock_timestamp() - t.ready_at)::float8 AS waited FROM tasks t WHERE t.id = ANY (v_picks)
  ), started AS (
    -- joined to the picks, so the plan looks each up by primary key (with "id = ANY" the
    -- generic plan scanned every ready task of the partial index instead)
    UPDATE tasks t SET status = 'running', attempts = t.attempts + 1, revision = t.revision + 1,
           lease_owner = p_worker, lease_expires_at = now() + make_interval(secs => p_lease_seconds),
           started_at = coalesce(t.started_at, now()), updated_at = now()
      FROM unnest(v_picks) AS p(id)
     WHERE t.id = p.id AND t.status = 'queued'
     RETURNING t.*
  ), attempt_rows AS (
    INSERT INTO task_attempts (task_id, attempt, worker_id) SELECT started.id, started.attempts, p_worker FROM started
  ), served AS (
    UPDATE agent_queue_state SET last_claimed_at = clock_timestamp() WHERE agent_id IN (SELECT started.agent_id FROM started)
  ), events AS (
    INSERT INTO system_events (tenant_id, agent_id, event_type, subject_type, subject_id, data)
    SELECT started.tenant_id, started.agent_id, 'task.running', 'task', started.id::text,
           jsonb_build_object('status', 'running', 'revision', started.revision, 'attempt', started.attempts)
      FROM started ORDER BY started.id
  )
  SELECT NULL::int, started::tasks, before.waited,
         (SELECT coalesce(array_agg(d.depends_on::text ORDER BY d.depends_on), '{}') FROM task_dependencies d WHERE d.task_id = started.id)
    FROM started JOIN before ON before.id = started.id;
END
$$;
