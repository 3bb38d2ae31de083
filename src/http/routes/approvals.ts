import type { FastifyRequest } from 'fastify';
import { z } from 'zod';
import { READERS, type Principal } from '../../auth/index.js';
import { withTransaction, type Db } from '../../db/index.js';
import { decideApproval, getApproval, listApprovals, type Approval, type ApprovalWatch } from '../../policy/index.js';
import { Uuid } from '../../queue/index.js';
import { principalOf, requireRole } from '../auth.js';
import { errorResponses } from '../errors.js';
import type { App, AppDeps } from '../types.js';
import { EventStreamResponse } from './events.js';

const tags = ['approvals'];
const security = [{ bearerAuth: [] }];
const STATUSES = ['pending', 'approved', 'rejected', 'expired'] as const;
const Params = z.object({ id: Uuid('approval ids are UUIDs') }).strict();

export const ApprovalOut = z.object({
  id: z.string(),
  status: z.enum(STATUSES),
  action: z.string(),
  resource: z.string(),
  context: z.record(z.string(), z.unknown()),
  agent_id: z.string().nullable(),
  task_id: z.string().nullable(),
  requested_by: z.string(),
  policy_id: z.string().nullable(),
  policy_version: z.number().int().nullable(),
  rule: z.number().int().nullable(),
  reason: z.string(),
  approvers: z.object({ users: z.array(z.string()), roles: z.array(z.string()) }),
  expires_at: z.string(),
  created_at: z.string(),
  decided_at: z.string().nullable(),
  decided_by: z.string().nullable(),
  comment: z.string().nullable(),
  used_at: z.string().nullable(),
});
const Envelope = z.object({ approval: ApprovalOut });

/** People of the tenant, or the requesting agent for its own requests. */
function viewer(req: FastifyRequest): Principal {
  const p = principalOf(req);
  return p.role === 'agent' ? p : requireRole(req, READERS, 'read approval requests');
}

/** The approval once it is no longer pending, or as it is when `waitMs` has passed (long-poll). */
async function waitFor(db: Db, watch: ApprovalWatch, p: Principal, id: string, waitMs: number, gone: () => boolean = () => false): Promise<Approval> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    const a = await getApproval(db, p, id);
    const left = Math.min(deadline, Date.parse(a.expires_at) + 50) - Date.now();
    if (a.status !== 'pending' || Date.now() >= deadline || gone()) return a;
    await watch.next(Math.max(10, left));
  }
}

const MAX_WAIT_SECONDS = 60;

/** Approval requests: list, read (long-poll or SSE while pending), decide. */
export function approvalRoutes(app: App, deps: AppDeps, watch: ApprovalWatch): void {
  app.get(
    '/api/approvals',
    {
      schema: {
        tags,
        security,
        summary: 'Approval requests, newest first (an agent: its own); ?status=pending for those waiting',
        querystring: z.object({ status: z.enum(STATUSES).optional(), agent_id: z.uuid().optional(), limit: z.coerce.number().int().min(1).max(500).default(100) }).strict(),
        response: { 200: z.object({ approvals: z.array(ApprovalOut) }), ...errorResponses },
      },
    },
    async (req) => ({ approvals: await listApprovals(deps.db, viewer(req), { status: req.query.status, agentId: req.query.agent_id, limit: req.query.limit }) }),
  );

  app.get(
    '/api/approvals/:id',
    {
      schema: {
        tags,
        security,
        summary: `An approval request; ?wait=N (≤ ${MAX_WAIT_SECONDS}) holds the answer until it is decided or expires, or N seconds pass`,
        params: Params,
        querystring: z.object({ wait: z.coerce.number().min(0).max(MAX_WAIT_SECONDS).default(0) }).strict(),
        response: { 200: Envelope, ...errorResponses },
      },
    },
    async (req) => {
      const p = viewer(req);
      let closed = false;
      req.raw.on('close', () => (closed = true));
      return { approval: await waitFor(deps.db, watch, p, req.params.id, req.query.wait * 1000, () => closed) };
    },
  );

  app.get(
    '/api/approvals/:id/events',
    {
      schema: {
        tags,
        security,
        summary: 'Server-Sent Events of an approval request: `event: approval` now and at its decision or expiry, then the stream ends',
        params: Params,
        response: { 200: EventStreamResponse, ...errorResponses },
      },
    },
    async (req, reply) => {
      const p = viewer(req);
      let a = await getApproval(deps.db, p, req.params.id);
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', 'x-accel-buffering': 'no', connection: 'keep-alive', 'x-request-id': req.id });
      let closed = false;
      res.on('close', () => (closed = true));
      const send = (x: Approval) => res.write(`event: approval\ndata: ${JSON.stringify(x)}\n\n`);
      send(a);
      while (a.status === 'pending' && !closed) {
        a = await waitFor(deps.db, watch, p, a.id, 15_000, () => closed).catch(() => a);
        if (a.status === 'pending') res.write(': keepalive\n\n');
        else send(a);
      }
      res.end();
    },
  );

  app.post(
    '/api/approvals/:id/decision',
    {
      schema: {
        tags,
        security,
        summary: 'Approve or reject a pending request: one of its approvers only (others → 403 not_an_approver); audited',
        params: Params,
        body: z.object({ approve: z.boolean(), comment: z.string().max(2000).optional() }).strict(),
        response: { 200: Envelope, ...errorResponses },
      },
    },
    async (req) => {
      const p = principalOf(req);
      const approval = await withTransaction(deps.db, (tx) => decideApproval(tx, p, req.params.id, req.body.approve, req.body.comment), { name: 'decide approval' });
      return { approval };
    },
  );
}
