/**
 * What every part of a running server shares: storage, keys, clock, the event bus that
 * tells publishers (NATS, later) that a license changed, and the stats query.
 */
import { EventEmitter } from 'node:events';
import type { Kysely } from 'kysely';
import type { Database } from './db/schema.js';
import type { Dialect } from './db/database.js';
import { pingDatabase } from './db/database.js';
import type { Keyring } from './keys/keyring.js';
import type { TokenService } from './tokens.js';
import { iso, type Clock } from './clock.js';
import { statusOf } from './licenses.js';

export interface ServerStats {
  customers: { total: number; active: number };
  licenses: { total: number; by_status: Record<string, number>; by_tier: Record<string, number> };
  machines: { active: number; deactivated: number };
  activations_last_24h: number;
  refused_last_24h: number;
  signing_keys: { active: string | null; published: number };
}

export class ServerContext {
  readonly events = new EventEmitter();
  readonly startedAt = new Date().toISOString();

  constructor(
    readonly db: Kysely<Database>,
    readonly dialect: Dialect,
    readonly keys: Keyring,
    readonly tokens: TokenService,
    readonly clock: Clock,
    readonly version: string,
  ) {}

  ping(): Promise<void> {
    return pingDatabase(this.db);
  }

  /** Counts over every customer, or over `tenant` only (an API key limited to one customer). */
  async stats(tenant: string | null = null): Promise<ServerStats> {
    const now = this.clock.now();
    const dayAgo = iso(new Date(now.getTime() - 86_400_000));
    const count = (n: string | number | bigint) => Number(n);
    let cq = this.db.selectFrom('customers');
    if (tenant) cq = cq.where('id', '=', tenant);
    const customers = await cq
      .select((eb) => [eb.fn.countAll<number>().as('total'), eb.fn.sum<number>('is_active').as('active')])
      .executeTakeFirstOrThrow();
    let lq = this.db.selectFrom('licenses');
    if (tenant) lq = lq.where('customer_id', '=', tenant);
    const licenses = await lq.select(['status', 'expires_at', 'tier']).execute();
    const by_status: Record<string, number> = { active: 0, expired: 0, revoked: 0 };
    const by_tier: Record<string, number> = {};
    for (const l of licenses) {
      const s = statusOf(l, now);
      by_status[s] = (by_status[s] ?? 0) + 1;
      by_tier[l.tier] = (by_tier[l.tier] ?? 0) + 1;
    }
    let mq = this.db.selectFrom('machines').innerJoin('licenses', 'licenses.id', 'machines.license_id');
    if (tenant) mq = mq.where('licenses.customer_id', '=', tenant);
    const machines = await mq
      .select(['machines.status as status', (eb) => eb.fn.countAll<number>().as('n')])
      .groupBy('machines.status')
      .execute();
    let aq = this.db.selectFrom('audit_logs');
    if (tenant) aq = aq.where('customer_id', '=', tenant);
    const audit = await aq
      .select(['outcome', 'event_type', (eb) => eb.fn.countAll<number>().as('n')])
      .where('created_at', '>=', dayAgo)
      .groupBy(['outcome', 'event_type'])
      .execute();
    return {
      customers: { total: count(customers.total), active: count(customers.active ?? 0) },
      licenses: { total: licenses.length, by_status, by_tier },
      machines: {
        active: count(machines.find((m) => m.status === 'active')?.n ?? 0),
        deactivated: count(machines.find((m) => m.status === 'deactivated')?.n ?? 0),
      },
      activations_last_24h: audit.filter((a) => a.event_type === 'machine.activated').reduce((s, a) => s + count(a.n), 0),
      refused_last_24h: audit.filter((a) => a.outcome === 'refused').reduce((s, a) => s + count(a.n), 0),
      signing_keys: { active: this.keys.activeKid(), published: this.keys.jwks().keys.length },
    };
  }
}
