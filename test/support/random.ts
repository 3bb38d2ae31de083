/**
 * A reproducible random source for randomized workloads: a 32-bit LCG in exact integer
 * arithmetic, read from its high bits (its low bits cycle with short periods). `rand(n)` is an
 * integer in [0, n).
 */
export function seededRandom(seed: number): (n: number) => number {
  let state = seed >>> 0;
  return (n) => {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    return (state >>> 16) % n;
  };
}
