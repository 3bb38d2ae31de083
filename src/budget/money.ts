/**
 * Exact money: integer micro-USD (bigint), converted to and from decimal strings without
 * ever passing through a binary float. agent_quotas' numeric(14,6) USD columns are read
 * as micros in SQL (`(x * 1000000)::bigint`) and written as decimal strings.
 */
const DECIMAL = /^(-)?(\d+)(?:\.(\d{1,6}))?$/;

/** "12.5" → 12500000n; a number is converted through its shortest decimal string (0.1 → "0.1"). */
export function usdToMicros(usd: string | number): bigint {
  const text = typeof usd === 'number' ? numberToDecimal(usd) : usd.trim();
  const m = DECIMAL.exec(text);
  if (!m) throw new RangeError(`not a USD amount with at most 6 decimals: ${text}`);
  const micros = BigInt(m[2]!) * 1_000_000n + BigInt((m[3] ?? '').padEnd(6, '0'));
  return m[1] ? -micros : micros;
}

/** 12500000n → "12.5" (no trailing zeros, at least one integer digit). */
export function microsToUsd(micros: bigint | number | string): string {
  const v = BigInt(micros);
  const neg = v < 0n;
  const abs = neg ? -v : v;
  const whole = abs / 1_000_000n;
  const frac = (abs % 1_000_000n).toString().padStart(6, '0').replace(/0+$/, '');
  return `${neg ? '-' : ''}${whole}${frac ? `.${frac}` : ''}`;
}

/** A JS number as a plain decimal string (no exponent), or a RangeError. */
function numberToDecimal(n: number): string {
  if (!Number.isFinite(n)) throw new RangeError(`not a finite amount: ${n}`);
  const s = String(n);
  if (!/e/i.test(s)) return s;
  return n.toFixed(6).replace(/\.?0+$/, '');
}

/** Whether a number/string is a USD amount with at most 6 decimals (for zod refinements). */
export function isUsdAmount(v: string | number): boolean {
  try {
    usdToMicros(v);
    return true;
  } catch {
    return false;
  }
}
