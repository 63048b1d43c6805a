/** Times for people: relative and absolute together, e.g. "in 42m (2026-11-22T05:30:00Z)". */

/** A duration in whole units, at most two of them: "42s", "5m 3s", "3h 12m", "12d 4h". */
export function formatDuration(totalSeconds: number): string {
  const units: Array<[string, number]> = [
    ['d', 86_400],
    ['h', 3_600],
    ['m', 60],
    ['s', 1],
  ];
  let s = Math.max(0, Math.round(totalSeconds));
  // Round to the second unit shown, so 29d 23h 59m 55s reads "30d", not "29d 23h".
  const lead = units.findIndex(([, size]) => s >= size);
  if (lead === -1) return '0s';
  const step = units[Math.min(lead + 1, units.length - 1)]![1];
  s = Math.round(s / step) * step;
  const parts: string[] = [];
  for (const [name, size] of units) {
    if (parts.length === 2) break;
    const n = Math.floor(s / size);
    s -= n * size;
    if (n > 0 || parts.length > 0) parts.push(`${n}${name}`);
  }
  // "3h 0m" says no more than "3h".
  return parts.filter((p, i) => i === 0 || !/^0\D$/.test(p)).join(' ');
}

/** ISO-8601 in UTC to the second: 2026-11-22T05:30:00Z. */
export function formatAbsolute(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/**
 * "in 42m (…)", "3d ago (…)", "now (…)"; `ifNull` when there is no time (e.g. "never" for
 * a perpetual license's expiry). Unparseable input is shown as it came.
 */
export function formatWhen(value: string | null | undefined, now: Date = new Date(), ifNull = '-'): string {
  if (value === null || value === undefined || value === '') return ifNull;
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return String(value);
  const delta = (d.getTime() - now.getTime()) / 1000;
  const abs = formatAbsolute(d);
  if (Math.abs(delta) < 1) return `now (${abs})`;
  return delta > 0 ? `in ${formatDuration(delta)} (${abs})` : `${formatDuration(-delta)} ago (${abs})`;
}

/** A time given as seconds since the epoch (JWT `exp`, `iat`). */
export function formatEpoch(seconds: unknown, now: Date = new Date(), ifNull = '-'): string {
  if (typeof seconds !== 'number' || !Number.isFinite(seconds)) return ifNull;
  return formatWhen(new Date(seconds * 1000).toISOString(), now, ifNull);
}
