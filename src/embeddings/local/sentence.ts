import { fnv1a, type WordVectorTable } from './format.js';
import { baseForms, tokenize, trigrams } from './tokenize.js';

/** How word vectors are pooled into a sentence vector; the defaults are what the model name promises. */
export interface PoolingOptions {
  /** SIF smoothing `a` in a / (a + p(word)); smaller down-weights frequent words more. Default 0.01. */
  sifA: number;
  /** Share (0–1) of the table's common direction removed from the pooled vector. Default 0.35. */
  commonRemoval: number;
  /** Weight of an unknown word's hashed-trigram vector relative to the rarest known word. Default 0.5. */
  unknownWeight: number;
}

export const DEFAULT_POOLING: PoolingOptions = { sifA: 1e-2, commonRemoval: 0.35, unknownWeight: 0.5 };

/**
 * Turns text into a unit vector in the table's space: SIF-weighted mean of unit word vectors
 * (word frequency from its rank, Zipf), unknown words by their base form or else by a sum of
 * hashed pseudo-random trigram vectors (so two texts sharing a rare code like "FBX-42" still
 * meet), then the common direction removed.
 */
export function sentenceEmbedder(table: WordVectorTable, options: PoolingOptions = DEFAULT_POOLING) {
  const { dims } = table;
  // Zipf: p(rank) ≈ 1 / ((rank + 1) · H_n), H_n ≈ ln n + γ.
  const harmonic = Math.log(table.count) + 0.5772;
  const weightOf = (rank: number) => options.sifA / (options.sifA + 1 / ((rank + 1) * harmonic));
  const unknownWeight = options.unknownWeight * weightOf(table.count - 1);

  return (text: string): Float32Array => {
    const v = new Float32Array(dims);
    for (const word of tokenize(text)) {
      let rank = table.rank(word);
      if (rank < 0) rank = baseForms(word).map((w) => table.rank(w)).find((r) => r >= 0) ?? -1;
      if (rank >= 0) table.addTo(v, rank, weightOf(rank));
      else addHashed(v, word, unknownWeight);
    }
    if (options.commonRemoval > 0) {
      let dot = 0;
      for (let i = 0; i < dims; i++) dot += v[i]! * table.common[i]!;
      dot *= options.commonRemoval;
      for (let i = 0; i < dims; i++) v[i] = v[i]! - dot * table.common[i]!;
    }
    return normalize(v);
  };
}

/** Adds `weight ×` a deterministic pseudo-random unit vector built from the word's trigrams. */
function addHashed(v: Float32Array, word: string, weight: number): void {
  const grams = trigrams(word);
  const g = new Float32Array(v.length);
  for (const gram of grams) {
    let state = fnv1a(Buffer.from(gram, 'utf8')) || 1;
    for (let i = 0; i < g.length; i++) {
      // xorshift32: cheap, deterministic, good enough to spread the grams apart
      state ^= state << 13;
      state ^= state >>> 17;
      state ^= state << 5;
      g[i] = g[i]! + ((state >>> 0) / 0xffffffff - 0.5);
    }
  }
  normalize(g);
  for (let i = 0; i < v.length; i++) v[i] = v[i]! + weight * g[i]!;
}

/** Scales `v` to unit length in place (a zero vector stays zero) and returns it. */
export function normalize(v: Float32Array): Float32Array {
  let s = 0;
  for (let i = 0; i < v.length; i++) s += v[i]! * v[i]!;
  const n = Math.sqrt(s);
  if (n > 0) for (let i = 0; i < v.length; i++) v[i] = v[i]! / n;
  return v;
}
