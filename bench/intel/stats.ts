/** Small helpers of bench/intel (tested in test/intel/bench_stats.test.ts). */

/** The p-th percentile (nearest rank) of `values`; NaN when empty. Does not change `values`. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

/** `a / b` with two decimals, or `n/a` when the baseline is zero or missing. */
export function ratio(a: number, b: number): string {
  return b > 0 && Number.isFinite(a) && Number.isFinite(b) ? `${(a / b).toFixed(2)}x` : 'n/a';
}

/** Reads `--name value` from `args`, else `dflt`. */
export function option(args: readonly string[], name: string, dflt: number): number {
  const i = args.indexOf(`--${name}`);
  if (i < 0) return dflt;
  const v = Number(args[i + 1]);
  if (!Number.isFinite(v) || v <= 0) throw new Error(`--${name} needs a positive number`);
  return v;
}
