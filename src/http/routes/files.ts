import fastifyMultipart, { type Multipart } from '@fastify/multipart';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { MANAGERS, READERS, readDevSecret } from '../../auth/index.js';
import { badRequest, FabricError } from '../../errors/index.js';
import { createAgentFiles, DOWNLOAD_URL_TTL_SECONDS, fileContentType, fileName, type AgentFile, type AgentFiles } from '../../files/index.js';
import { Uuid } from '../../queue/index.js';
import { getAgent } from '../../tenancy/index.js';
import { requireSelfOrRole } from '../auth.js';
import { errorResponses } from '../errors.js';
import type { App, AppDeps } from '../types.js';
import { fileDownloadRoutes, sendFile } from './file-downloads.js';

export const FileSchema = z.object({
  id: z.uuid(),
  name: z.string(),
  size: z.number().int().describe('bytes'),
  sha256: z.string().describe('hex SHA-256 of the content'),
  content_type: z.string(),
  task_id: z.uuid().nullable(),
  created_at: z.string(),
});
const AgentParams = z.object({ id: Uuid('agent ids are UUIDs') }).strict();
const FileParams = z.object({ id: Uuid('agent ids are UUIDs'), file_id: Uuid('file ids are UUIDs') }).strict();
const ListQuery = z
  .object({
    task_id: Uuid('task_id is a task UUID').optional(),
    since: z.iso.datetime({ offset: true, message: 'since is an ISO 8601 time, e.g. 2025-01-31T00:00:00Z' }).optional(),
    until: z.iso.datetime({ offset: true, message: 'until is an ISO 8601 time, e.g. 2025-02-01T00:00:00Z' }).optional(),
    limit: z.coerce.number().int().min(1).max(500).default(50),
    cursor: z.string().max(500).optional(),
  })
  .strict();
const tags = ['files'];
const security = [{ bearerAuth: [] }];
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const FORM_FIELDS = new Set(['task_id', 'name']);

/** Multipart parser failures a client caused, as 4xx with what to do. */
function multipartError(err: unknown, maxBytes: number): unknown {
  const e = err as { code?: string; message?: string };
  switch (e?.code) {
    case 'FST_FILES_LIMIT':
      return badRequest('too_many_files', 'Send exactly one file per request, in the form field "file".');
    case 'FST_FIELDS_LIMIT':
    case 'FST_PARTS_LIMIT':
      return badRequest('too_many_fields', 'The form has too many fields; send only file, and optionally task_id and name.');
    case 'FST_PROTO_VIOLATION':
      return badRequest('invalid_multipart', 'A form field name is not allowed; send only file, task_id and name.');
    case 'FST_REQ_FILE_TOO_LARGE':
      return new FabricError(413, 'file_too_large', `The file is larger than the ${maxBytes} bytes limit per file; nothing was stored.`, { max_bytes: maxBytes });
    case 'FST_MP_PREMATURE_CLOSE':
      return badRequest('invalid_multipart', 'The upload ended before the form was complete; send it again.');
  }
  if (/Unexpected end of|Boundary not found|Malformed part header|Part terminated early|multipart/i.test(e?.message ?? ''))
    return badRequest('invalid_multipart', `The multipart body is malformed (${e.message}); send it as multipart/form-data with the file in the field "file".`);
  return err;
}

/** Reads the form: task_id and name (before the file), then streams the one file into storage. */
async function storeUpload(files: AgentFiles, parts: AsyncIterableIterator<Multipart>, scope: { tenantId: string; agentId: string }): Promise<AgentFile> {
  const fields: Record<string, string> = {};
  let stored: AgentFile | undefined;
  for await (const part of parts) {
    if (part.type === 'field') {
      if (!FORM_FIELDS.has(part.fieldname)) throw badRequest('unknown_field', `The form field "${part.fieldname}" is not known; send file, and optionally task_id and name.`);
      if (stored) throw badRequest('field_after_file', `Put the form field "${part.fieldname}" before the file: fields after the file are not read.`);
      if (part.valueTruncated || typeof part.value !== 'string') throw badRequest('invalid_field', `The form field "${part.fieldname}" is too long.`);
      fields[part.fieldname] = part.value;
      continue;
    }
    if (part.fieldname !== 'file') throw badRequest('unknown_field', `Send the file in the form field "file", not "${part.fieldname}".`);
    if (fields.task_id !== undefined && !UUID.test(fields.task_id)) throw badRequest('invalid_task_id', 'task_id must be the UUID of one of the agent\'s tasks.');
    stored = await files.store(scope, {
      body: part.file,
      name: fileName(fields.name, part.filename),
      contentType: fileContentType(part.mimetype),
      taskId: fields.task_id?.toLowerCase(),
    });
  }
  if (!stored) throw badRequest('file_missing', 'The form has no file: send it in the field "file" (curl -F file=@report.pdf).');
  return stored;
}

/** POST /api/agents/:id/files: streamed to storage, charged against the storage quota. */
function uploadRoute(app: App, deps: AppDeps, files: AgentFiles): void {
  const { config } = deps;
  app.post(
    '/api/agents/:id/files',
    {
      schema: {
        tags,
        security,
        summary: 'Upload a file (multipart/form-data: optional fields task_id and name first, then the field file), streamed to storage',
        consumes: ['multipart/form-data'],
        params: AgentParams,
        response: { 201: z.object({ file: FileSchema }), ...errorResponses },
      },
    },
    async (req, reply) => {
      const p = requireSelfOrRole(req, req.params.id, MANAGERS, 'upload files');
      await getAgent(deps.db, p.tenantId, req.params.id);
      if (!req.isMultipart())
        throw new FabricError(415, 'unsupported_media_type', 'Send the file as multipart/form-data in the field "file" (curl -F file=@report.pdf).');
      let file: AgentFile;
      try {
        file = await storeUpload(files, req.parts(), { tenantId: p.tenantId, agentId: req.params.id });
      } catch (err) {
        // The rest of a refused upload is not read: close the connection after the answer
        // instead of leaving it (and a clean shutdown) waiting on a body nobody consumes.
        void reply.header('connection', 'close');
        throw multipartError(err, config.files.maxBytes);
      }
      return reply.code(201).send({ file });
    },
  );
}

/** Per-agent files (isolation-runtime-prd §3.1): upload, list, read, delete, signed download URLs. */
export function fileRoutes(app: App, deps: AppDeps): void {
  const { config } = deps;
  // dev keeps its generated JWT secret in the data dir; serve and worker need a configured one
  const secret = config.jwtSecret ?? (config.databaseUrl ? undefined : readDevSecret(config.dataDir));
  const files = createAgentFiles(deps.db, config, secret);
  app.addHook('onClose', () => files.close());
  // The multipart parser only in the upload route's own scope: every other route keeps answering
  // a multipart body with 415, not with a parsed-but-empty body.
  void app.register(async (parent) => {
    const scope = parent.withTypeProvider<ZodTypeProvider>();
    await scope.register(fastifyMultipart, {
      // One byte over the limit is enough to know the file is too large; the rest is never read.
      limits: { files: 1, fields: 4, parts: 6, fieldSize: 1024, fileSize: config.files.maxBytes + 1 },
      throwFileSizeLimit: false,
    });
    uploadRoute(scope, deps, files);
  });

  app.get(
    '/api/agents/:id/files',
    {
      schema: {
        tags,
        security,
        summary: "An agent's files, newest first, by task and creation time (since inclusive, until exclusive)",
        params: AgentParams,
        querystring: ListQuery,
        response: { 200: z.object({ files: z.array(FileSchema), next_cursor: z.string().nullable() }), ...errorResponses },
      },
    },
    async (req) => {
      const p = requireSelfOrRole(req, req.params.id, READERS, 'list files');
      const q = req.query;
      if (q.since && q.until && Date.parse(q.since) > Date.parse(q.until))
        throw badRequest('invalid_time_range', 'since is after until; swap them or drop one.');
      await getAgent(deps.db, p.tenantId, req.params.id);
      return files.list({ tenantId: p.tenantId, agentId: req.params.id }, { taskId: q.task_id, since: q.since, until: q.until, limit: q.limit, cursor: q.cursor });
    },
  );

  app.get(
    '/api/agents/:id/files/:file_id',
    { schema: { tags, security, summary: "A file's content, streamed (downloaded as an attachment)", params: FileParams, response: errorResponses } },
    async (req, reply) => {
      const p = requireSelfOrRole(req, req.params.id, READERS, 'read files');
      await getAgent(deps.db, p.tenantId, req.params.id);
      const { file, blob } = await files.open({ tenantId: p.tenantId, agentId: req.params.id }, req.params.file_id);
      return sendFile(reply, file, blob);
    },
  );

  app.delete(
    '/api/agents/:id/files/:file_id',
    { schema: { tags, security, summary: 'Delete a file and give its bytes back to the storage quota', params: FileParams, response: { 200: z.object({ file: FileSchema }), ...errorResponses } } },
    async (req) => {
      const p = requireSelfOrRole(req, req.params.id, MANAGERS, 'delete files');
      await getAgent(deps.db, p.tenantId, req.params.id);
      return { file: await files.remove({ tenantId: p.tenantId, agentId: req.params.id }, req.params.file_id) };
    },
  );

  app.get(
    '/api/agents/:id/files/:file_id/url',
    {
      schema: {
        tags,
        security,
        summary: 'A signed download URL for the file, valid for exactly 900 seconds without a token',
        params: FileParams,
        response: { 200: z.object({ url: z.string(), expires_at: z.string(), expires_in: z.number().int().describe('seconds; always 900') }), ...errorResponses },
      },
    },
    async (req) => {
      const p = requireSelfOrRole(req, req.params.id, READERS, 'get file URLs');
      await getAgent(deps.db, p.tenantId, req.params.id);
      const signed = await files.signUrl({ tenantId: p.tenantId, agentId: req.params.id }, req.params.file_id);
      return { url: `${req.protocol}://${req.host}${signed.path}`, expires_at: new Date(signed.expires * 1000).toISOString(), expires_in: DOWNLOAD_URL_TTL_SECONDS };
    },
  );

  fileDownloadRoutes(app, files);
}
