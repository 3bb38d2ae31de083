import type { FastifyRequest } from 'fastify';
import { z } from 'zod';
import { MANAGERS, READERS, type Principal } from '../../auth/index.js';
import { withTransaction } from '../../db/index.js';
import { forbidden, notFound } from '../../errors/index.js';
import { ListTasksQuery, QueueStats, SubmitBatchBody, SubmitTaskBody, Task, TaskAttempt, Uuid } from '../../queue/index.js';
import { principalOf, requireRole, requireSelfOrRole, sameId } from '../auth.js';
import { errorResponses } from '../errors.js';
import type { App, AppDeps } from '../types.js';
import { createRoute } from './create.js';
import { EventStreamQuery, EventStreamResponse, streamEventsFor } from './events.js';

const tags = ['tasks'];
const security = [{ bearerAuth: [] }];
const TaskParams = z.object({ id: Uuid('task ids are UUIDs') }).strict();
const TaskEnvelope = z.object({ task: Task });
// A POST without a body arrives as null: treat it as {}.
const RevisionBody = z.preprocess(
  (b) => b ?? {},
  z.object({ revision: z.number().int().min(1).optional().describe('refuse with 409 revision_conflict unless the task is at this revision') }).strict(),
);
const TaskPage = z.object({ tasks: z.array(Task), next_cursor: z.string().nullable() });

/** Submitting is for the agent itself (sub = agent_id) and for admins and operators of its tenant. */
function mayActFor(req: FastifyRequest, agentIds: readonly string[]): Principal {
  const p = principalOf(req);
  if (p.role === 'agent') {
    const other = agentIds.find((id) => !sameId(id, p.sub));
    if (other) throw forbidden(`An agent may only submit tasks for itself (token sub ${p.sub} ≠ ${other}).`);
    return p;
  }
  return requireRole(req, MANAGERS, 'submit tasks');
}

/** For reads: an agent sees only its own tasks (another agent's is a 404: not even its existence leaks); people of the tenant see all. */
async function readableTask(req: FastifyRequest, deps: AppDeps, id: string) {
  const p = principalOf(req);
  const task = await deps.scheduler.getTask(p.tenantId, id);
  if (p.role === 'agent' && !sameId(task.agent_id, p.sub)) throw notFound('task', id);
  requireSelfOrRole(req, task.agent_id, READERS, 'read tasks');
  return { p, task };
}

/** The durable queue: submit, inspect, cancel, re-drive (agent-fabric.md §1, isolation-runtime-prd §3.4). */
export function taskRoutes(app: App, deps: AppDeps): void {
  createRoute(app, deps, {
    url: '/api/tasks',
    tags,
    summary: 'Submit a task (201), or replay it for a repeated idempotency key (200)',
    body: SubmitTaskBody,
    response: TaskEnvelope,
    roles: MANAGERS,
    doing: 'submit tasks',
    authorize: (req, body) => mayActFor(req, [body.agent_id]),
    bodyKey: true,
    name: 'submit task',
    create: async (tx, actor, body) => ({ task: await deps.scheduler.schedule(actor, body, tx) }),
    createDirect: async (actor, body) => ({ task: await deps.scheduler.schedule(actor, body) }),
  });

  createRoute(app, deps, {
    url: '/api/tasks/batch',
    tags,
    summary: 'Submit up to 1,000 tasks, all or nothing',
    body: SubmitBatchBody,
    response: z.object({ tasks: z.array(Task) }),
    roles: MANAGERS,
    doing: 'submit tasks',
    authorize: (req, body) => mayActFor(req, body.tasks.map((t) => t.agent_id)),
    name: 'submit task batch',
    create: async (tx, actor, body) => ({ tasks: await deps.scheduler.scheduleBatch(actor, body.tasks, tx) }),
    createDirect: async (actor, body) => ({ tasks: await deps.scheduler.scheduleBatch(actor, body.tasks) }),
  });

  app.get(
    '/api/tasks',
    { schema: { tags, security, summary: "List the tenant's tasks (an agent: its own)", querystring: ListTasksQuery, response: { 200: TaskPage, ...errorResponses } } },
    async (req) => {
      const p = principalOf(req);
      let agentId = req.query.agent_id;
      if (p.role === 'agent') {
        if (agentId && !sameId(agentId, p.sub)) throw forbidden('An agent may only list its own tasks.');
        agentId = p.sub.toLowerCase();
      } else requireRole(req, READERS, 'list tasks');
      return deps.scheduler.listTasks(p.tenantId, { agentId, status: req.query.status, limit: req.query.limit, cursor: req.query.cursor });
    },
  );

  app.get(
    '/api/tasks/:id',
    {
      schema: { tags, security, summary: 'A task with its attempts', params: TaskParams, response: { 200: z.object({ task: Task, attempts: z.array(TaskAttempt) }), ...errorResponses } },
    },
    async (req) => {
      const { p, task } = await readableTask(req, deps, req.params.id);
      return { task, attempts: await deps.scheduler.getAttempts(p.tenantId, task.id) };
    },
  );

  app.get(
    '/api/tasks/:id/events',
    {
      schema: {
        tags,
        security,
        summary: "Stream a task's state changes with their revisions (Server-Sent Events; Last-Event-ID resumes)",
        params: TaskParams,
        querystring: EventStreamQuery,
        response: { 200: EventStreamResponse, ...errorResponses },
      },
    },
    async (req, reply) => {
      const { p, task } = await readableTask(req, deps, req.params.id);
      await streamEventsFor(req, reply, deps, { tenantId: p.tenantId, subjectType: 'task', subjectId: task.id });
    },
  );

  app.post(
    '/api/tasks/:id/cancel',
    { schema: { tags, security, summary: 'Cancel a task (queued: at once; running: its AbortSignal fires)', params: TaskParams, body: RevisionBody, response: { 200: TaskEnvelope, ...errorResponses } } },
    async (req) => {
      const { p, task } = await readableTask(req, deps, req.params.id);
      if (p.role !== 'agent') requireRole(req, MANAGERS, 'cancel tasks');
      return { task: await withTransaction(deps.db, (tx) => deps.scheduler.cancel(p.tenantId, task.id, req.body?.revision, tx), { name: 'cancel task' }) };
    },
  );

  app.post(
    '/api/tasks/:id/retry',
    { schema: { tags, security, summary: 'Re-drive a dead-lettered, failed or timed-out task', params: TaskParams, body: RevisionBody, response: { 200: TaskEnvelope, ...errorResponses } } },
    async (req) => {
      const p = requireRole(req, MANAGERS, 're-drive tasks');
      return { task: await withTransaction(deps.db, (tx) => deps.scheduler.retry(p.tenantId, req.params.id, req.body?.revision, tx), { name: 'retry task' }) };
    },
  );

  app.get(
    '/api/dead-letters',
    {
      schema: {
        tags,
        security,
        summary: 'Dead-lettered tasks of the tenant',
        querystring: ListTasksQuery.omit({ status: true }),
        response: { 200: TaskPage, ...errorResponses },
      },
    },
    async (req) => {
      const p = requireRole(req, READERS, 'list dead letters');
      return deps.scheduler.listTasks(p.tenantId, { agentId: req.query.agent_id, status: 'dead_lettered', limit: req.query.limit, cursor: req.query.cursor });
    },
  );

  app.get(
    '/api/agents/:id/queue',
    {
      schema: {
        tags: ['agents', 'tasks'],
        security,
        summary: "An agent's queue: depth, running, oldest ready age",
        params: z.object({ id: Uuid('agent ids are UUIDs') }).strict(),
        response: { 200: z.object({ queue: QueueStats }), ...errorResponses },
      },
    },
    async (req) => {
      const p = requireSelfOrRole(req, req.params.id, READERS, 'read queues');
      return { queue: await deps.scheduler.queueStats(p.tenantId, req.params.id) };
    },
  );
}
