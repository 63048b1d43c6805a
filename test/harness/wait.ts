/** Polling for a condition that another process or a timer makes true. */

/** Polls `fn` every `intervalMs` until it returns something truthy, and returns that; fails naming `what` after `timeoutMs`. */
export async function eventually<T>(what: string, fn: () => Promise<T | null | undefined | false>, timeoutMs = 15_000, intervalMs = 200): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
