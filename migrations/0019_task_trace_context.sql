-- Tracing (FR-TEL-2): a task carries the W3C trace context of the request that submitted it,
-- so the worker's attempt spans continue that trace — one task, one trace — though the worker
-- may be another process, later. NULL when the submit was not traced (tracing off).
ALTER TABLE tasks ADD COLUMN traceparent text;

-- A traced submit: fabric_submit_tasks (0004) unchanged, then the new rows stamped with the
-- trace context, in the same statement and transaction. Untraced submits keep calling
-- fabric_submit_tasks directly and pay nothing for this. Each statement of a plpgsql function
-- sees the rows the previous one inserted.
-- Params: as fabric_submit_tasks, plus p_traceparent (00-<trace id>-<span id>-<flags>).
CREATE FUNCTION fabric_submit_traced_tasks(p_tenant text, p_rows jsonb, p_aging_seconds int, p_actor text, p_request_id text, p_traceparent text)
RETURNS SETOF tasks
LANGUAGE plpgsql
AS $$
DECLARE
  v_ids uuid[];
BEGIN
  SELECT array_agg(s.id) INTO v_ids FROM fabric_submit_tasks(p_tenant, p_rows, p_aging_seconds, p_actor, p_request_id) s;
  RETURN QUERY
  UPDATE tasks SET traceparent = p_traceparent
   WHERE tenant_id = p_tenant AND id = ANY (v_ids)
  RETURNING *;
END
$$;
