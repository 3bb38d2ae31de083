import type { FastifyReply } from 'fastify';
import { z } from 'zod';
import { contentDisposition, type AgentFile, type AgentFiles, type StoredBlob } from '../../files/index.js';
import { errorResponses } from '../errors.js';
import type { App } from '../types.js';

/** Sends a stored file: its type, length, and a download-only disposition. */
export function sendFile(reply: FastifyReply, file: AgentFile, blob: StoredBlob): FastifyReply {
  return reply
    .header('content-type', file.content_type)
    .header('content-length', String(blob.size))
    .header('content-disposition', contentDisposition(file.name))
    .header('x-content-type-options', 'nosniff')
    .header('content-security-policy', "default-src 'none'; sandbox")
    .header('cache-control', 'private, no-store')
    .send(blob.body);
}


/**
 * Signed downloads, outside /api and its token check: the URL's HMAC (file id + expiry) is the
 * credential. A changed URL is 403 url_invalid, an old one 403 url_expired, a deleted file 404.
 */
export function fileDownloadRoutes(app: App, files: AgentFiles): void {
  app.get(
    '/files/:file_id',
    {
      schema: {
        tags: ['files'],
        summary: 'Download a file with a signed URL from GET /api/agents/:id/files/:file_id/url (no token needed)',
        // loose on purpose: an altered URL gets 403 url_invalid, not a validation error
        params: z.object({ file_id: z.string().max(100) }),
        querystring: z.looseObject({ expires: z.string().max(32).optional(), sig: z.string().max(128).optional() }),
        response: errorResponses,
      },
    },
    async (req, reply) => {
      const { file, blob } = await files.openSigned(req.params.file_id.toLowerCase(), req.query.expires, req.query.sig);
      return sendFile(reply, file, blob);
    },
  );
}
