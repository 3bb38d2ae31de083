import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { recordAudit, type AuditActor } from '../audit/index.js';
import { withTransaction, type Db, type Tx } from '../db/index.js';
import { notFound } from '../errors/index.js';
import type { BlobStore } from '../files/index.js';
import { logger } from '../telemetry/index.js';
import { eraseAgentIdentity, eraseAgentMemory, eraseAgentTasks, eraseUserData, freezeAgent, freezeUser, type Evidence, type StepContext } from './erasure-steps.js';
import { erasureRequestsTotal } from './metrics.js';
import { subjectHash, type SubjectType, SUBJECT_TYPES } from './subjects.js';

export const ErasureRequest = z.object({
  id: z.uuid(),
  subject_type: z.enum(SUBJECT_TYPES),
  subject_id: z.string().nullable().describe('shown while the request runs; cleared once it completed'),
  status: z.enum(['running', 'completed']),
  steps_done: z.array(z.string()).describe('stores erased so far, in order'),
  evidence: z.record(z.string(), z.record(z.string(), z.number())).describe('per step: rows (or bytes) deleted or anonymised per store'),
  last_error: z.string().nullable().describe('why the last attempt stopped; the request is retried'),
  requested_by: z.string(),
  created_at: z.string(),
  completed_at: z.string().nullable(),
});
export type ErasureRequest = z.infer<typeof ErasureRequest>;

interface Row {
  id: string;
  tenant_id: string;
  subject_type: SubjectType;
  subject_id: string | null;
  pseudonym: string;
  status: 'running' | 'completed';
  steps_done: string[];
  evidence: Record<string, Evidence>;
  last_error: string | null;
  requested_by: string;
  created_at: Date;
  completed_at: Date | null;
}

const toRequest = (r: Row): ErasureRequest => ({
  id: r.id,
  subject_type: r.subject_type,
  subject_id: r.subject_id,
  status: r.status,
  steps_done: r.steps_done,
  evidence: r.evidence,
  last_error: r.last_error,
  requested_by: r.requested_by,
  created_at: r.created_at.toISOString(),
  completed_at: r.completed_at?.toISOString() ?? null,
});

export interface ErasureOptions {
  db: Db;
  /** Where files' bytes live (the configured provider). */
  blobs: BlobStore;
  /** How long a run waits for the agent's running tasks to stop before it retries later. Default 60 s. */
  drainTimeoutMs?: number;
  /** A run holds its request this long (renewed per step); past it another process resumes it. Default 300 s. */
  leaseSeconds?: number;
}

class RetryLater extends Error {}

/**
 * The steps of a run, in order. freeze: the subject stops (agent paused for good, its queued
 * tasks cancelled and running ones asked to stop; tokens revoked). drain: the agent's running
 * tasks have stopped. Then one step per store; each but files (bytes, then rows) is one transaction.
 */
const STEPS: Record<SubjectType, string[]> = {
  agent: ['freeze', 'drain', 'files', 'memory', 'tasks', 'identity'],
  user: ['freeze', 'user_data'],
};

/**
 * Erasure of a user or an agent (README "Data erasure"): a request row, then one step per
 * store, each committed with its evidence, so a run cut short is resumed where it stopped
 * (resume(), called by the compliance sweeper). Idempotent: one request per subject.
 */
export class ErasureService {
  private readonly running = new Set<Promise<void>>();
  private readonly revokeListeners = new Set<() => void>();
  private closing = false;

  constructor(private readonly o: ErasureOptions) {}

  /** Records the request (audited) and starts it; a second request for the same subject returns the first. */
  async request(tenantId: string, actor: AuditActor, type: SubjectType, subjectId: string): Promise<{ request: ErasureRequest; created: boolean }> {
    const id = subjectId.toLowerCase();
    const hash = subjectHash(tenantId, type, id);
    const existing = await this.find(tenantId, hash);
    if (existing) return { request: toRequest(existing), created: false };
    const table = type === 'agent' ? 'agents' : 'users';
    const valid = z.uuid().safeParse(id).success;
    const found = valid && (await this.o.db.query(`SELECT 1 FROM ${table} WHERE tenant_id = $1 AND id = $2`, [tenantId, id])).rows.length > 0;
    if (!found) throw notFound(type, subjectId);
    const row = await withTransaction(
      this.o.db,
      async (tx) => {
        const r = await tx.query<Row>(
          `INSERT INTO erasure_requests (id, tenant_id, subject_type, subject_id, subject_hash, pseudonym, requested_by)
           VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tenant_id, subject_hash) DO NOTHING RETURNING *`,
          [randomUUID(), tenantId, type, id, hash, randomUUID(), actor.sub],
        );
        if (r.rows[0])
          await recordAudit(tx, { tenantId, actor, action: 'erasure.request', targetType: type, targetId: id, after: { erasure_request_id: r.rows[0].id, subject_type: type } });
        return r.rows[0];
      },
      { name: 'request erasure' },
    );
    if (!row) return { request: toRequest((await this.find(tenantId, hash))!), created: false };
    erasureRequestsTotal.inc({ subject_type: type, outcome: 'accepted' });
    this.start(row.id);
    return { request: toRequest(row), created: true };
  }

  /** Calls `fn` whenever this process revoked a subject's tokens (the API's token check forgets what it cached). */
  onRevoke(fn: () => void): void {
    this.revokeListeners.add(fn);
  }

  /** A request of the tenant. */
  async get(tenantId: string, id: string): Promise<ErasureRequest> {
    const r = await this.o.db.query<Row>(`SELECT * FROM erasure_requests WHERE tenant_id = $1 AND id = $2`, [tenantId, id]);
    if (!r.rows[0]) throw notFound('erasure request', id);
    return toRequest(r.rows[0]);
  }

  /** Runs every unfinished request no process holds (after a crash, or a drain that timed out). Returns how many it took. */
  async resume(): Promise<number> {
    const r = await this.o.db.query<{ id: string }>(`SELECT id FROM erasure_requests WHERE status = 'running' AND (locked_until IS NULL OR locked_until < now()) ORDER BY created_at`);
    for (const { id } of r.rows) this.start(id);
    return r.rows.length;
  }

  /** Waits for runs in progress (tests, shutdown). */
  async idle(): Promise<void> {
    while (this.running.size) await Promise.allSettled([...this.running]);
  }

  /** Stops waiting (a drain in progress gives up; the request is resumed later, by this or another process), then releases the blob store. */
  async close(): Promise<void> {
    this.closing = true;
    await this.idle();
    await this.o.blobs.close();
  }

  private start(id: string): void {
    if (this.closing) return;
    const job = this.run(id)
      .catch((err: unknown) => logger().error({ err, erasure_request_id: id }, 'erasure run failed'))
      .finally(() => this.running.delete(job));
    this.running.add(job);
  }

  private async find(tenantId: string, hash: string): Promise<Row | undefined> {
    return (await this.o.db.query<Row>(`SELECT * FROM erasure_requests WHERE tenant_id = $1 AND subject_hash = $2`, [tenantId, hash])).rows[0];
  }

  private lease(): string {
    return `${this.o.leaseSeconds ?? 300} seconds`;
  }

  private async run(id: string): Promise<void> {
    const claimed = await this.o.db.query<Row>(
      `UPDATE erasure_requests SET locked_until = now() + $2::interval, updated_at = now()
        WHERE id = $1 AND status = 'running' AND (locked_until IS NULL OR locked_until < now()) RETURNING *`,
      [id, this.lease()],
    );
    const req = claimed.rows[0];
    if (!req) return; // another process runs it, or it is done
    const c = await this.context(req);
    try {
      for (const step of STEPS[req.subject_type]) {
        if (req.steps_done.includes(step)) continue;
        if (step === 'drain') await this.commitStep(req, step, await this.drain(c));
        else if (step === 'files') await this.commitStep(req, step, await this.eraseFiles(c));
        else await withTransaction(this.o.db, async (tx) => this.commitStep(req, step, await this.inTx(tx, step, c, req.subject_type), tx), { name: `erasure ${step}` });
        if (step === 'freeze') for (const fn of this.revokeListeners) fn();
      }
      await withTransaction(
        this.o.db,
        async (tx) => {
          const done = await tx.query<Row>(
            `UPDATE erasure_requests SET status = 'completed', subject_id = NULL, completed_at = now(), updated_at = now(), locked_until = NULL, last_error = NULL
              WHERE id = $1 RETURNING *`,
            [req.id],
          );
          const r = done.rows[0]!;
          await recordAudit(tx, {
            tenantId: req.tenant_id,
            actor: { sub: 'erasure', role: 'system' },
            action: 'erasure.complete',
            targetType: 'erasure_request',
            targetId: req.id,
            after: { subject_type: req.subject_type, steps: r.steps_done, evidence: r.evidence },
          });
        },
        { name: 'complete erasure' },
      );
      erasureRequestsTotal.inc({ subject_type: req.subject_type, outcome: 'completed' });
      logger().info({ erasure_request_id: req.id, subject_type: req.subject_type }, 'erasure completed');
    } catch (err) {
      const retry = err instanceof RetryLater ? 5 : 30;
      if (!(err instanceof RetryLater)) logger().error({ err, erasure_request_id: req.id }, 'erasure step failed; it is retried');
      await this.o.db.query(`UPDATE erasure_requests SET last_error = $2, locked_until = now() + make_interval(secs => $3), updated_at = now() WHERE id = $1`, [
        req.id,
        (err as Error).message,
        retry,
      ]);
    }
  }

  private inTx(tx: Tx, step: string, c: StepContext, type: SubjectType): Promise<Evidence> {
    switch (step) {
      case 'freeze':
        return type === 'user' ? freezeUser(tx, c) : freezeAgent(tx, c);
      case 'user_data':
        return eraseUserData(tx, c);
      case 'memory':
        return eraseAgentMemory(tx, c);
      case 'tasks':
        return eraseAgentTasks(tx, c);
      case 'identity':
        return eraseAgentIdentity(tx, c);
      default:
        throw new Error(`unknown erasure step ${step}`);
    }
  }

  private async context(req: Row): Promise<StepContext> {
    const subjectId = req.subject_id!;
    const subs = [subjectId];
    const c: StepContext = { tenantId: req.tenant_id, subjectId, subs, pseudonym: req.pseudonym };
    if (req.subject_type === 'user') {
      const u = await this.o.db.query<{ email: string }>(`SELECT email FROM users WHERE tenant_id = $1 AND id = $2`, [req.tenant_id, subjectId]);
      if (u.rows[0]) subs.push(u.rows[0].email.toLowerCase());
    }
    return c;
  }

  private async commitStep(req: Row, step: string, evidence: Evidence, tx?: Tx): Promise<void> {
    await (tx ?? this.o.db).query(
      `UPDATE erasure_requests SET steps_done = array_append(steps_done, $2), evidence = evidence || jsonb_build_object($2::text, $3::jsonb),
              locked_until = now() + $4::interval, updated_at = now() WHERE id = $1`,
      [req.id, step, JSON.stringify(evidence), this.lease()],
    );
    req.steps_done.push(step);
  }

  /** Waits until none of the agent's tasks is running (the freeze asked them to cancel). */
  private async drain(c: StepContext): Promise<Evidence> {
    const until = Date.now() + (this.o.drainTimeoutMs ?? 60_000);
    let waited = 0;
    for (;;) {
      const r = await this.o.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM tasks WHERE tenant_id = $1 AND agent_id = $2 AND status = 'running'`, [c.tenantId, c.subjectId]);
      const n = r.rows[0]!.n;
      if (n === 0) return { running_tasks_waited_for: waited };
      waited = Math.max(waited, n);
      if (Date.now() > until || this.closing) throw new RetryLater(`${n} task(s) of the agent are still running; waiting for them to stop before erasing`);
      await new Promise((res) => setTimeout(res, 100));
    }
  }

  /** The agent's files: bytes first (deleting a missing key is no error, so a rerun is safe), then the rows. */
  private async eraseFiles(c: StepContext): Promise<Evidence> {
    const files = await this.o.db.query<{ storage_key: string; size: string | number }>(`SELECT storage_key, size FROM agent_files WHERE tenant_id = $1 AND agent_id = $2`, [
      c.tenantId,
      c.subjectId,
    ]);
    let bytes = 0;
    for (const f of files.rows) {
      await this.o.blobs.delete(f.storage_key);
      bytes += Number(f.size);
    }
    const r = await this.o.db.query(`DELETE FROM agent_files WHERE tenant_id = $1 AND agent_id = $2`, [c.tenantId, c.subjectId]);
    return { files: r.rowCount, file_bytes: bytes };
  }
}
