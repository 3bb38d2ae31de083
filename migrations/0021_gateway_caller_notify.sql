-- The model gateway keeps each caller's checked session/task/agent row in memory
-- (src/gateway/caller-cache.ts) instead of reading it on every call. It must hear at once when
-- a cached row stops being callable, whoever wrote the change — the queue finishing or
-- retrying a task, a cancel, an INSUFFICIENT_FUNDS stop, a kill switch, a worker ending a
-- session, the lease reaper, an erasure, an operator's SQL. So the announcement is made by the
-- tables themselves: NOTIFY fabric_gateway_callers, delivered at commit, payload
-- `task:<id>` or `agent:<id>`. Only changes to a row that may be cached fire (a running task
-- being cancelled, finishing or retried; a running session ending; an agent's models), so a
-- task attempt costs one or two notices, and heartbeats none.

CREATE FUNCTION fabric_gateway_caller_changed() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
  IF TG_TABLE_NAME = 'agents' THEN
    PERFORM pg_notify('fabric_gateway_callers', 'agent:' || OLD.id::text);
  ELSIF TG_TABLE_NAME = 'agent_sessions' THEN
    PERFORM pg_notify('fabric_gateway_callers', 'task:' || OLD.task_id::text);
  ELSE
    PERFORM pg_notify('fabric_gateway_callers', 'task:' || OLD.id::text);
  END IF;
  RETURN NULL;
END
$$;

-- A running task that stops running, starts being cancelled or begins another attempt.
CREATE TRIGGER tasks_gateway_caller AFTER UPDATE OF status, cancel_requested, attempts ON tasks
  FOR EACH ROW
  WHEN (OLD.status = 'running' AND (NEW.status IS DISTINCT FROM OLD.status
                                    OR NEW.cancel_requested IS DISTINCT FROM OLD.cancel_requested
                                    OR NEW.attempts IS DISTINCT FROM OLD.attempts))
  EXECUTE FUNCTION fabric_gateway_caller_changed();
CREATE TRIGGER tasks_gateway_caller_gone AFTER DELETE ON tasks
  FOR EACH ROW WHEN (OLD.status = 'running')
  EXECUTE FUNCTION fabric_gateway_caller_changed();

-- A running session that ends (completed, failed, killed…) or is deleted.
CREATE TRIGGER agent_sessions_gateway_caller AFTER UPDATE OF status ON agent_sessions
  FOR EACH ROW WHEN (OLD.status = 'running' AND NEW.status IS DISTINCT FROM OLD.status)
  EXECUTE FUNCTION fabric_gateway_caller_changed();
CREATE TRIGGER agent_sessions_gateway_caller_gone AFTER DELETE ON agent_sessions
  FOR EACH ROW WHEN (OLD.status = 'running')
  EXECUTE FUNCTION fabric_gateway_caller_changed();

-- An agent whose models, workspace, owner or status change, or that is deleted.
CREATE TRIGGER agents_gateway_caller AFTER UPDATE OF config, workspace_id, owner_user_id, status, deleted_at ON agents
  FOR EACH ROW
  WHEN (NEW.config IS DISTINCT FROM OLD.config OR NEW.workspace_id IS DISTINCT FROM OLD.workspace_id
        OR NEW.owner_user_id IS DISTINCT FROM OLD.owner_user_id OR NEW.status IS DISTINCT FROM OLD.status
        OR NEW.deleted_at IS DISTINCT FROM OLD.deleted_at)
  EXECUTE FUNCTION fabric_gateway_caller_changed();
CREATE TRIGGER agents_gateway_caller_gone AFTER DELETE ON agents
  FOR EACH ROW EXECUTE FUNCTION fabric_gateway_caller_changed();
