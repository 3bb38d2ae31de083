import type { EmbeddingsConfig } from '../config/index.js';
import { ConfigError } from '../config/index.js';
import { LOCAL_MODEL, localEmbeddingProvider } from './local/provider.js';
import { openAiEmbeddingProvider } from './openai.js';
import type { EmbeddingProvider } from './provider.js';

export { embeddingSpace, type EmbeddingProvider } from './provider.js';
export { LOCAL_MODEL, loadWordTable } from './local/provider.js';
export { openAiEmbeddingProvider, type OpenAiEmbeddingOptions } from './openai.js';
export { convertWinkEmbeddings } from './local/convert.js';

/** The configured provider (FABRIC_EMBEDDINGS_*). */
export function createEmbeddingProvider(config: EmbeddingsConfig): EmbeddingProvider {
  if (config.provider === 'openai') return openAiEmbeddingProvider(config);
  if (config.model !== LOCAL_MODEL)
    throw new ConfigError(`invalid configuration:\n  FABRIC_EMBEDDINGS_MODEL: the local provider has one model, ${LOCAL_MODEL} (got "${config.model}")`);
  return localEmbeddingProvider(config.cacheDir);
}
