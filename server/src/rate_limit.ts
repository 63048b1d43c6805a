/**
 * Token-bucket rate limits keyed by client IP, license or machine. In memory: a limit is a
 * brake on abuse of one process, not an accounting record. Idle buckets are swept so a
 * flood of distinct keys cannot grow the map without bound.
 */
import { AegisError } from '../../protocol/src/index.js';

export interface Limit {
  /** Requests allowed in a burst. */
  burst: number;
  /** Sustained requests per minute. */
  perMinute: number;
}

interface Bucket {
  tokens: number;
  updated: number;
}

const MAX_BUCKETS = 100_000;

export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();

  constructor(private readonly now: () => number = () => Date.now()) {}

  /** Takes one token or throws RATE_LIMITED with the seconds until the next one. */
  take(key: string, limit: Limit): void {
    const t = this.now();
    const rate = limit.perMinute / 60_000; // tokens per ms
    let b = this.buckets.get(key);
    if (!b) {
      if (this.buckets.size >= MAX_BUCKETS) this.sweep(t, rate);
      b = { tokens: limit.burst, updated: t };
      this.buckets.set(key, b);
    } else {
      b.tokens = Math.min(limit.burst, b.tokens + (t - b.updated) * rate);
      b.updated = t;
    }
    if (b.tokens < 1) {
      const retryAfter = Math.max(1, Math.ceil((1 - b.tokens) / rate / 1000));
      throw new AegisError('RATE_LIMITED', `too many requests; retry in ${retryAfter} s`, { details: { retry_after: retryAfter } });
    }
    b.tokens -= 1;
  }

  private sweep(t: number, rate: number): void {
    for (const [k, b] of this.buckets) {
      // A bucket that has refilled completely carries no information.
      if ((t - b.updated) * rate >= 1000) this.buckets.delete(k);
    }
    if (this.buckets.size >= MAX_BUCKETS) this.buckets.clear();
  }
}

export interface RateLimits {
  activationPerIp: Limit;
  activationPerLicense: Limit;
  refreshPerMachine: Limit;
  refreshPerIp: Limit;
  validatePerIp: Limit;
  validatePerLicense: Limit;
}

export const DEFAULT_RATE_LIMITS: RateLimits = {
  activationPerIp: { burst: 30, perMinute: 30 },
  activationPerLicense: { burst: 20, perMinute: 20 },
  refreshPerMachine: { burst: 10, perMinute: 10 },
  refreshPerIp: { burst: 120, perMinute: 120 },
  validatePerIp: { burst: 600, perMinute: 600 },
  validatePerLicense: { burst: 120, perMinute: 120 },
};
