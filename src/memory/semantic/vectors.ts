/** float32 little-endian bytes, the stored form of an embedding on every engine. */
export function toBytes(v: Float32Array): Buffer {
  const out = Buffer.alloc(v.length * 4);
  for (let i = 0; i < v.length; i++) out.writeFloatLE(v[i]!, i * 4);
  return out;
}

/** Copies stored bytes into `into` at `offset` (in floats). */
export function readBytes(bytes: Uint8Array, into: Float32Array, offset: number): void {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < bytes.byteLength / 4; i++) into[offset + i] = view.getFloat32(i * 4, true);
}

/** pgvector's text form: [0.1,0.2,…]. */
export function toVectorLiteral(v: Float32Array): string {
  return `[${Array.from(v).join(',')}]`;
}

/** Unit length, so cosine similarity is a dot product (providers may not normalise). */
export function unit(v: Float32Array): Float32Array {
  let s = 0;
  for (let i = 0; i < v.length; i++) s += v[i]! * v[i]!;
  const n = Math.sqrt(s);
  return n > 0 && Math.abs(n - 1) > 1e-6 ? v.map((x) => x / n) : v;
}
