/**
 * The singleton lease: work that must run on exactly one replica at a time (republishing
 * snapshots, the periodic fleet license publisher, pruning, feed refresh, the correlator
 * pass) runs only while this replica holds it.
 *
 * PostgreSQL: one row in `leases` (holder id, expiry in the database's clock, an epoch
 * bumped on every change of holder), taken or renewed by ONE conditional upsert: it
 * succeeds only for the current holder or once the row expired. Renewed every third of
 * the lease; a replica that has not renewed in time stops believing it holds the lease
 * (measured on its own monotonic clock from before the renewal was sent), so it stops
 * well before another can take over; a replica killed with -9 is replaced as soon as its
 * row expires (AEGIS_LEASE_SECONDS).
 *
 * The lease is an efficiency, not the safety: what singleton work publishes is idempotent
 * and ordered by the database (fleet envelopes carry a per-fleet sequence bumped under a
 * row lock; snapshots are revisions), so even two holders at once (a forged row, a paused
 * process) never move an agent backwards.
 *
 * SQLite is one process: the lease is held from the start, nothing is written.
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { sql, type Kysely } from 'kysely';
import type { Dialect } from './db/database.js';
import type { Database } from './db/schema.js';

export const SINGLETON_LEASE = 'singleton';

export interface LeaseOptions {
  /** Seconds a holder's row stays valid without renewal. */
  seconds: number;
  name?: string;
  /** This replica's id (default: host, pid and a random suffix). */
  holder?: string;
  onChange?: (held: boolean, epoch: number) => void;
  onError?: (message: string, meta: object) => void;
}

export class Lease {
  readonly holder: string;
  readonly name: string;
  private heldUntil = 0;
  private epochNow = 0;
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private wasHeld = false;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly dialect: Dialect,
    private readonly opts: LeaseOptions,
  ) {
    this.name = opts.name ?? SINGLETON_LEASE;
    this.holder = opts.holder ?? `${hostname()}/${process.pid}/${randomUUID().slice(0, 8)}`;
  }

  /** Whether this replica may do singleton work now. */
  held(): boolean {
    if (this.dialect === 'sqlite') return true;
    return performance.now() < this.heldUntil;
  }

  /** The fencing epoch of the current holding (0 when never held). */
  get epoch(): number {
    return this.epochNow;
  }

  /** Tries to take or renew the lease once; whether it is held afterwards. */
  async tryAcquire(): Promise<boolean> {
    if (this.dialect === 'sqlite') return true;
    const sent = performance.now();
    const ms = Math.round(this.opts.seconds * 1000);
    const dbNow = sql<number>`(extract(epoch from clock_timestamp()) * 1000)::bigint`;
    const r = await sql<{ epoch: string | number }>`
      insert into leases (name, holder, expires_ms, epoch) values (${this.name}, ${this.holder}, ${dbNow} + ${ms}, 1)
      on conflict (name) do update set
        holder = excluded.holder,
        expires_ms = excluded.expires_ms,
        epoch = case when leases.holder = excluded.holder then leases.epoch else leases.epoch + 1 end
      where leases.holder = excluded.holder or leases.expires_ms < ${dbNow}
      returning epoch`.execute(this.db);
    const row = r.rows[0];
    if (row) {
      // Believe it for a little less than the database will: a margin for the round trip.
      this.heldUntil = sent + ms * 0.8;
      this.epochNow = Number(row.epoch);
    } else {
      this.heldUntil = 0;
    }
    this.report();
    return row !== undefined;
  }

  /** Starts renewing (every third of the lease). */
  start(): void {
    if (this.dialect === 'sqlite' || this.timer) return;
    const tick = () => {
      this.running = this.tryAcquire()
        .then(() => undefined)
        .catch((e: unknown) => {
          this.report();
          this.opts.onError?.('renewing the singleton lease failed', { error: (e as Error).message });
        })
        .finally(() => {
          this.running = null;
        });
    };
    tick();
    this.timer = setInterval(tick, Math.max(100, (this.opts.seconds * 1000) / 3));
    this.timer.unref();
  }

  /** Stops renewing and hands the lease back (another replica takes it at once). */
  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running;
    if (this.dialect === 'sqlite') return;
    const wasHeld = this.held();
    this.heldUntil = 0;
    if (wasHeld) await this.db.deleteFrom('leases').where('name', '=', this.name).where('holder', '=', this.holder).execute().catch(() => undefined);
  }

  private report(): void {
    const now = this.held();
    if (now !== this.wasHeld) {
      this.wasHeld = now;
      this.opts.onChange?.(now, this.epochNow);
    }
  }
}
