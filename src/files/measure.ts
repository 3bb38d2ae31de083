import { createHash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';

/** Thrown through the stream when more than `limit` bytes arrive. */
export class TooManyBytesError extends Error {
  override name = 'TooManyBytesError';
  constructor(readonly limit: number) {
    super(`more than ${limit} bytes`);
  }
}

/**
 * Passes bytes through while counting and hashing them; fails with TooManyBytesError as soon as
 * more than `limit` bytes have come, before passing the excess on.
 */
export class MeasuringStream extends Transform {
  bytesSeen = 0;
  private readonly hash = createHash('sha256');

  constructor(private readonly limit: number) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.bytesSeen += chunk.length;
    if (this.bytesSeen > this.limit) return done(new TooManyBytesError(this.limit));
    this.hash.update(chunk);
    done(null, chunk);
  }

  /** Hex SHA-256 of everything that passed; call once, after the stream ended. */
  sha256(): string {
    return this.hash.digest('hex');
  }
}
