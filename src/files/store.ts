import type { Readable } from 'node:stream';

/** Stored bytes as a provider hands them back. */
export interface StoredBlob {
  body: Readable;
  size: number;
}

/**
 * Where file contents live, by key. Keys are made by the fabric (`<tenant>/<agent>/<file id>`),
 * never from user input; a provider refuses any other shape. Every provider passes the one
 * conformance suite (test/files-conformance.test.ts).
 */
export interface BlobStore {
  /** `local` or `s3`, for logs. */
  readonly kind: string;
  /**
   * Stores everything `body` yields under `key`, durably, and only once all of it arrived: if
   * `body` errors, nothing is left under `key` (nor any partial copy) and the error is rethrown.
   */
  put(key: string, body: Readable): Promise<void>;
  /** The bytes under `key`, streamed; undefined when there are none. */
  get(key: string): Promise<StoredBlob | undefined>;
  /** Removes `key`; removing a missing key is not an error. */
  delete(key: string): Promise<void>;
  /** Releases connections (S3 client); the store is unusable afterwards. */
  close(): Promise<void>;
}

const KEY = /^[a-z0-9][a-z0-9-]{0,62}(\/[a-z0-9][a-z0-9-]{0,62}){0,7}$/;

/** Refuses keys not of the fabric's making: no dots, no empty or absolute segments. */
export function assertBlobKey(key: string): void {
  if (!KEY.test(key)) throw new Error(`invalid blob key ${JSON.stringify(key)}`);
}

/** The key of an agent's file: one namespace per tenant and agent. */
export function fileBlobKey(tenantId: string, agentId: string, fileId: string): string {
  const key = `${tenantId}/${agentId.toLowerCase()}/${fileId.toLowerCase()}`;
  assertBlobKey(key);
  return key;
}
