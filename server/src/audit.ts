/**
 * The audit trail: every mutation and every refused activation, refresh or validation,
 * with who (actor), what (event_type, ids) and why (reason).
 */
import type { Kysely } from 'kysely';
import type { Database } from './db/schema.js';
import type { Clock } from './clock.js';
import { iso } from './clock.js';

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

export class AuditLog {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly clock: Clock,
  ) {}

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
  }

  async list(f: AuditFilters): Promise<{ items: AuditRecord[]; total: number }> {
    let q = this.db.selectFrom('audit_logs');
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
