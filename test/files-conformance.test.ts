import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { after, before, describe, it } from 'node:test';
import { fileBlobKey, LocalBlobStore, S3BlobStore, type BlobStore } from '../src/files/index.js';
import { MeasuringStream } from '../src/files/measure.js';
import { startLocalS3 } from './support/s3.js';

// One conformance suite, run against every storage provider: the local filesystem and an
// S3-compatible server (s3rver, a real HTTP S3 implementation started here on a free port).

interface Provider {
  /** A store over the same bytes as every other store this provider opens (as after a restart). */
  open(): BlobStore;
  /** Every object/file the provider holds, including partial or temporary ones. */
  listAll(): string[];
}

const key = (n: string) => fileBlobKey('default', '0b0e5b64-3c1b-4c1a-9a53-6d1f1f1f1f1f', `0b0e5b64-3c1b-4c1a-9a53-${n.padStart(12, '0')}`);

async function readAll(body: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of body) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** `size` bytes in 64 KiB chunks, failing with `fail` after `failAfter` bytes if given. */
function source(size: number, failAfter?: number): Readable {
  return Readable.from(
    (async function* () {
      const chunk = Buffer.alloc(64 * 1024, 7);
      let sent = 0;
      while (sent < size) {
        if (failAfter !== undefined && sent >= failAfter) throw new Error('client went away');
        const n = Math.min(chunk.length, size - sent);
        sent += n;
        yield chunk.subarray(0, n);
      }
    })(),
  );
}

function walk(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(path.join(dir, e.name)) : [path.join(dir, e.name)]));
}

function conformance(name: string, setup: () => Promise<{ provider: Provider; teardown(): Promise<void> }>): void {
  describe(`blob store conformance: ${name}`, () => {
    let provider: Provider;
    let store: BlobStore;
    let teardown: () => Promise<void>;
    before(async () => {
      ({ provider, teardown } = await setup());
      store = provider.open();
    });
    after(async () => {
      await store.close();
      await teardown();
    });

    it('stores streamed bytes and gives them back with their size', async () => {
      await store.put(key('1'), Readable.from([Buffer.from('hello '), Buffer.from('world')]));
      const got = await store.get(key('1'));
      assert.ok(got);
      assert.equal(got.size, 11);
      assert.equal((await readAll(got.body)).toString(), 'hello world');
    });

    it('stores an empty file', async () => {
      await store.put(key('2'), Readable.from([]));
      const got = await store.get(key('2'));
      assert.equal(got?.size, 0);
      assert.equal((await readAll(got!.body)).length, 0);
    });

    it('streams a 20 MB file in and out (several parts on S3)', async () => {
      await store.put(key('3'), source(20 * 1024 * 1024));
      const got = await store.get(key('3'));
      assert.equal(got?.size, 20 * 1024 * 1024);
      let n = 0;
      for await (const c of got!.body) n += (c as Buffer).length;
      assert.equal(n, 20 * 1024 * 1024);
    });

    it('takes the body through a transform, as uploads do (a MeasuringStream: no length known up front)', async () => {
      const measure = new MeasuringStream(50 * 1024 * 1024);
      await Promise.all([pipeline(source(10 * 1024 * 1024), measure), store.put(key('4'), measure)]);
      assert.equal(measure.bytesSeen, 10 * 1024 * 1024);
      assert.equal((await store.get(key('4')))?.size, 10 * 1024 * 1024);
    });

    it('a missing key is undefined; deleting it is not an error', async () => {
      assert.equal(await store.get(key('404')), undefined);
      await store.delete(key('404'));
    });

    it('delete removes the bytes', async () => {
      await store.put(key('5'), Readable.from([Buffer.from('bye')]));
      await store.delete(key('5'));
      assert.equal(await store.get(key('5')), undefined);
    });

    it('a body that fails midway rejects and leaves nothing behind, not even a partial copy', async () => {
      const before = provider.listAll().length;
      await assert.rejects(store.put(key('6'), source(12 * 1024 * 1024, 9 * 1024 * 1024)), /client went away/);
      assert.equal(await store.get(key('6')), undefined);
      assert.equal(provider.listAll().length, before, `left behind: ${provider.listAll().join(', ')}`);
    });

    it('a body that fails at once (before the file is even open) leaves nothing behind either', async () => {
      const before = provider.listAll().length;
      for (let i = 0; i < 20; i++) {
        const failing = new Readable({ read() {} });
        process.nextTick(() => failing.destroy(new Error('client went away')));
        await assert.rejects(store.put(key(`8${i}`), failing), /client went away/);
      }
      await new Promise((r) => setTimeout(r, 50)); // an open that finished after the rejection would show now
      assert.equal(provider.listAll().length, before, `left behind: ${provider.listAll().join(', ')}`);
    });

    it('keys not of the fabric\'s making are refused', async () => {
      for (const bad of ['../etc/passwd', '/abs', 'a//b', 'A/B', 'a/./b', '']) await assert.rejects(store.put(bad, Readable.from([])), /invalid blob key/);
    });

    it('bytes survive closing the store and opening a new one (a restart)', async () => {
      await store.put(key('7'), Readable.from([Buffer.from('durable')]));
      await store.close();
      store = provider.open();
      assert.equal((await readAll((await store.get(key('7')))!.body)).toString(), 'durable');
    });
  });
}

conformance('local filesystem', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fabric-blobs-'));
  return {
    provider: { open: () => new LocalBlobStore(dir), listAll: () => walk(dir) },
    teardown: async () => fs.rmSync(dir, { recursive: true, force: true }),
  };
});

conformance('S3-compatible (s3rver)', async () => {
  const s3 = await startLocalS3('fabric-files', 'files/');
  // s3rver keeps each object as files under its directory. It does not implement
  // AbortMultipartUpload (it answers MethodNotAllowed), so the parts of an aborted multipart
  // upload stay in its ._S3rver_uploads; AWS S3, MinIO and R2 drop them on the provider's abort.
  const objects = () => walk(s3.dir).filter((p) => !p.includes(`${path.sep}._S3rver_uploads${path.sep}`));
  return { provider: { open: () => new S3BlobStore(s3.config), listAll: objects }, teardown: () => s3.stop() };
});
