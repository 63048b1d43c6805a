/**
 * Token-bucket rate limits keyed by client IP, license or machine. Two limiters with one
 * refusal (RATE_LIMITED, details.retry_after in seconds):
 *
 * - RateLimiter: in this process's memory, the SQLite default (one process is the whole
 *   server). Idle buckets are swept so a flood of distinct keys cannot grow the map.
 * - SharedRateLimiter: in the database every replica shares (rate_buckets, PostgreSQL),
 *   so a budget is one budget however many replicas spend it. Each take is ONE atomic
 *   upsert (INSERT .. ON CONFLICT DO UPDATE .. RETURNING): the row lock serializes
 *   concurrent takes of a key, so no two replicas both spend its last token. Full
 *   buckets carry no information and are pruned (prune()).
 */
import { sql, type Kysely } from 'kysely';
import { AegisError } from '../../protocol/src/index.js';
import type { Database } from './db/schema.js';

/** What the routes charge budgets through. */
export interface Limiter {
  /** Takes one token or refuses with RATE_LIMITED and the seconds until the next one. */
  take(key: string, limit: Limit): void | Promise<void>;
}

function refusal(tokens: number, rate: number): AegisError {
  const retryAfter = Math.max(1, Math.ceil((1 - tokens) / rate / 1000));
  return new AegisError('RATE_LIMITED', `too many requests; retry in ${retryAfter} s`, { details: { retry_after: retryAfter } });
}

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

export class RateLimiter implements Limiter {
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
    if (b.tokens < 1) throw refusal(b.tokens, rate);
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

/** Keys longer than this are hashed down (a client IP or an id is far shorter). */
const MAX_KEY = 200;

export class SharedRateLimiter implements Limiter {
  private readonly least: string;
  private readonly greatest: string;

  constructor(
    private readonly db: Kysely<Database>,
    dialect: 'sqlite' | 'postgres',
    private readonly now: () => number = () => Date.now(),
  ) {
    // SQLite's multi-argument min/max are PostgreSQL's least/greatest.
    this.least = dialect === 'sqlite' ? 'min' : 'least';
    this.greatest = dialect === 'sqlite' ? 'max' : 'greatest';
  }

  async take(key: string, limit: Limit): Promise<void> {
    const k = key.length > MAX_KEY ? key.slice(0, MAX_KEY) : key;
    const t = Math.floor(this.now());
    const rate = limit.perMinute / 60_000;
    const burst = limit.burst;
    // The refill, the take and "did it take" in one statement: the bucket as it stands
    // after refilling to now (capped at burst) is `level`; one token comes off when it
    // holds one. A clock behind the row's (another replica's) refills nothing.
    const least = sql.raw(this.least);
    const greatest = sql.raw(this.greatest);
    const dbl = (v: number) => sql<number>`cast(${v} as double precision)`;
    const level = sql<number>`${least}(${dbl(burst)}, rate_buckets.tokens + ${greatest}(${t} - rate_buckets.updated_ms, 0) * ${dbl(rate)})`;
    const taken = sql<number>`case when ${level} >= 1 then ${level} - 1 else ${level} end`;
    // When the bucket is full again (rows past it are pruned): ms to refill, rounded up.
    // Counted from the row's time when it is ahead of this clock, as the refill is.
    const full = sql<number>`${greatest}(rate_buckets.updated_ms, ${t}) + cast((${dbl(burst)} - (${taken})) / ${dbl(rate)} as bigint) + 1`;
    const row = await this.db
      .insertInto('rate_buckets')
      .values({ key: k, tokens: burst - 1, updated_ms: t, full_at_ms: t + Math.floor(1 / rate) + 1, ok: 1 })
      .onConflict((oc) =>
        oc.column('key').doUpdateSet({
          tokens: taken,
          updated_ms: sql<number>`${greatest}(rate_buckets.updated_ms, ${t})`,
          full_at_ms: full,
          ok: sql<number>`case when ${level} >= 1 then 1 else 0 end`,
        }),
      )
      .returning(['tokens', 'ok'])
      .executeTakeFirstOrThrow();
    if (Number(row.ok) !== 1) throw refusal(Number(row.tokens), rate);
  }

  /** Forgets buckets that have refilled completely; how many. */
  async prune(): Promise<number> {
    const r = await this.db.deleteFrom('rate_buckets').where('full_at_ms', '<=', Math.floor(this.now())).executeTakeFirst();
    return Number(r.numDeletedRows);
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
