-- Tracing (FR-TEL-2): a task carries the W3C trace context of the request that submitted it,
-- so the worker's attempt spans continue that trace — one task, one trace — though the worker
-- may be another process, later. NULL when the submit was not traced (tracing off).
--
-- The value comes in through a transaction-local setting read by the column's default, so
-- the task rows are written once, by fabric_submit_tasks (0004) unchanged: stamping them with
-- an UPDATE afterwards wrote every traced task twice (a measurable cost in bench/overhead).
ALTER TABLE tasks ADD COLUMN traceparent text DEFAULT nullif(current_setting('fabric.traceparent', true), '');

-- A traced submit: the setting for this submit only, the submit, the setting cleared (a later
-- insert in the caller's transaction must not inherit it). Untraced submits keep calling
-- fabric_submit_tasks directly.
-- Params: as fabric_submit_tasks, plus p_traceparent (00-<trace id>-<span id>-<flags>).
CREATE FUNCTION fabric_submit_traced_tasks(p_tenant text, p_rows jsonb, p_aging_seconds int, p_actor text, p_request_id text, p_traceparent text)
RETURNS SETOF tasks
LANGUAGE plpgsql
AS $$
BEGIN
  PERFORM set_config('fabric.traceparent', p_traceparent, true);
  RETURN QUERY SELECT * FROM fabric_submit_tasks(p_tenant, p_rows, p_aging_seconds, p_actor, p_request_id);
  PERFORM set_config('fabric.traceparent', '', true);
END
$$;
