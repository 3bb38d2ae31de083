import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';

/** A file part: its bytes as a buffer, or `size` bytes of a repeated pattern streamed in 64 KiB chunks. */
export interface FilePart {
  field?: string;
  filename?: string;
  contentType?: string;
  content?: Buffer | string;
  size?: number;
}

/** Bytes of a streamed file part of `size` bytes, without holding them all. */
async function* pattern(size: number): AsyncGenerator<Buffer> {
  const chunk = Buffer.alloc(64 * 1024, 'fabric-');
  for (let left = size; left > 0; left -= chunk.length) yield left >= chunk.length ? chunk : chunk.subarray(0, left);
}

/**
 * A multipart/form-data body streamed part by part (fields first, in order, then the file), with
 * its content-type header — for app.inject({ payload }) or fetch({ body, duplex: 'half' }).
 */
export function multipartBody(fields: [string, string][], file?: FilePart): { payload: Readable; headers: { 'content-type': string } } {
  const boundary = `----fabric${randomBytes(8).toString('hex')}`;
  async function* parts(): AsyncGenerator<Buffer> {
    for (const [name, value] of fields) yield Buffer.from(`--${boundary}\r\ncontent-disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`);
    if (file) {
      yield Buffer.from(
        `--${boundary}\r\ncontent-disposition: form-data; name="${file.field ?? 'file'}"; filename="${file.filename ?? 'report.txt'}"\r\ncontent-type: ${file.contentType ?? 'text/plain'}\r\n\r\n`,
      );
      if (file.content !== undefined) yield Buffer.from(file.content);
      else yield* pattern(file.size ?? 0);
      yield Buffer.from('\r\n');
    }
    yield Buffer.from(`--${boundary}--\r\n`);
  }
  return { payload: Readable.from(parts()), headers: { 'content-type': `multipart/form-data; boundary=${boundary}` } };
}

