import { randomUUID } from 'node:crypto';
import type { Db, Queryable } from '../db/index.js';
import type { Notifier } from '../notify/index.js';
import { logger } from '../telemetry/index.js';
import { describeApprovers, openApproval, requestKey, useApproved, type Approval } from './approvals.js';
import { approversOf, compilePolicy, type AgentAttrs, type CompiledPolicy } from './compile.js';
import { DecisionLog, type DecisionLogOptions, type Door } from './decision-log.js';
import { evaluate, sortPolicies, type Verdict } from './evaluate.js';
import { policyDecisionsTotal, policyEvaluationSeconds } from './metrics.js';
import { normalizeResource } from './normalize.js';
import type { Decision } from './schemas.js';
import { loadPolicyRecords, POLICY_CHANNEL } from './store.js';

export interface PolicyEngineOptions {
  db: Db;
  /** Approvers are told about new requests here. */
  notifier?: Notifier | undefined;
  /** Longest agent attributes, and a tenant's policies when a change notice was missed, are trusted (`FABRIC_POLICY_CACHE_SECONDS`, default 5). */
  cacheSeconds?: number;
  /** Default wait of an approval request (`FABRIC_APPROVAL_EXPIRES_SECONDS`, default 3600). */
  approvalExpiresSeconds?: number;
  decisionLog?: DecisionLogOptions;
}

/** One check at a door. */
export interface CheckRequest {
  tenantId: string;
  door: Door;
  actor: { sub: string; role: string };
  /** The agent the action is for (its own check, its task, its sandbox, its model call). */
  agentId?: string | null | undefined;
  taskId?: string | null | undefined;
  action: string;
  resource: string;
  context?: Record<string, unknown> | undefined;
}

/** The answer of POST /api/policy/check and of every door. */
export interface CheckResult {
  decision: Decision;
  policy_id: string | null;
  policy_version: number | null;
  rule: { index: number; action_pattern: string; effect: Decision; scope: string } | null;
  reason: string;
  /** require_approval: the request to wait for; allow after an approval: the approval used. */
  approval?: Approval | undefined;
}

interface TenantEntry {
  policies: CompiledPolicy[];
  loadedAt: number;
  generation: number;
  loading: Promise<CompiledPolicy[]> | undefined;
  actions: Map<string, boolean>;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * The policy engine of one process: each tenant's policies compiled once and kept in memory,
 * agent attributes cached briefly, every change applied within a second (one LISTEN on
 * POLICY_CHANNEL reloads the cached tenants; a missed notice is covered by `cacheSeconds`).
 * Evaluation is synchronous and allocation-light; the decision log is written in batches.
 */
export class PolicyEngine {
  readonly log: DecisionLog;
  readonly approvalExpiresSeconds: number;
  private readonly tenants = new Map<string, TenantEntry>();
  private readonly agents = new Map<string, { attrs: AgentAttrs | undefined; at: number }>();
  private readonly cacheMs: number;
  private generation = 0;
  private unlisten: Promise<() => Promise<void>> | undefined;

  constructor(private readonly o: PolicyEngineOptions) {
    this.cacheMs = (o.cacheSeconds ?? 5) * 1000;
    this.approvalExpiresSeconds = o.approvalExpiresSeconds ?? 3600;
    this.log = new DecisionLog(o.db, o.decisionLog);
  }

  /** Starts listening for changes (idempotent; the first check starts it too). */
  start(): Promise<unknown> {
    this.unlisten ??= this.o.db.listen(POLICY_CHANNEL, () => void this.changed(), (live) => live && void this.changed()).catch((err: unknown) => {
      logger().error({ err }, `policy engine: LISTEN ${POLICY_CHANNEL} failed; changes apply after FABRIC_POLICY_CACHE_SECONDS`);
      return async () => {};
    });
    return this.unlisten;
  }

  /**
   * A change somewhere: reload every cached tenant now (the old rules serve until the new ones
   * are in). Resolves when they are — a writer in this process awaits it, so its change is in
   * force here, even for open egress sessions, before it answers.
   */
  async changed(): Promise<void> {
    this.generation++;
    await Promise.all([...this.tenants].map(([tenantId, e]) => this.catchUp(tenantId, e)));
  }

  /** Until the tenant's rules are of the current generation (a load already running may predate it); gives up on a failed load. */
  private async catchUp(tenantId: string, e: TenantEntry): Promise<void> {
    for (let i = 0; i < 3 && e.generation !== this.generation; i++) {
      try {
        await (e.loading ?? this.reload(this.o.db, tenantId, e));
      } catch {
        return;
      }
    }
  }

  private reload(q: Queryable, tenantId: string, e: TenantEntry): Promise<CompiledPolicy[]> {
    const generation = this.generation;
    const loading = loadPolicyRecords(q, tenantId).then((records) => {
      e.policies = sortPolicies(records.map((r) => ({ ...compilePolicy(r), record: r })));
      e.loadedAt = Date.now();
      e.generation = generation;
      e.actions.clear();
      e.loading = undefined;
      // a change announced while this load ran may not be in it: load once more
      if (this.generation !== generation) void this.reload(this.o.db, tenantId, e).catch(() => {});
      return e.policies;
    });
    e.loading = loading;
    loading.catch(() => {
      if (e.loading === loading) e.loading = undefined;
    });
    return loading;
  }

  /** The tenant's compiled policies, loaded (or reloaded after a change) when needed. */
  async policiesFor(q: Queryable, tenantId: string): Promise<CompiledPolicy[]> {
    void this.start();
    let e = this.tenants.get(tenantId);
    if (!e) {
      e = { policies: [], loadedAt: 0, generation: -1, loading: undefined, actions: new Map() };
      this.tenants.set(tenantId, e);
      return this.reload(q, tenantId, e);
    }
    // a transaction must not wait for a load queued on the database behind it (PGlite has one connection)
    if (e.loading) return q === this.o.db ? e.loading : this.reload(q, tenantId, e);
    if (e.generation !== this.generation || Date.now() - e.loadedAt > this.cacheMs) return this.reload(q, tenantId, e);
    return e.policies;
  }

  /** What is in memory now, without waiting (the egress proxy's path); a stale set triggers a reload in the background. */
  private cachedPolicies(tenantId: string): CompiledPolicy[] {
    const e = this.tenants.get(tenantId);
    if (!e) return [];
    if (!e.loading && Date.now() - e.loadedAt > this.cacheMs) void this.reload(this.o.db, tenantId, e).catch(() => {});
    return e.policies;
  }

  /** Whether any rule of the tenant could match `action` (the submit hook skips its work when none can). */
  async hasRulesFor(q: Queryable, tenantId: string, action: string): Promise<boolean> {
    const policies = await this.policiesFor(q, tenantId);
    const e = this.tenants.get(tenantId)!;
    let has = e.actions.get(action);
    if (has === undefined) {
      has = policies.some((p) => p.record.enabled && p.rules.some((r) => r.action(action)));
      e.actions.set(action, has);
    }
    return has;
  }

  /** The agent's attributes for conditions and scopes (cached for cacheSeconds); undefined when it does not exist. */
  async agentAttrs(q: Queryable, tenantId: string, agentId: string): Promise<AgentAttrs | undefined> {
    if (!UUID.test(agentId)) return undefined;
    const key = `${tenantId}/${agentId.toLowerCase()}`;
    const hit = this.agents.get(key);
    if (hit && Date.now() - hit.at < this.cacheMs) return hit.attrs;
    const r = await q.query<{ id: string; name: string; workspace_id: string; owner_user_id: string | null; status: string; config: Record<string, unknown> }>(
      'SELECT id, name, workspace_id, owner_user_id, status, config FROM agents WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL',
      [tenantId, agentId],
    );
    const row = r.rows[0];
    const c = row?.config ?? {};
    const attrs: AgentAttrs | undefined = row && {
      id: row.id,
      name: row.name,
      workspace_id: row.workspace_id,
      owner_user_id: row.owner_user_id,
      status: row.status,
      model: typeof c.model === 'string' ? c.model : '',
      isolation_level: String((c.isolation as { level?: unknown } | undefined)?.level ?? 'none'),
      tools: Array.isArray(c.tools) ? (c.tools as string[]) : [],
      policies: Array.isArray(c.policies) ? (c.policies as string[]) : [],
    };
    if (this.agents.size > 50_000) this.agents.clear();
    this.agents.set(key, { attrs, at: Date.now() });
    return attrs;
  }

  /** Evaluates in memory and logs the decision (no approval handling). */
  evaluateWith(policies: readonly CompiledPolicy[], agent: AgentAttrs | undefined, req: CheckRequest): { verdict: Verdict; resource: string; context: Record<string, unknown>; latencyUs: number } {
    const started = performance.now();
    const resource = normalizeResource(req.action, req.resource);
    const context = req.context ?? {};
    const verdict = evaluate(policies, { action: req.action, resource, context, agent, role: req.actor.role, now: new Date() });
    const seconds = (performance.now() - started) / 1000;
    policyEvaluationSeconds.observe(seconds);
    return { verdict, resource, context, latencyUs: Math.max(0, Math.round(seconds * 1e6)) };
  }

  /** Records a decision in the log and the metric. */
  record(req: CheckRequest, resource: string, context: Record<string, unknown>, result: CheckResult, latencyUs: number, scopeLevel: string | undefined): void {
    policyDecisionsTotal.inc({ decision: result.decision });
    this.log.push({
      tenantId: req.tenantId,
      at: new Date(),
      door: req.door,
      agentId: req.agentId && UUID.test(req.agentId) ? req.agentId : null,
      taskId: req.taskId && UUID.test(req.taskId) ? req.taskId : null,
      actorSub: req.actor.sub,
      actorRole: req.actor.role,
      action: req.action,
      resource,
      context,
      decision: result.decision,
      policyId: result.policy_id,
      policyVersion: result.policy_version,
      ruleIndex: result.rule?.index ?? null,
      scopeLevel: scopeLevel ?? null,
      reason: result.reason,
      latencyUs,
      approvalId: result.approval?.id ?? null,
    });
  }

  /**
   * The full check of a door or of POST /api/policy/check: evaluate, and for require_approval
   * (unless `dryRun`) use an approved request for the same action once, or open (or find) the
   * pending one and tell its approvers. Logged and counted. `q` may be the submit's transaction.
   */
  async check(q: Queryable, req: CheckRequest, opts: { dryRun?: boolean; deferOpen?: boolean } = {}): Promise<CheckResult> {
    const policies = await this.policiesFor(q, req.tenantId);
    const agent = req.agentId ? await this.agentAttrs(q, req.tenantId, req.agentId) : undefined;
    const started = performance.now();
    const { verdict, resource, context, latencyUs } = this.evaluateWith(policies, agent, req);
    let result = resultOf(verdict);
    if (verdict.decision === 'require_approval' && !opts.dryRun && verdict.rule) {
      const key = requestKey(req.agentId?.toLowerCase() ?? null, req.action, resource, context);
      const used = await useApproved(q, req.tenantId, key);
      if (used) result = { ...result, decision: 'allow', reason: `Approved by ${used.decided_by} (approval ${used.id}${used.comment ? `: "${used.comment}"` : ''}); this approval is now used.`, approval: used };
      else {
        const open = {
          tenantId: req.tenantId,
          key,
          action: req.action,
          resource,
          context,
          agentId: req.agentId ?? null,
          taskId: req.taskId ?? null,
          requestedBy: req.actor.sub,
          policyId: verdict.rule.policyId,
          policyVersion: verdict.rule.policyVersion,
          ruleIndex: verdict.rule.index,
          reason: verdict.reason,
          approvers: approversOf(verdict.rule.rule),
          expiresInSeconds: verdict.rule.rule.approval_expires_seconds ?? this.approvalExpiresSeconds,
        };
        if (opts.deferOpen) {
          // inside a transaction that is about to roll back: open it on the database itself, afterwards
          void openApproval(this.o.db, { ...open, id: randomUUID() })
            .then(({ approval, created }) => (created ? this.tellApprovers(req.tenantId, approval) : undefined))
            .catch((err: unknown) => logger().error({ err }, 'opening an approval request failed'));
        } else {
          const { approval, created } = await openApproval(q, open);
          if (created) void this.tellApprovers(req.tenantId, approval);
          result = { ...result, approval };
        }
      }
    }
    this.record(req, resource, context, result, result.approval ? Math.round((performance.now() - started) * 1000) : latencyUs, verdict.level);
    return result;
  }

  /**
   * The egress proxy's check for one session: loads the agent and its tenant's policies now,
   * then answers each destination from memory (no database on the connection's path), with the
   * rules as they are at that moment — a change reaches running sessions within a second.
   */
  async netConnectCheck(tenantId: string, agentId: string, taskId: string): Promise<(host: string, port: number) => { allowed: boolean; reason: string }> {
    await this.policiesFor(this.o.db, tenantId);
    const agent = await this.agentAttrs(this.o.db, tenantId, agentId);
    return (host, port) => {
      const req: CheckRequest = { tenantId, door: 'egress', actor: { sub: agentId, role: 'agent' }, agentId, taskId, action: 'net.connect', resource: host, context: { port } };
      const { verdict, resource, context, latencyUs } = this.evaluateWith(this.cachedPolicies(tenantId), agent, req);
      const result = resultOf(verdict);
      if (verdict.decision === 'require_approval')
        result.reason = `${verdict.reason} The egress proxy cannot hold a connection for an approval: ask with POST /api/policy/check, wait for it, then connect.`;
      this.record(req, resource, context, result, latencyUs, verdict.level);
      return { allowed: verdict.decision === 'allow', reason: result.reason };
    };
  }

  private async tellApprovers(tenantId: string, a: Approval): Promise<void> {
    await this.o.notifier?.send({
      severity: 'warning',
      title: 'Approval requested',
      text:
        `${a.agent_id ? `Agent ${a.agent_id}` : a.requested_by} asks to ${a.action} ${a.resource || '(no resource)'}: ${a.reason} ` +
        `Decide with POST /api/approvals/${a.id}/decision {"approve": true|false, "comment": "…"} before ${a.expires_at} (then it is denied). Approvers: ${describeApprovers(a.approvers)}.`,
      tenantId,
      ...(a.agent_id ? { agentId: a.agent_id } : {}),
      ...(a.task_id ? { taskId: a.task_id } : {}),
      fields: { approval_id: a.id, action: a.action, resource: a.resource, expires_at: a.expires_at },
    });
  }

  async close(): Promise<void> {
    const l = this.unlisten;
    this.unlisten = undefined;
    if (l) await (await l)().catch(() => {});
    await this.log.close();
  }
}

export function resultOf(v: Verdict): CheckResult {
  return {
    decision: v.decision,
    policy_id: v.rule?.policyId ?? null,
    policy_version: v.rule?.policyVersion ?? null,
    rule: v.rule ? { index: v.rule.index, action_pattern: v.rule.rule.action_pattern, effect: v.rule.effect, scope: v.level! } : null,
    reason: v.reason,
  };
}
