/**
 * The metered dimensions and their units. Quantities in reports and exports are in the usage
 * ledger's units (agent_quota_usage, migration 0009); plans state what they include in a
 * friendlier unit and price overage per a rate unit. All arithmetic is BigInt: exact.
 */
export const DIMENSIONS = ['tokens', 'compute', 'artifacts', 'storage'] as const;
export type Dimension = (typeof DIMENSIONS)[number];

export interface DimensionUnits {
  /** Unit of the ledger's `quantity`. */
  unit: string;
  /** Ledger units in one unit of a plan's `included`. */
  includedUnit: bigint;
  /** What `included` counts, for people. */
  includedLabel: string;
  /** Ledger units the overage rate is charged per. */
  rateUnit: bigint;
  /** What `overage_rate_micros` is per, for people. */
  rateLabel: string;
}

const GIB = 1024n ** 3n;

export const UNITS: Record<Dimension, DimensionUnits> = {
  tokens: { unit: 'tokens', includedUnit: 1n, includedLabel: 'tokens', rateUnit: 1000n, rateLabel: 'per 1,000 tokens' },
  compute: { unit: 'ms', includedUnit: 1000n, includedLabel: 'sandbox seconds', rateUnit: 1000n, rateLabel: 'per sandbox second' },
  artifacts: { unit: 'operations', includedUnit: 1n, includedLabel: 'artifact operations', rateUnit: 1n, rateLabel: 'per artifact operation' },
  storage: { unit: 'byte_hours', includedUnit: GIB, includedLabel: 'GiB-hours', rateUnit: GIB, rateLabel: 'per GiB-hour' },
};

/**
 * The charge, in micro-USD, for `overage` ledger units at `rateMicros` per rate unit: rounded up
 * to the whole micro-USD, once, on the period's cumulative overage. Per-event charges are the
 * differences of this function along the cumulative sum, so they add up to it exactly.
 */
export function overageCharge(dimension: Dimension, overage: bigint, rateMicros: bigint): bigint {
  if (overage <= 0n || rateMicros === 0n) return 0n;
  const unit = UNITS[dimension].rateUnit;
  return (overage * rateMicros + unit - 1n) / unit;
}

/** A BigInt as a JSON number; refuses (a bug, not a user error) past 2^53. */
export function toSafeNumber(value: bigint): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < BigInt(Number.MIN_SAFE_INTEGER))
    throw new Error(`billing: ${value} does not fit a JSON safe integer`);
  return Number(value);
}
