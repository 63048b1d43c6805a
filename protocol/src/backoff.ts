/**
 * Exponential backoff with full jitter (AWS architecture blog's "full jitter"): the n-th
 * wait is uniform in [0, min(cap, base·2^n)], so a fleet that lost its server does not
 * return in lockstep. Shared by the agent's refresh retries and the server's NATS
 * connection attempts. Callers honour a server's Retry-After as a floor.
 */
export interface BackoffPolicy {
  baseMs: number;
  capMs: number;
}

export const DEFAULT_BACKOFF: BackoffPolicy = { baseMs: 1000, capMs: 5 * 60_000 };

export function backoffDelay(attempt: number, policy: BackoffPolicy = DEFAULT_BACKOFF, random: () => number = Math.random): number {
  const ceiling = Math.min(policy.capMs, policy.baseMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}
