/**
 * Readiness: whether this server can do its work now. The database answers a ping within
 * READINESS_TIMEOUT_MS and has run every migration this server knows, the signing key
 * loads, and NATS is connected when it is configured. /readyz and the metrics both read
 * it; liveness (/healthz) is only "the process serves" and needs none of it.
 */
import type { Kysely } from 'kysely';
import type { Database } from './db/schema.js';
import { pingDatabase, type Dialect } from './db/database.js';
import { pendingMigrations } from './db/migrations.js';
import type { Keyring } from './keys/keyring.js';

/** A ping or migration query slower than this counts as the database being down. */
export const READINESS_TIMEOUT_MS = 2000;

export type CheckName = 'database' | 'migrations' | 'signing_key' | 'nats';

/**
 * One check's verdict. `detail` is a fixed word or a count, never an error message: the
 * readiness endpoint is unauthenticated, and a driver's message can name hosts or users.
 */
export interface CheckResult {
  ok: boolean;
  detail: string;
}

export interface Readiness {
  ready: boolean;
  checks: Record<CheckName, CheckResult>;
  /** The ping's duration in seconds; null when it failed or timed out. */
  databasePingSeconds: number | null;
  /** Migrations not yet run; null when the database could not be asked. */
  pendingMigrations: number | null;
  /** Seconds since the active signing key was created; null without one. */
  signingKeyAgeSeconds: number | null;
}

/** NATS as readiness sees it: whether it is configured and, if so, connected. */
export interface NatsState {
  configured: boolean;
  connected: boolean;
}

export interface HealthDeps {
  db: Kysely<Database>;
  dialect: Dialect;
  keys: Keyring;
  now: () => Date;
  nats: () => NatsState;
}

class ReadinessTimeout extends Error {
  readonly code = 'READINESS_TIMEOUT';
  constructor(what: string) {
    super(`${what} did not answer within ${READINESS_TIMEOUT_MS} ms`);
    this.name = 'ReadinessTimeout';
  }
}

function within<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new ReadinessTimeout(what)), READINESS_TIMEOUT_MS);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

export class Health {
  constructor(private readonly d: HealthDeps) {}

  async readiness(): Promise<Readiness> {
    let databasePingSeconds: number | null = null;
    let database: CheckResult;
    const started = process.hrtime.bigint();
    try {
      await within(pingDatabase(this.d.db), 'the database');
      databasePingSeconds = Number(process.hrtime.bigint() - started) / 1e9;
      database = { ok: true, detail: 'reachable' };
    } catch (e) {
      database = { ok: false, detail: e instanceof ReadinessTimeout ? 'timeout' : 'unreachable' };
    }
    let pending: number | null = null;
    let migrations: CheckResult = { ok: false, detail: 'unknown (database unreachable)' };
    if (database.ok) {
      try {
        pending = (await within(pendingMigrations(this.d.db, this.d.dialect), 'the migration table')).length;
        migrations = pending === 0 ? { ok: true, detail: 'current' } : { ok: false, detail: `${pending} pending` };
      } catch {
        migrations = { ok: false, detail: 'unknown (migration table unreadable)' };
      }
    }
    let signing: CheckResult;
    let signingKeyAgeSeconds: number | null = null;
    try {
      const key = this.d.keys.signingKey();
      signingKeyAgeSeconds = Math.max(0, (this.d.now().getTime() - new Date(this.d.keys.info(key.kid).created_at).getTime()) / 1000);
      signing = { ok: true, detail: 'loaded' };
    } catch {
      signing = { ok: false, detail: 'unavailable' };
    }
    const n = this.d.nats();
    const nats: CheckResult = !n.configured ? { ok: true, detail: 'not configured' } : n.connected ? { ok: true, detail: 'connected' } : { ok: false, detail: 'disconnected' };
    const checks = { database, migrations, signing_key: signing, nats };
    return {
      ready: Object.values(checks).every((c) => c.ok),
      checks,
      databasePingSeconds,
      pendingMigrations: pending,
      signingKeyAgeSeconds,
    };
  }
}
