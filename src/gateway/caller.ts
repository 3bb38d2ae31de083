import type { TokenVerifier } from '../auth/index.js';
import type { Queryable } from '../db/index.js';
import { FabricError, forbidden, unauthorized } from '../errors/index.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Who is calling, from the bearer token alone (no database). */
export interface TokenCaller {
  tenantId: string;
  agentId: string;
  /** The sandbox session (`sid` claim) — or null for an agent token, which names its task in X-Fabric-Task-Id. */
  sessionId: string | null;
  taskId: string | null;
  /** When the token expires (ms since the epoch): the caller's deadline. */
  expiresAt: number;
}

/** The call's attribution: agent, session, task, user, workspace and tenant, and the agent's configured models. */
export interface Caller extends TokenCaller {
  taskId: string;
  attempt: number;
  workspaceId: string;
  userId: string | null;
  configured: string[];
  /** The task's stored trace context (tracing), when the read that checked the caller carried it. */
  traceparent?: string | null;
}

/** Verifies `Authorization: Bearer <session or agent token>`; a provider key is never accepted here. */
export async function identify(verify: TokenVerifier, authorization: string | undefined, taskHeader: string | undefined): Promise<TokenCaller> {
  const m = /^Bearer +([A-Za-z0-9_\-.=]+)$/i.exec(authorization?.trim() ?? '');
  if (!m)
    throw unauthorized('missing_token', 'The model gateway needs "Authorization: Bearer <token>": inside a sandbox that is OPENAI_API_KEY (the session token); elsewhere an agent token.');
  const p = await verify(m[1]!);
  if (p.role !== 'agent') throw forbidden(`The model gateway serves agents: use the session token (OPENAI_API_KEY) or an agent token, not a "${p.role}" token.`);
  const sid = p.claims.sid;
  if (sid !== undefined && (typeof sid !== 'string' || !UUID.test(sid))) throw unauthorized('invalid_token', 'The token\'s sid claim is not a session id.');
  if (!UUID.test(p.sub)) throw unauthorized('invalid_token', 'An agent token\'s sub must be the agent id.');
  const exp = typeof p.claims.exp === 'number' ? p.claims.exp * 1000 : Date.now();
  if (sid) return { tenantId: p.tenantId, agentId: p.sub, sessionId: sid, taskId: null, expiresAt: exp };
  if (!taskHeader || !UUID.test(taskHeader))
    throw new FabricError(400, 'task_required', 'An agent token names the running task the call is for in the X-Fabric-Task-Id header (a session token carries it already).');
  return { tenantId: p.tenantId, agentId: p.sub, sessionId: null, taskId: taskHeader, expiresAt: exp };
}

export interface CallerRow {
  session_id: string | null;
  session_status: string | null;
  task_id: string;
  task_status: string;
  cancel_requested: boolean;
  stop_error: { code?: string } | null;
  attempts: number;
  workspace_id: string;
  owner_user_id: string | null;
  model: string;
  models: string[] | null;
  /** The task still holds what it reserved at submit (the per-call path hands it back). Only from readCaller. */
  holds_own?: boolean;
  /** The task's trace context. Only from readCaller. */
  traceparent?: string | null;
}

const COLUMNS = `t.id AS task_id, t.status AS task_status, t.cancel_requested, t.stop_error, t.attempts, t.traceparent,
                 a.workspace_id, a.owner_user_id, a.config ->> 'model' AS model, a.config -> 'models' AS models,
                 EXISTS (SELECT 1 FROM budget_reservations x WHERE x.task_id = t.id AND x.tenant_id = t.tenant_id AND x.status = 'open') AS holds_own`;

/**
 * The caller's session, task and agent, as stored (undefined: unknown session or task). With
 * `lock` the task row is locked (the budget writers' lock order starts there), so a stop cannot
 * slip between the check and the reservation.
 */
export async function readCaller(q: Queryable, t: TokenCaller, lock: boolean): Promise<CallerRow | undefined> {
  const forUpdate = lock ? ' FOR NO KEY UPDATE OF t' : '';
  const r = t.sessionId
    ? await q.query<CallerRow>(
        `SELECT s.id AS session_id, s.status AS session_status, ${COLUMNS}
           FROM agent_sessions s JOIN tasks t ON t.id = s.task_id JOIN agents a ON a.id = t.agent_id
          WHERE s.id = $1 AND s.tenant_id = $2 AND s.agent_id = $3${forUpdate}`,
        [t.sessionId, t.tenantId, t.agentId],
      )
    : await q.query<CallerRow>(
        `SELECT NULL AS session_id, NULL AS session_status, ${COLUMNS}
           FROM tasks t JOIN agents a ON a.id = t.agent_id
          WHERE t.id = $1 AND t.tenant_id = $2 AND t.agent_id = $3${forUpdate}`,
        [t.taskId, t.tenantId, t.agentId],
      );
  return r.rows[0];
}

/** The caller read and checked: a session that is not running, or a task that is not running or is being stopped, is refused. */
export async function loadCaller(q: Queryable, t: TokenCaller, lock: boolean): Promise<Caller & { holdsOwn: boolean }> {
  const row = await readCaller(q, t, lock);
  return { ...checkCaller(t, row), holdsOwn: row?.holds_own === true };
}

/** The caller's row (none: unknown session or task) checked: refused unless its session and task are running. */
export function checkCaller(t: TokenCaller, row: CallerRow | undefined): Caller {
  if (!row) {
    if (t.sessionId) throw unauthorized('session_ended', `Session ${t.sessionId} is not known to this fabric; its token cannot reach the model gateway.`);
    throw new FabricError(404, 'task_not_found', `Task ${t.taskId} is not a task of agent ${t.agentId}; name one of its running tasks in X-Fabric-Task-Id.`);
  }
  if (row.session_id && row.session_status !== 'running')
    throw unauthorized('session_ended', `Session ${row.session_id} has ended (${row.session_status}); its token no longer reaches the model gateway. Each task attempt gets a fresh session token.`);
  if (row.task_status !== 'running' || row.cancel_requested) {
    const why = row.stop_error?.code === 'INSUFFICIENT_FUNDS' ? 'was stopped with INSUFFICIENT_FUNDS (a hard budget limit was passed)' : row.task_status !== 'running' ? `is ${row.task_status}` : 'is being cancelled';
    throw forbidden(`Task ${row.task_id} ${why}; it may make no further model calls.`, 'task_stopped');
  }
  const configured = [row.model, ...(Array.isArray(row.models) ? row.models : [])];
  return {
    ...t,
    taskId: row.task_id,
    attempt: row.attempts,
    workspaceId: row.workspace_id,
    userId: row.owner_user_id,
    configured,
    ...(row.traceparent !== undefined ? { traceparent: row.traceparent } : {}),
  };
}
