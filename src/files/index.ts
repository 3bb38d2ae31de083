import path from 'node:path';
import type { FabricConfig } from '../config/index.js';
import type { Db } from '../db/index.js';
import { AgentFiles } from './agent-files.js';
import { LocalBlobStore } from './local-store.js';
import { S3BlobStore } from './s3-store.js';
import type { BlobStore } from './store.js';

export { AgentFiles, fileTooLarge, type AgentFilesOptions, type NewFile } from './agent-files.js';
export type { AgentFile, FileScope, ListFilesOptions } from './queries.js';
export { LocalBlobStore } from './local-store.js';
export { S3BlobStore } from './s3-store.js';
export { fileBlobKey, type BlobStore, type StoredBlob } from './store.js';
export { DOWNLOAD_URL_TTL_SECONDS, deriveUrlSigningKey, signDownloadUrl, verifyDownloadUrl, type SignedDownload } from './signing.js';
export { contentDisposition, contentTypeForName, fileContentType, fileName, safeFileName } from './names.js';

/** The configured storage provider: the local filesystem (default) or an S3-compatible bucket. */
export function createBlobStore(config: Pick<FabricConfig, 'files' | 'dataDir'>): BlobStore {
  if (config.files.storage === 's3') return new S3BlobStore(config.files.s3);
  return new LocalBlobStore(config.files.dir ?? path.join(config.dataDir, 'files'));
}

/** Per-agent files over the configured provider; `signingSecret` is the secret download URLs are signed from. */
export function createAgentFiles(db: Db, config: Pick<FabricConfig, 'files' | 'dataDir'>, signingSecret: string | undefined): AgentFiles {
  return new AgentFiles({ db, blobs: createBlobStore(config), maxBytes: config.files.maxBytes, signingSecret: config.files.urlSigningSecret ?? signingSecret });
}
