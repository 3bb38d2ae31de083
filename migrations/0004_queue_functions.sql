-- The queue's two hot paths as functions, so each is one round trip to the database:
-- fabric_submit_tasks (a producer's submit; without an idempotency key, its own
-- transaction) instead of five, fabric_claim_tasks (a worker's claim) instead of seven, and
-- fabric_complete_tasks (a worker's batch of completions) instead of five.
-- On a 2-core machine each round trip costs the client a socket write and a wake-up of the
-- server process, which dominated the cost of both.
--
-- Submission. Each step is its
-- own statement inside the function, so under READ COMMITTED the depth count runs on a
-- snapshot taken after the agents' locks were granted and sees every earlier submit.
--
-- Errors a caller can cause are raised with SQLSTATE class FA and a JSON DETAIL; the
-- application turns them into its 4xx answers (src/queue/submit.ts).
--   FA404 agent_not_found       {"agent_id"}
--   FA404 dependency_not_found  {"task_id"}
--   FA429 queue_full            {"agent_id", "depth", "max_queue_depth"}
CREATE FUNCTION fabric_submit_tasks(p_tenant text, p_rows jsonb, p_aging_seconds int, p_actor text, p_request_id text)
RETURNS SETOF tasks
LANGUAGE plpgsql
AS $$
DECLARE
  v_agents uuid[];
  v_deps uuid[];
  v_missing uuid;
  v_locked int;
  v_full record;
BEGIN
  -- 1. lock the agents in id order (concurrent submits never deadlock)
  SELECT array_agg(DISTINCT (r ->> 'agent_id')::uuid) INTO v_agents FROM jsonb_array_elements(p_rows) r;
  SELECT count(*) INTO v_locked FROM (
    SELECT id FROM agents WHERE tenant_id = p_tenant AND id = ANY (v_agents) AND deleted_at IS NULL ORDER BY id FOR NO KEY UPDATE
  ) l;
  IF v_locked < cardinality(v_agents) THEN
    SELECT a INTO v_missing FROM unnest(v_agents) a
     WHERE NOT EXISTS (SELECT 1 FROM agents WHERE tenant_id = p_tenant AND id = a AND deleted_at IS NULL)
     ORDER BY a LIMIT 1;
    RAISE EXCEPTION USING ERRCODE = 'FA404', MESSAGE = 'agent_not_found', DETAIL = json_build_object('agent_id', v_missing)::text;
  END IF;

  -- 2. every agent's queue bound (FR-11): queued and waiting tasks, plus the new ones
  SELECT a.id, a.max_queue_depth, d.depth INTO v_full
    FROM agents a
    JOIN (SELECT (r ->> 'agent_id')::uuid AS agent_id, count(*) AS adding FROM jsonb_array_elements(p_rows) r GROUP BY 1) n ON n.agent_id = a.id
    CROSS JOIN LATERAL (SELECT count(*) AS depth FROM tasks t WHERE t.agent_id = a.id AND t.status IN ('queued', 'waiting')) d
   WHERE d.depth + n.adding > a.max_queue_depth
   ORDER BY a.id LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'FA429', MESSAGE = 'queue_full',
      DETAIL = json_build_object('agent_id', v_full.id, 'depth', v_full.depth, 'max_queue_depth', v_full.max_queue_depth)::text;
  END IF;

  -- 3. dependencies exist in this tenant; locked FOR SHARE, so one that is finishing right
  --    now either finishes first (we see its end state) or waits for us (it sees us)
  SELECT array_agg(DISTINCT d::uuid) INTO v_deps
    FROM jsonb_array_elements(p_rows) r, jsonb_array_elements_text(r -> 'depends_on') d;
  IF v_deps IS NOT NULL THEN
    SELECT count(*) INTO v_locked FROM (
      SELECT id FROM tasks WHERE tenant_id = p_tenant AND id = ANY (v_deps) ORDER BY id FOR SHARE
    ) l;
    IF v_locked < cardinality(v_deps) THEN
      SELECT d INTO v_missing FROM unnest(v_deps) d
       WHERE NOT EXISTS (SELECT 1 FROM tasks WHERE tenant_id = p_tenant AND id = d)
       ORDER BY d LIMIT 1;
      RAISE EXCEPTION USING ERRCODE = 'FA404', MESSAGE = 'dependency_not_found', DETAIL = json_build_object('task_id', v_missing)::text;
    END IF;
  END IF;

  -- 4. the tasks (queued; waiting on dependencies or run_at; failed at once when a
  --    dependency already failed), the agents' claim rows, dependency rows, one event each
  RETURN QUERY
  WITH src AS (
    SELECT r.*, dep.pending, dep.failed_id, dep.failed_status
      FROM jsonb_to_recordset(p_rows) AS r(id uuid, agent_id uuid, type text, payload jsonb, metadata jsonb, priority smallint,
           run_at timestamptz, timeout_seconds int, retry_on_timeout boolean, max_retries int, estimated_tokens bigint, depends_on uuid[])
      CROSS JOIN LATERAL (
        SELECT count(*) FILTER (WHERE t.status <> 'completed') AS pending,
               (array_agg(t.id ORDER BY d.ord) FILTER (WHERE t.status IN ('failed', 'cancelled', 'timed_out', 'dead_lettered')))[1] AS failed_id,
               (array_agg(t.status ORDER BY d.ord) FILTER (WHERE t.status IN ('failed', 'cancelled', 'timed_out', 'dead_lettered')))[1] AS failed_status
          FROM unnest(r.depends_on) WITH ORDINALITY AS d(id, ord) JOIN tasks t ON t.id = d.id
      ) dep
  ), prepared AS (
    SELECT src.*,
           CASE WHEN failed_id IS NOT NULL THEN 'failed'
                WHEN pending > 0 OR run_at > now() THEN 'waiting'
                ELSE 'queued' END AS status
      FROM src
  ), ins AS (
    INSERT INTO tasks (id, tenant_id, agent_id, type, payload, metadata, priority, status, run_at, ready_at, sort_key,
                       timeout_seconds, retry_on_timeout, max_retries, estimated_tokens, pending_dependencies, error,
                       created_by, finished_at)
    SELECT r.id, p_tenant, r.agent_id, r.type, r.payload, r.metadata, r.priority, r.status, coalesce(r.run_at, now()),
           CASE WHEN r.status = 'queued' THEN now() END,
           CASE WHEN r.status = 'queued' THEN now() + make_interval(secs => r.priority * p_aging_seconds) END,
           r.timeout_seconds, r.retry_on_timeout, r.max_retries, r.estimated_tokens, r.pending,
           CASE WHEN r.failed_id IS NOT NULL THEN jsonb_build_object('code', 'dependency_failed',
             'message', format('Dependency %s ended %s.', r.failed_id, r.failed_status), 'dependency', r.failed_id) END,
           p_actor, CASE WHEN r.status = 'failed' THEN now() END
      FROM prepared r
    RETURNING *
  ), claim_rows AS (
    INSERT INTO agent_queue_state (agent_id) SELECT DISTINCT agent_id FROM ins ON CONFLICT DO NOTHING
  ), dependency_rows AS (
    INSERT INTO task_dependencies (task_id, depends_on) SELECT r.id, d FROM prepared r, unnest(r.depends_on) d
  ), events AS (
    INSERT INTO system_events (tenant_id, agent_id, event_type, subject_type, subject_id, data, request_id)
    SELECT tenant_id, agent_id, 'task.' || status, 'task', id::text,
           jsonb_strip_nulls(jsonb_build_object('status', status, 'revision', revision, 'type', type,
             'priority', (ARRAY['critical', 'high', 'normal', 'low'])[priority + 1], 'error', error)), p_request_id
      FROM ins ORDER BY id
  )
  SELECT * FROM ins;
END
$$;

-- Claiming. Steps as in src/queue/claim.ts documents them:
-- 1. waiting tasks whose run_at (or retry backoff) has passed and that wait on nothing
--    become queued (many workers may run this at once: SKIP LOCKED);
-- 2. agents with ready work, found with a loose index scan (one index probe per agent rather
--    than a pass over every queued task), that can take a task now (active, below their
--    max_concurrency), least recently served first, whose claim lock this worker can take
--    right now (SKIP LOCKED);
-- 3. for those agents: free concurrency slots, then that many tasks per agent in claim
--    order; across agents one round at a time (every agent's first task before any agent's
--    second), higher effective priority first (aging lowers the priority number by one per
--    p_aging_seconds waited), least recently served agent first;
-- 4. the picked tasks start: lease, attempt row, the agents' last_claimed_at, one event each.
-- The first row returned is a summary (o_promoted = tasks promoted in step 1, o_task NULL);
-- the claimed tasks follow.
CREATE FUNCTION fabric_claim_tasks(p_worker text, p_limit int, p_lease_seconds int, p_aging_seconds int)
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

-- Completing a worker's batch of successful attempts, fenced per task (still running, the
-- same attempt, the same worker: a stale worker cannot overwrite a newer attempt), with the
-- attempt rows and one event each; then the dependents of the completed tasks move on (in
-- a second statement, whose snapshot includes dependents that committed while the first
-- waited on their FOR SHARE locks). Returns the completed tasks; o_released counts the
-- dependents that became queued (the same on every row).
CREATE FUNCTION fabric_complete_tasks(p_rows jsonb, p_aging_seconds int)
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
