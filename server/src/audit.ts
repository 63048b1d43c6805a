/**
 * The audit trail: every mutation and every refused activation, refresh or validation,
 * with who (actor), what (event_type, ids) and why (reason).
 *
 * Refusals come mostly from traffic nobody authenticated, so their rows are bounded: per
 * (event type, client IP) the first N in a minute are recorded one by one, the rest only
 * counted, and the count is written as one `audit.refusals_suppressed` row when that
 * minute is over (on the next refusal of the pair, on the minutely sweep, or on close).
 * A flood from one address costs at most N + 1 rows a minute per event type, and no
 * refusal goes uncounted.
 */
import type { Kysely } from 'kysely';
import type { Database } from './db/schema.js';
import type { Clock } from './clock.js';
import { iso } from './clock.js';

/** Refused requests recorded per (event, client IP) and minute before the rest are only counted. */
export const DEFAULT_AUDIT_REFUSALS_PER_MINUTE = 20;

/** The event type of the row that counts refusals not recorded one by one. */
export const SUPPRESSED_EVENT = 'audit.refusals_suppressed';

const WINDOW_MS = 60_000;
/** Open windows kept in memory; past this, all are written out and forgotten. */
const MAX_WINDOWS = 10_000;

interface RefusalWindow {
  event_type: string;
  client_ip: string | null;
  start: number;
  recorded: number;
  suppressed: number;
}

export interface AuditEntry {
  event_type: string;
  outcome?: 'ok' | 'refused';
  actor: string;
  license_id?: string | null;
  customer_id?: string | null;
  machine_id?: string | null;
  client_ip?: string | null;
  reason?: string | null;
  data?: Record<string, unknown>;
}

export interface AuditFilters {
  event_type?: string;
  license_id?: string;
  customer_id?: string;
  since?: string;
  /** Only rows of this customer (an API key limited to one customer; see tenancy.ts). */
  tenant?: string | null;
  limit: number;
  offset: number;
}

export interface AuditRecord {
  id: number;
  event_type: string;
  outcome: string;
  actor: string;
  license_id: string | null;
  customer_id: string | null;
  machine_id: string | null;
  client_ip: string | null;
  reason: string | null;
  event_data: Record<string, unknown>;
  created_at: string;
}

/** Told of every recorded entry, with the handle it was written through (webhooks enqueue there). */
export type AuditListener = (e: AuditEntry, db: Kysely<Database>) => Promise<void>;

export class AuditLog {
  private readonly windows = new Map<string, RefusalWindow>();
  /** Runs after each row is written, in the same transaction when there is one. */
  listener: AuditListener | null = null;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly clock: Clock,
    private readonly refusalsPerMinute: number = DEFAULT_AUDIT_REFUSALS_PER_MINUTE,
  ) {}

  /**
   * Records a refused request within the per-(event type, client IP) bound; beyond it the
   * refusal is counted into the summary row of its minute.
   */
  async recordRefusal(e: Omit<AuditEntry, 'outcome'>): Promise<void> {
    const now = this.clock.now().getTime();
    const key = `${e.event_type}\u0000${e.client_ip ?? ''}`;
    let w = this.windows.get(key);
    if (w && now - w.start >= WINDOW_MS) {
      this.windows.delete(key);
      await this.writeSummary(w, now);
      w = undefined;
    }
    if (!w) {
      if (this.windows.size >= MAX_WINDOWS) await this.flush(now - WINDOW_MS);
      if (this.windows.size >= MAX_WINDOWS) await this.flush();
      w = { event_type: e.event_type, client_ip: e.client_ip ?? null, start: now, recorded: 0, suppressed: 0 };
      this.windows.set(key, w);
    }
    if (w.recorded < this.refusalsPerMinute) {
      w.recorded += 1;
      await this.record({ ...e, outcome: 'refused' });
    } else {
      w.suppressed += 1;
    }
  }

  /**
   * Writes the summary rows of windows that began before `startedBefore` (all of them
   * by default, as on close) and forgets those windows.
   */
  async flush(startedBefore = Number.POSITIVE_INFINITY): Promise<void> {
    const now = this.clock.now().getTime();
    const due = [...this.windows].filter(([, w]) => w.start < startedBefore);
    for (const [k] of due) this.windows.delete(k);
    for (const [, w] of due) await this.writeSummary(w, now);
  }

  private async writeSummary(w: RefusalWindow, now: number): Promise<void> {
    if (w.suppressed === 0) return;
    await this.record({
      event_type: SUPPRESSED_EVENT,
      outcome: 'refused',
      actor: 'aegis-server',
      client_ip: w.client_ip,
      reason: `${w.suppressed} more refused ${w.event_type} from ${w.client_ip ?? 'an unknown address'} beyond ${this.refusalsPerMinute} a minute, counted but not recorded one by one`,
      data: { event_type: w.event_type, client_ip: w.client_ip, suppressed: w.suppressed, from: iso(new Date(w.start)), until: iso(new Date(Math.min(now, w.start + WINDOW_MS))) },
    });
  }

  async record(e: AuditEntry, db: Kysely<Database> = this.db): Promise<void> {
    await db
      .insertInto('audit_logs')
      .values({
        event_type: e.event_type,
        outcome: e.outcome ?? 'ok',
        actor: e.actor,
        license_id: e.license_id ?? null,
        customer_id: e.customer_id ?? null,
        machine_id: e.machine_id ?? null,
        client_ip: e.client_ip ?? null,
        reason: e.reason ?? null,
        event_data: JSON.stringify(e.data ?? {}),
        created_at: iso(this.clock.now()),
      })
      .execute();
    if (this.listener) await this.listener(e, db);
  }

  async list(f: AuditFilters): Promise<{ items: AuditRecord[]; total: number }> {
    let q = this.db.selectFrom('audit_logs');
    if (f.tenant) q = q.where('customer_id', '=', f.tenant);
    if (f.event_type) q = q.where('event_type', '=', f.event_type);
    if (f.license_id) q = q.where('license_id', '=', f.license_id);
    if (f.customer_id) q = q.where('customer_id', '=', f.customer_id);
    if (f.since) q = q.where('created_at', '>=', f.since);
    const { count } = await q.select((eb) => eb.fn.countAll<string | number>().as('count')).executeTakeFirstOrThrow();
    const rows = await q.selectAll().orderBy('id', 'desc').limit(f.limit).offset(f.offset).execute();
    return {
      total: Number(count),
      items: rows.map((r) => ({ ...r, id: Number(r.id), event_data: JSON.parse(r.event_data) as Record<string, unknown> })),
    };
  }
}
