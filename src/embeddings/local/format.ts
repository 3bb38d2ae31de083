import fs from 'node:fs';

/**
 * The compact on-disk form of a word-vector table, read in one `readFileSync` and used in
 * place (no parsing): start-up costs tens of milliseconds instead of parsing ~300 MB of JSON.
 *
 *   header   64 bytes: magic "AFWV0001", dims, count, tableSlots, section offsets
 *   vectors  Int8[count × dims]  unit vectors × 127, in frequency-rank order (row = rank)
 *   offsets  Uint32[count + 1]   where each word's UTF-8 bytes start in `words`
 *   table    Uint32[tableSlots]  open-addressing hash (FNV-1a of the UTF-8 bytes) → rank + 1
 *   common   Float32[dims]       the table's first principal direction (removed from sentences)
 *   words    UTF-8 bytes of every word, back to back
 */
const MAGIC = 'AFWV0001';
const HEADER_BYTES = 64;

export interface WordVectorTable {
  readonly dims: number;
  readonly count: number;
  /** Rank (0 = most frequent) of `word`, or -1 when it is not in the table. */
  rank(word: string): number;
  /** Adds `weight ×` the unit vector of the word at `rank` to `into`. */
  addTo(into: Float32Array, rank: number, weight: number): void;
  /** The common direction removed from every sentence vector (unit length). */
  readonly common: Float32Array;
  /** Bytes held in memory. */
  readonly bytes: number;
}

export function fnv1a(bytes: Uint8Array, start = 0, end = bytes.length): number {
  let h = 0x811c9dc5;
  for (let i = start; i < end; i++) {
    h ^= bytes[i]!;
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

const align4 = (n: number) => (n + 3) & ~3;

/** Writes the compact file atomically (temp file + rename), so concurrent builders are safe. */
export function writeWordVectorFile(
  file: string,
  data: { dims: number; words: string[]; vectors: Int8Array; common: Float32Array },
): void {
  const { dims, words, vectors, common } = data;
  const count = words.length;
  const encoded = words.map((w) => Buffer.from(w, 'utf8'));
  const wordBytes = encoded.reduce((n, b) => n + b.length, 0);
  let slots = 1;
  while (slots < count * 2) slots <<= 1;
  const vecOff = HEADER_BYTES;
  const offOff = align4(vecOff + count * dims);
  const tableOff = offOff + (count + 1) * 4;
  const commonOff = tableOff + slots * 4;
  const wordsOff = commonOff + dims * 4;
  const buf = Buffer.alloc(wordsOff + wordBytes);
  buf.write(MAGIC, 0, 'latin1');
  [dims, count, slots, vecOff, offOff, tableOff, commonOff, wordsOff].forEach((v, i) => buf.writeUInt32LE(v, 8 + i * 4));
  Buffer.from(vectors.buffer, vectors.byteOffset, count * dims).copy(buf, vecOff);
  const offsets = new Uint32Array(buf.buffer, buf.byteOffset + offOff, count + 1);
  const table = new Uint32Array(buf.buffer, buf.byteOffset + tableOff, slots);
  let at = 0;
  encoded.forEach((b, rank) => {
    offsets[rank] = at;
    b.copy(buf, wordsOff + at);
    at += b.length;
    let slot = fnv1a(b) & (slots - 1);
    while (table[slot] !== 0) slot = (slot + 1) & (slots - 1);
    table[slot] = rank + 1;
  });
  offsets[count] = at;
  new Float32Array(buf.buffer, buf.byteOffset + commonOff, dims).set(common);
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, buf);
  fs.renameSync(tmp, file);
}

/** Opens a compact file written by `writeWordVectorFile`. */
export function readWordVectorFile(file: string): WordVectorTable {
  const raw = fs.readFileSync(file);
  // Typed-array views need 4-byte alignment; a large read is its own buffer, but make sure.
  const buf = raw.byteOffset % 4 === 0 ? raw : Buffer.from(raw);
  if (buf.toString('latin1', 0, 8) !== MAGIC) throw new Error(`${file} is not a word-vector file (bad magic); delete it to rebuild`);
  const [dims, count, slots, vecOff, offOff, tableOff, commonOff, wordsOff] = Array.from({ length: 8 }, (_, i) => buf.readUInt32LE(8 + i * 4)) as number[] as [number, number, number, number, number, number, number, number];
  const vectors = new Int8Array(buf.buffer, buf.byteOffset + vecOff, count * dims);
  const offsets = new Uint32Array(buf.buffer, buf.byteOffset + offOff, count + 1);
  const table = new Uint32Array(buf.buffer, buf.byteOffset + tableOff, slots);
  const common = new Float32Array(buf.buffer, buf.byteOffset + commonOff, dims);
  const words = new Uint8Array(buf.buffer, buf.byteOffset + wordsOff, buf.length - wordsOff);
  const mask = slots - 1;
  return {
    dims,
    count,
    common,
    bytes: buf.length,
    rank(word) {
      const b = Buffer.from(word, 'utf8');
      for (let slot = fnv1a(b) & mask; ; slot = (slot + 1) & mask) {
        const entry = table[slot]!;
        if (entry === 0) return -1;
        const r = entry - 1;
        const start = offsets[r]!;
        const len = offsets[r + 1]! - start;
        if (len === b.length && b.compare(words, start, start + len) === 0) return r;
      }
    },
    addTo(into, rank, weight) {
      const base = rank * dims;
      const w = weight / 127;
      for (let i = 0; i < dims; i++) into[i] = into[i]! + vectors[base + i]! * w;
    },
  };
}
