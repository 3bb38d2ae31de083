/** Turns texts into vectors. Every vector of one provider + model + dimension lives in one space. */
export interface EmbeddingProvider {
  /** `local` or `openai`: recorded with every stored vector. */
  readonly provider: string;
  /** The model (for local, the word table and pooling version). */
  readonly model: string;
  /** One unit-length (or provider-normalised) vector per text, in order. */
  embed(texts: string[], signal?: AbortSignal): Promise<Float32Array[]>;
  /** Loads what the first call needs (a word table), so it does not delay a request. */
  warm(): Promise<void>;
}

/** The name of a vector space: vectors are only ever compared within one. */
export function embeddingSpace(provider: string, model: string, dimensions: number): string {
  return `${provider}:${model}:${dimensions}`;
}
