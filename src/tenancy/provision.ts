import { recordAudit, type AuditActor } from '../audit/index.js';
import { createAgentQuota, recordLedgerEntry, type AgentQuota } from '../budget/index.js';
import type { QuotaDefaults } from '../config/index.js';
import type { Queryable, Tx } from '../db/index.js';
import { recordEvent } from '../events/index.js';
import { nameTaken, toAgent, type AgentRow } from './agents.js';
import type { Agent, ProvisionAgentBody } from './schemas.js';
import { getUser, resolveWorkspace } from './tenants.js';

export interface ProvisionOptions {
  quotaDefaults: QuotaDefaults;
  /**
   * Called after each of the four steps (1 agent, 2 quota, 3 ledger, 4 event) inside the
   * transaction. Fault-injection seam for the rollback tests; production passes nothing.
   */
  afterStep?: (step: 1 | 2 | 3 | 4, tx: Queryable) => Promise<void>;
}

/**
 * Provisions an agent: its row, its quota, a provisioning ledger entry and a system event,
 * all on `tx` — run it inside `withTransaction` so a failure at any step leaves no rows (US-09).
 */
export async function provisionAgent(
  tx: Tx,
  actor: AuditActor,
  tenantId: string,
  body: ProvisionAgentBody,
  options: ProvisionOptions,
): Promise<{ agent: Agent; quota: AgentQuota }> {
  const step = options.afterStep ?? (async () => {});
  const workspace = await resolveWorkspace(tx, tenantId, body.workspace_id);
  if (body.owner_user_id) await getUser(tx, tenantId, body.owner_user_id);
  const config = { model: body.model, ...(body.models ? { models: body.models } : {}), tools: body.tools, isolation: body.isolation, budget: body.budget, policies: body.policies };

  let row: AgentRow;
  try {
    const r = await tx.query<AgentRow>(
      `INSERT INTO agents (tenant_id, workspace_id, owner_user_id, name, description, config, entrypoint, max_queue_depth, max_concurrency)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING *`,
      [
        tenantId,
        workspace.id,
        body.owner_user_id ?? null,
        body.name,
        body.description ?? null,
        JSON.stringify(config),
        body.entrypoint ? JSON.stringify(body.entrypoint) : null,
        body.max_queue_depth,
        body.max_concurrency,
      ],
    );
    row = r.rows[0]!;
  } catch (err) {
    throw nameTaken(err, body.name) ?? err;
  }
  const agent = toAgent(row);
  await step(1, tx);

  const quota = await createAgentQuota(tx, tenantId, agent.id, options.quotaDefaults, body.quota);
  await step(2, tx);

  await recordLedgerEntry(tx, {
    tenantId,
    agentId: agent.id,
    entryType: 'provision',
    details: {
      monthly_token_limit: quota.monthly_token_limit,
      monthly_cost_limit_usd: quota.monthly_cost_limit_usd,
      storage_limit_bytes: quota.storage_limit_bytes,
      overage_policy: quota.overage_policy,
    },
  });
  await step(3, tx);

  await recordEvent(tx, {
    tenantId,
    agentId: agent.id,
    eventType: 'agent.provisioned',
    subjectType: 'agent',
    subjectId: agent.id,
    data: { name: agent.name, workspace_id: agent.workspace_id, model: agent.model },
  });
  await step(4, tx);

  await recordAudit(tx, { tenantId, actor, action: 'agent.provision', targetType: 'agent', targetId: agent.id, after: { agent, quota } });
  return { agent, quota };
}
