/** Exponential backoff with full jitter, capped: the n-th wait is uniform in [0, min(cap, base·2^n)]. */
export function backoffMs(attempt: number, baseMs = 1000, capMs = 30_000): number {
  return Math.floor(Math.random() * Math.min(capMs, baseMs * 2 ** Math.min(attempt, 20)));
}
