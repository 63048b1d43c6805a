/**
 * Clock tampering on the host. The license's end is a comparison with the wall clock, and
 * root can set the wall clock back: without a floor, an expired token would verify again.
 * The guard keeps, in `<state>/clock_floor.json` (0600, written atomically), the newest
 * signed `iat` this host has verified (license and kernel tokens, snapshot messages) and
 * the latest time its own clock has shown (saved at start, on each check and every
 * minute). Expiry is judged at `effectiveNow()`, the latest of the clock, that `iat` and
 * that mark, so setting the clock back never makes a token valid again; and a clock more
 * than `LEEWAY_SECONDS` behind either is reported as `clock_tampered` (status, log, the
 * status report to the server).
 *
 * AEGIS_TEST_CLOCK_OFFSET_SECONDS (tests only) shifts the clock the guard reads, so a
 * test can run a real agent with its clock set forward or back.
 */
import type { Logger } from './logger.js';
import type { StateStore } from './state_store.js';

export const CLOCK_FLOOR_FILE = 'clock_floor.json';
/** How far behind the floor the clock may be before it counts as set back (NTP steps, skew). */
export const LEEWAY_SECONDS = 300;
const SAVE_EVERY_MS = 60_000;

interface ClockFloor {
  newest_iat: number;
  newest_iat_source: string;
  clock_high_water: number;
}

const checkFloor = (v: unknown): string | null => {
  const f = v as Partial<ClockFloor> | null;
  if (f === null || typeof f !== 'object') return 'not an object';
  if (!Number.isSafeInteger(f.newest_iat) || !Number.isSafeInteger(f.clock_high_water) || typeof f.newest_iat_source !== 'string') return 'missing fields';
  return null;
};

export interface ClockStatus {
  clock_tampered: boolean;
  /** Seconds the clock is behind the floor (0 when it is not). */
  behind_seconds: number;
  newest_signed_iat: number | null;
  newest_signed_iat_source: string | null;
  clock_high_water: string | null;
}

export class ClockGuard {
  private floor: ClockFloor = { newest_iat: 0, newest_iat_source: '', clock_high_water: 0 };
  private readonly offsetMs: number;
  private timer: NodeJS.Timeout | null = null;
  private reported = false;
  private saving: Promise<void> = Promise.resolve();

  constructor(
    private readonly store: StateStore,
    private readonly log: Logger,
    env: NodeJS.ProcessEnv = process.env,
  ) {
    const offset = Number(env.AEGIS_TEST_CLOCK_OFFSET_SECONDS ?? 0);
    this.offsetMs = Number.isFinite(offset) ? offset * 1000 : 0;
  }

  /** The wall clock (with the test offset). */
  now(): Date {
    return new Date(Date.now() + this.offsetMs);
  }

  private nowSeconds(): number {
    return Math.floor(this.now().getTime() / 1000);
  }

  /** Reads the saved floor, notes the clock, and starts the minutely save. */
  async restore(): Promise<void> {
    this.floor = this.store.read<ClockFloor>(CLOCK_FLOOR_FILE, checkFloor) ?? this.floor;
    this.check();
    await this.mark();
    this.timer = setInterval(() => void this.mark(), SAVE_EVERY_MS);
    this.timer.unref();
  }

  /** The time expiry is judged at: never earlier than what this host already saw. */
  effectiveNow(): Date {
    return new Date(Math.max(this.now().getTime(), this.floor.newest_iat * 1000, this.floor.clock_high_water * 1000));
  }

  /** Notes a verified signed `iat` (only call after the signature verified). */
  async observeIat(iat: unknown, source: string): Promise<void> {
    if (typeof iat !== 'number' || !Number.isSafeInteger(iat) || iat <= this.floor.newest_iat) return;
    this.floor = { ...this.floor, newest_iat: iat, newest_iat_source: source };
    this.check();
    await this.save();
  }

  /** Whether the clock is behind the floor by more than the leeway; logs it once per episode. */
  check(): boolean {
    const s = this.status();
    if (s.clock_tampered && !this.reported) {
      this.log.error('clock_tampered: the system clock is behind what this host already saw; license validity is judged at the later time', {
        behind_seconds: s.behind_seconds,
        newest_signed_iat: s.newest_signed_iat,
        source: s.newest_signed_iat_source,
        clock_high_water: s.clock_high_water,
      });
    }
    this.reported = s.clock_tampered;
    return s.clock_tampered;
  }

  status(): ClockStatus {
    const now = this.nowSeconds();
    const floor = Math.max(this.floor.newest_iat, this.floor.clock_high_water);
    const behind = Math.max(0, floor - now);
    return {
      clock_tampered: behind > LEEWAY_SECONDS,
      behind_seconds: behind,
      newest_signed_iat: this.floor.newest_iat || null,
      newest_signed_iat_source: this.floor.newest_iat_source || null,
      clock_high_water: this.floor.clock_high_water ? new Date(this.floor.clock_high_water * 1000).toISOString() : null,
    };
  }

  /** Raises the high-water mark to the clock now (never lowers it) and saves. */
  async mark(): Promise<void> {
    const now = this.nowSeconds();
    this.check();
    if (now <= this.floor.clock_high_water) return;
    this.floor = { ...this.floor, clock_high_water: now };
    await this.save();
  }

  private save(): Promise<void> {
    const value = { ...this.floor };
    this.saving = this.saving
      .then(() => this.store.write(CLOCK_FLOOR_FILE, value))
      .catch((e: unknown) => {
        this.log.warn('saving the clock floor failed', { error: (e as Error).message });
      });
    return this.saving;
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
