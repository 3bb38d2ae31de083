import { randomUUID } from 'node:crypto';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { withTransaction, type Db } from '../db/index.js';
import { recordEvent } from '../events/index.js';
import { badRequest, FabricError, notFound } from '../errors/index.js';
import { logger } from '../telemetry/index.js';
import { MeasuringStream } from './measure.js';
import {
  chargeStorage,
  deleteFileRow,
  findFile,
  findSignedFile,
  insertFile,
  isAgentTask,
  listFiles,
  readStorageQuota,
  type AgentFile,
  type FileScope,
  type ListFilesOptions,
} from './queries.js';
import { deriveUrlSigningKey, signDownloadUrl, verifyDownloadUrl, type SignedDownload } from './signing.js';
import { fileBlobKey, type BlobStore, type StoredBlob } from './store.js';

export interface AgentFilesOptions {
  db: Db;
  blobs: BlobStore;
  /** Largest file one upload may carry (FABRIC_FILES_MAX_BYTES). */
  maxBytes: number;
  /** Secret the download-URL key is derived from; without one, signing URLs answers 503. */
  signingSecret: string | undefined;
}

/** What an upload carries besides its bytes. */
export interface NewFile {
  body: Readable;
  name: string;
  contentType: string;
  taskId?: string | null | undefined;
}

/** `52428800 bytes (50 MB)`, or just the bytes below a megabyte. */
const describeBytes = (n: number) => (n >= 1024 * 1024 ? `${n} bytes (${Math.round((n / 1024 / 1024) * 10) / 10} MB)` : `${n} bytes`);

export const fileTooLarge = (maxBytes: number) =>
  new FabricError(413, 'file_too_large', `The file is larger than the limit of ${describeBytes(maxBytes)} per file; nothing was stored. Split it or compress it.`, { max_bytes: maxBytes });

function quotaExceeded(agentId: string, size: number | undefined, q: { used: number; limit: number }): FabricError {
  const what = size === undefined ? 'This file' : `This file (${size} bytes)`;
  return new FabricError(
    429,
    'storage_quota_exceeded',
    `${what} would take agent ${agentId} past its storage quota (${q.used} of ${q.limit} bytes used); nothing was stored. Delete files or ask an admin to raise storage_limit_bytes.`,
    { storage_used_bytes: q.used, storage_limit_bytes: q.limit },
  );
}

/**
 * Per-agent files (isolation-runtime-prd §3.1): bytes in a BlobStore, metadata in agent_files,
 * size counted in agent_quotas.storage_used_bytes in the same transaction as the row.
 */
export class AgentFiles {
  private readonly signingKey: Buffer | undefined;

  constructor(private readonly o: AgentFilesOptions) {
    this.signingKey = o.signingSecret ? deriveUrlSigningKey(o.signingSecret) : undefined;
  }

  get maxBytes(): number {
    return this.o.maxBytes;
  }

  /**
   * Streams `input.body` to storage, then records the file and charges the quota in one
   * transaction. Too large → 413 file_too_large; past the quota → 429 storage_quota_exceeded;
   * either way, and on any failure, nothing is left in storage or the database.
   */
  async store(s: FileScope, input: NewFile): Promise<AgentFile> {
    const quota = await readStorageQuota(this.o.db, s);
    if (!quota) throw notFound('agent', s.agentId);
    // Stop reading as soon as the upload cannot fit (the transaction below decides for real).
    const room = quota.policy === 'block' ? Math.max(0, quota.limit - quota.used) : Infinity;
    const limit = Math.min(this.o.maxBytes, room);
    const id = randomUUID();
    const key = fileBlobKey(s.tenantId, s.agentId, id);
    const measure = new MeasuringStream(limit);
    const [read, stored] = await Promise.allSettled([pipeline(input.body, measure), this.o.blobs.put(key, measure)]);
    if (read.status === 'rejected' || stored.status === 'rejected') {
      // put() leaves nothing behind when its body fails; bytes stored despite a failed read are removed here.
      if (stored.status === 'fulfilled') await this.o.blobs.delete(key).catch(() => {});
      if (measure.bytesSeen > limit) {
        if (limit === this.o.maxBytes) throw fileTooLarge(this.o.maxBytes);
        logger().warn({ agent_id: s.agentId, used: quota.used, limit: quota.limit }, 'storage quota exceeded: upload refused');
        throw quotaExceeded(s.agentId, undefined, quota);
      }
      throw read.status === 'rejected' ? read.reason : (stored as PromiseRejectedResult).reason;
    }
    const size = measure.bytesSeen;
    try {
      return await withTransaction(
        this.o.db,
        async (tx) => {
          if (input.taskId && !(await isAgentTask(tx, s, input.taskId)))
            throw badRequest('unknown_task', `task_id ${input.taskId} is not a task of agent ${s.agentId}; pass one of its own tasks or leave task_id out.`);
          const charged = await chargeStorage(tx, s, size);
          if (!charged) {
            const now = (await readStorageQuota(tx, s)) ?? quota;
            logger().warn({ agent_id: s.agentId, size, used: now.used, limit: now.limit }, 'storage quota exceeded: upload refused');
            throw quotaExceeded(s.agentId, size, now);
          }
          if (charged.used > charged.limit) {
            logger().warn({ agent_id: s.agentId, size, used: charged.used, limit: charged.limit, policy: charged.policy }, 'storage quota exceeded: upload allowed by overage_policy');
            await recordEvent(tx, {
              tenantId: s.tenantId,
              agentId: s.agentId,
              eventType: 'agent.storage_quota_exceeded',
              subjectType: 'agent',
              subjectId: s.agentId,
              data: { file_id: id, size, storage_used_bytes: charged.used, storage_limit_bytes: charged.limit, overage_policy: charged.policy },
            });
          }
          return insertFile(tx, s, { id, taskId: input.taskId ?? null, name: input.name, size, sha256: measure.sha256(), contentType: input.contentType, storageKey: key });
        },
        { name: 'store agent file' },
      );
    } catch (err) {
      await this.o.blobs.delete(key).catch((e: unknown) => logger().error({ err: e, file_id: id }, 'removing the bytes of a file that was not recorded failed'));
      throw err;
    }
  }

  /** The agent's files, newest first, filtered by task and creation time. */
  list(s: FileScope, o: ListFilesOptions): Promise<{ files: AgentFile[]; next_cursor: string | null }> {
    return listFiles(this.o.db, s, o);
  }

  /** A file's metadata and its bytes (streamed). */
  async open(s: FileScope, fileId: string): Promise<{ file: AgentFile; blob: StoredBlob }> {
    const found = await findFile(this.o.db, s, fileId);
    if (!found) throw notFound('file', fileId);
    return { file: found.file, blob: await this.blobOf(found) };
  }

  /** Deletes the file: the row and its quota charge in one transaction, then its bytes. */
  async remove(s: FileScope, fileId: string): Promise<AgentFile> {
    const gone = await withTransaction(this.o.db, (tx) => deleteFileRow(tx, s, fileId), { name: 'delete agent file' });
    if (!gone) throw notFound('file', fileId);
    await this.o.blobs.delete(gone.storageKey).catch((err: unknown) => logger().error({ err, file_id: fileId }, 'deleting the bytes of a deleted file failed; they are orphaned in storage'));
    return gone.file;
  }

  /** A download URL for the file valid for 900 s, usable without a token. */
  async signUrl(s: FileScope, fileId: string, nowMs = Date.now()): Promise<SignedDownload> {
    if (!(await findFile(this.o.db, s, fileId))) throw notFound('file', fileId);
    return signDownloadUrl(this.requireKey(), fileId, nowMs);
  }

  /** Checks a signed URL (403 url_invalid / url_expired), then opens its file (404 if deleted). */
  async openSigned(fileId: string, expires: string | undefined, sig: string | undefined): Promise<{ file: AgentFile; blob: StoredBlob }> {
    verifyDownloadUrl(this.requireKey(), fileId, expires, sig);
    const found = await findSignedFile(this.o.db, fileId);
    if (!found) throw notFound('file', fileId);
    return { file: found.file, blob: await this.blobOf(found) };
  }

  close(): Promise<void> {
    return this.o.blobs.close();
  }

  private requireKey(): Buffer {
    if (!this.signingKey)
      throw new FabricError(503, 'url_signing_unavailable', 'This fabric has no key to sign download URLs: set FABRIC_URL_SIGNING_SECRET (≥ 32 characters) or FABRIC_JWT_SECRET on every API process.');
    return this.signingKey;
  }

  private async blobOf(found: { file: AgentFile; storageKey: string }): Promise<StoredBlob> {
    const blob = await this.o.blobs.get(found.storageKey);
    if (blob) return blob;
    logger().error({ file_id: found.file.id, provider: this.o.blobs.kind }, 'a recorded file has no bytes in storage');
    throw new FabricError(500, 'file_content_missing', `File ${found.file.id} is recorded but its content is missing from storage; an operator must restore it or delete the file.`);
  }
}
