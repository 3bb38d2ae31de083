import { AbortMultipartUploadCommand, DeleteObjectCommand, GetObjectCommand, S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import type { Readable } from 'node:stream';
import type { FilesConfig } from '../config/index.js';
import { assertBlobKey, type BlobStore, type StoredBlob } from './store.js';

/** Parts of a multipart upload; at most PART_BYTES × QUEUE_SIZE of one upload is in memory at once. */
const PART_BYTES = 8 * 1024 * 1024;
const QUEUE_SIZE = 2;

/**
 * Files in an S3-compatible bucket (AWS S3, MinIO, R2, …). Bodies stream in parts (a file is
 * never held whole in memory); an upload whose body fails is aborted, leaving no object.
 */
export class S3BlobStore implements BlobStore {
  readonly kind = 's3';
  private readonly client: S3Client;
  private readonly bucket: string;
  private readonly prefix: string;

  constructor(config: FilesConfig['s3'], client?: S3Client) {
    if (!config.bucket) throw new Error('the S3 provider needs a bucket (FABRIC_S3_BUCKET)');
    this.bucket = config.bucket;
    this.prefix = config.prefix;
    const options: S3ClientConfig = {
      region: config.region,
      forcePathStyle: config.forcePathStyle,
      // S3-compatible servers other than AWS often reject the SDK's default trailing CRC checksums.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      ...(config.endpoint ? { endpoint: config.endpoint } : {}),
      ...(config.accessKeyId && config.secretAccessKey ? { credentials: { accessKeyId: config.accessKeyId, secretAccessKey: config.secretAccessKey } } : {}),
    };
    this.client = client ?? new S3Client(options);
  }

  private objectKey(key: string): string {
    assertBlobKey(key);
    return this.prefix + key;
  }

  async put(key: string, body: Readable): Promise<void> {
    const upload = new Upload({
      client: this.client,
      params: { Bucket: this.bucket, Key: this.objectKey(key), Body: body },
      partSize: PART_BYTES,
      queueSize: QUEUE_SIZE,
      leavePartsOnError: false,
    });
    // lib-storage may not report a body that errors (a client that went away, a file over the
    // limit), and it aborts a multipart upload only when a part fails: watch the body ourselves.
    const finished = upload.done();
    const bodyFailed = new Promise<never>((_, reject) => body.once('error', reject));
    try {
      await Promise.race([finished, bodyFailed]);
    } catch (err) {
      // abort() makes done() settle at once; a stalled body would otherwise keep it pending
      await upload.abort();
      await finished.catch(() => {});
      const uploadId = (upload as unknown as { uploadId?: string }).uploadId;
      if (uploadId) await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: this.objectKey(key), UploadId: uploadId })).catch(() => {});
      await this.delete(key).catch(() => {});
      body.destroy();
      throw err;
    } finally {
      bodyFailed.catch(() => {});
    }
  }

  async get(key: string): Promise<StoredBlob | undefined> {
    try {
      const r = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.objectKey(key) }));
      return { body: r.Body as Readable, size: r.ContentLength ?? 0 };
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async delete(key: string): Promise<void> {
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.objectKey(key) }));
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }

  async close(): Promise<void> {
    this.client.destroy();
  }
}

function isNotFound(err: unknown): boolean {
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
  return e?.name === 'NoSuchKey' || e?.name === 'NotFound' || e?.$metadata?.httpStatusCode === 404;
}
