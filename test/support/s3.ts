import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import type { FilesConfig } from '../../src/config/index.js';

/** The part of s3rver's API the tests use (it ships no types). */
interface S3rverServer {
  run(): Promise<{ address: string; port: number }>;
  close(): Promise<void>;
}
const S3rver = createRequire(import.meta.url)('s3rver') as new (o: { port: number; address: string; directory: string; silent: boolean }) => S3rverServer;

/** A real S3-compatible server (s3rver) on a free local port, with one bucket. */
export interface LocalS3 {
  /** The S3 provider's configuration for this server and bucket. */
  config: FilesConfig['s3'];
  /** Where s3rver keeps the objects, as files. */
  dir: string;
  /** The same as FABRIC_S3_* environment variables. */
  env: Record<string, string>;
  stop(): Promise<void>;
}

export async function startLocalS3(bucket = 'fabric-files', prefix = ''): Promise<LocalS3> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fabric-s3rver-'));
  const server = new S3rver({ port: 0, address: '127.0.0.1', directory: dir, silent: true });
  const { port } = await server.run();
  const endpoint = `http://127.0.0.1:${port}`;
  const creds = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };
  const admin = new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials: creds });
  await admin.send(new CreateBucketCommand({ Bucket: bucket }));
  admin.destroy();
  return {
    config: { endpoint, bucket, region: 'us-east-1', ...creds, forcePathStyle: true, prefix },
    dir,
    env: {
      FABRIC_STORAGE: 's3',
      FABRIC_S3_ENDPOINT: endpoint,
      FABRIC_S3_BUCKET: bucket,
      FABRIC_S3_ACCESS_KEY_ID: creds.accessKeyId,
      FABRIC_S3_SECRET_ACCESS_KEY: creds.secretAccessKey,
      FABRIC_S3_FORCE_PATH_STYLE: 'true',
      ...(prefix ? { FABRIC_S3_PREFIX: prefix } : {}),
    },
    async stop() {
      await server.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
