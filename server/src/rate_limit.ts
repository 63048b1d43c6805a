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
  take(key: string, limit: Limit | null): void | Promise<void>;
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
  take(key: string, limit: Limit | null): void {
    if (limit === null) return;
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

  async take(key: string, limit: Limit | null): Promise<void> {
    if (limit === null) return;
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

/**
 * Every budget the routes charge, by its name in AEGIS_RATE_LIMITS (config.ts parses it).
 * null: that limit is off.
 */
export interface RateLimits {
  activationPerIp: Limit | null;
  activationPerLicense: Limit | null;
  refreshPerMachine: Limit | null;
  refreshPerIp: Limit | null;
  heartbeatPerMachine: Limit | null;
  heartbeatPerIp: Limit | null;
  validatePerIp: Limit | null;
  validatePerLicense: Limit | null;
}

/** The AEGIS_RATE_LIMITS name of each limit. */
export const RATE_LIMIT_NAMES: Readonly<Record<keyof RateLimits, string>> = {
  activationPerIp: 'activation_per_ip',
  activationPerLicense: 'activation_per_license',
  refreshPerMachine: 'refresh_per_machine',
  refreshPerIp: 'refresh_per_ip',
  heartbeatPerMachine: 'heartbeat_per_machine',
  heartbeatPerIp: 'heartbeat_per_ip',
  validatePerIp: 'validate_per_ip',
  validatePerLicense: 'validate_per_license',
};

const perMinute = (n: number): Limit => ({ burst: n, perMinute: n });

/**
 * Defaults sized for real fleets (docs/operations.md, "Rate limits"), the burst one
 * minute's worth:
 * - validate_per_license 1200/min: a site license validated hourly by 10,000
 *   installations is ~170/min on average; 1200 leaves 7x headroom for installations that
 *   start together (72,000 validations an hour per license).
 * - validate_per_ip 1200/min: the same fleet behind one NAT address. A forged token costs
 *   one signature check (about 0.1 ms), so 20/s per address buys an attacker nothing.
 * - activation_per_license 300/min, activation_per_ip 300/min: a rollout of 10,000
 *   machines (one NAT address) takes its seats in about half an hour.
 * - refresh_per_machine 10/min, heartbeat_per_machine 10/min: an agent refreshes at half
 *   its kernel token's lifetime and heartbeats at its license's interval; 10 a minute is
 *   retries to spare, and bounds one stolen host key.
 * - refresh_per_ip 1200/min: 10,000 agents behind one address refreshing every 30 min
 *   (the default 1 h kernel token) are ~330/min.
 * - heartbeat_per_ip 12000/min: 10,000 agents behind one address beating every minute.
 */
export const DEFAULT_RATE_LIMITS: Readonly<RateLimits> = {
  activationPerIp: perMinute(300),
  activationPerLicense: perMinute(300),
  refreshPerMachine: perMinute(10),
  refreshPerIp: perMinute(1200),
  heartbeatPerMachine: perMinute(10),
  heartbeatPerIp: perMinute(12_000),
  validatePerIp: perMinute(1200),
  validatePerLicense: perMinute(1200),
};

const UNIT_MINUTES: Record<string, number> = { s: 1 / 60, sec: 1 / 60, min: 1, h: 60, hour: 60 };

/**
 * AEGIS_RATE_LIMITS: empty (the defaults), `off` (no limit at all), or comma-separated
 * `name=N/unit` (unit s, min or h; the burst is N) or `name=off`; names not given keep
 * their default. Anything else throws one line naming the bad entry.
 */
export function parseRateLimits(text: string | undefined): RateLimits {
  const out: RateLimits = { ...DEFAULT_RATE_LIMITS };
  const t = (text ?? '').trim();
  if (t === '') return out;
  const byName = new Map(Object.entries(RATE_LIMIT_NAMES).map(([k, n]) => [n, k as keyof RateLimits]));
  if (t === 'off') {
    for (const k of byName.values()) out[k] = null;
    return out;
  }
  const seen = new Set<string>();
  for (const entry of t.split(',').map((e) => e.trim())) {
    const m = /^([a-z_]+)=(?:(off)|(\d+)\/([a-z]+))$/.exec(entry);
    const key = m ? byName.get(m[1]!) : undefined;
    if (!m || !key) {
      const name = entry.split('=')[0]!;
      const why = m && !key ? `unknown limit ${JSON.stringify(name)} (known: ${[...byName.keys()].join(', ')})` : `${JSON.stringify(entry)} is not name=N/unit or name=off`;
      throw new Error(`AEGIS_RATE_LIMITS: ${why}; e.g. validate_per_license=600/min,activation_per_ip=30/min, or off`);
    }
    if (seen.has(m[1]!)) throw new Error(`AEGIS_RATE_LIMITS: ${m[1]} is given twice`);
    seen.add(m[1]!);
    if (m[2]) {
      out[key] = null;
      continue;
    }
    const n = Number(m[3]);
    const unit = UNIT_MINUTES[m[4]!];
    if (unit === undefined) throw new Error(`AEGIS_RATE_LIMITS: ${m[1]}: unit ${JSON.stringify(m[4])} is not s, min or h`);
    if (!Number.isSafeInteger(n) || n < 1 || n > 1e9) throw new Error(`AEGIS_RATE_LIMITS: ${m[1]}: ${m[3]} must be an integer from 1 to 1000000000`);
    out[key] = { burst: n, perMinute: n / unit };
  }
  return out;
}
