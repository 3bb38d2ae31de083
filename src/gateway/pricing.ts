/** A model's prices: integer micro-USD per 1M input and output tokens. */
export interface ModelPrice {
  inputMicrosPer1M: number;
  outputMicrosPer1M: number;
}

/** What tokens cost in integer micro-USD, rounded up (exact BigInt arithmetic). */
export function costMicros(price: ModelPrice, inputTokens: number, outputTokens: number): bigint {
  const total = BigInt(inputTokens) * BigInt(price.inputMicrosPer1M) + BigInt(outputTokens) * BigInt(price.outputMicrosPer1M);
  return (total + 999_999n) / 1_000_000n;
}
