/**
 * The events table: what hosts report (threat detections, file verdicts, telemetry, and
 * flows once the correlator wants them), one time-ordered table for rule windows. Each row
 * is filed under the machine its credentials named and that machine's customer at the time,
 * ordered by `at` (when it happened on the host, bounded on ingest by the server's clock)
 * then id; queried newest first by keyset cursor; pruned by age and row count
 * (AEGIS_EVENT_RETENTION_DAYS, AEGIS_EVENT_MAX_ROWS) the way the flow log is.
 */
import type { Kysely } from 'kysely';
import type { Database } from '../db/schema.js';
import { pruneByAgeAndRows, type Retention } from '../db/retention.js';
import { iso, type Clock } from '../clock.js';
import { decodeTimeIdCursor, encodeTimeIdCursor } from '../pagination.js';

export const EVENT_SOURCES = ['threat', 'file_verdict', 'telemetry', 'flow'] as const;
export type EventSource = (typeof EVENT_SOURCES)[number];
export const EVENT_SEVERITIES = ['info', 'low', 'medium', 'high', 'critical'] as const;
export type EventSeverity = (typeof EVENT_SEVERITIES)[number];

export const DEFAULT_EVENT_QUERY_LIMIT = 100;
export const MAX_EVENT_QUERY_LIMIT = 1000;
/** Rows per INSERT: well inside SQLite's and PostgreSQL's bound-parameter limits. */
const INSERT_CHUNK = 200;

export interface NewEvent {
  source: EventSource;
  kind: string;
  at: string;
  severity: EventSeverity | null;
  body: Record<string, unknown>;
}

export interface StoredEvent {
  id: number;
  source: string;
  machine_id: string;
  customer_id: string | null;
  at: string;
  received_at: string;
  kind: string;
  severity: string | null;
  body: Record<string, unknown>;
}

export interface EventCursor {
  at: string;
  id: number;
}

export interface EventQuery {
  /** Only this customer's events (an API key limited to one customer); null: every customer. */
  customer: string | null;
  machine?: string;
  sources?: readonly EventSource[];
  kind?: string;
  since?: string;
  until?: string;
  limit: number;
  cursor?: EventCursor;
}

export function encodeEventCursor(c: EventCursor): string {
  return encodeTimeIdCursor(c.at, c.id);
}

/** Reads a cursor this server handed out; anything else is a 400 naming `cursor`. */
export function decodeEventCursor(text: string): EventCursor {
  return decodeTimeIdCursor(text);
}

export class EventStore {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly clock: Clock,
    readonly retention: Retention,
  ) {}

  /** The customer holding machine `machineId`'s license, or null. */
  async customerOf(machineId: string): Promise<string | null> {
    const row = await this.db
      .selectFrom('machines')
      .innerJoin('licenses', 'licenses.id', 'machines.license_id')
      .select('licenses.customer_id')
      .where('machines.id', '=', machineId)
      .executeTakeFirst();
    return row?.customer_id ?? null;
  }

  /**
   * Files `events` under `machineId`, all or none (one transaction); returns their ids in
   * order. `alsoInTransaction` writes in the same transaction (the ingest routes mark the
   * machine seen there: one commit per request instead of two).
   */
  async append(machineId: string, events: readonly NewEvent[], alsoInTransaction?: (trx: Kysely<Database>) => Promise<void>): Promise<number[]> {
    if (events.length === 0) return [];
    const customer_id = await this.customerOf(machineId);
    const received_at = iso(this.clock.now());
    return this.db.transaction().execute(async (trx) => {
      const ids: number[] = [];
      for (let i = 0; i < events.length; i += INSERT_CHUNK) {
        const rows = events.slice(i, i + INSERT_CHUNK).map((e) => ({
          source: e.source,
          machine_id: machineId,
          customer_id,
          at: e.at,
          received_at,
          kind: e.kind,
          severity: e.severity,
          body: JSON.stringify(e.body),
        }));
        const out = await trx.insertInto('events').values(rows).returning('id').execute();
        ids.push(...out.map((r) => Number(r.id)));
      }
      await alsoInTransaction?.(trx);
      return ids;
    });
  }

  /** A page of events, newest first (by `at`, then id), and the cursor of the next page. */
  async query(q: EventQuery): Promise<{ items: StoredEvent[]; next_cursor: string | null }> {
    let s = this.db.selectFrom('events').selectAll();
    if (q.customer !== null) s = s.where('customer_id', '=', q.customer);
    if (q.machine !== undefined) s = s.where('machine_id', '=', q.machine);
    if (q.sources !== undefined) s = s.where('source', 'in', [...q.sources]);
    if (q.kind !== undefined) s = s.where('kind', '=', q.kind);
    if (q.since !== undefined) s = s.where('at', '>=', q.since);
    if (q.until !== undefined) s = s.where('at', '<', q.until);
    const c = q.cursor;
    if (c !== undefined) s = s.where((eb) => eb.or([eb('at', '<', c.at), eb.and([eb('at', '=', c.at), eb('id', '<', c.id)])]));
    const rows = await s.orderBy('at', 'desc').orderBy('id', 'desc').limit(q.limit + 1).execute();
    const items = rows.slice(0, q.limit).map((r) => ({
      id: Number(r.id),
      source: r.source,
      machine_id: r.machine_id,
      customer_id: r.customer_id,
      at: r.at,
      received_at: r.received_at,
      kind: r.kind,
      severity: r.severity,
      body: JSON.parse(r.body) as Record<string, unknown>,
    }));
    const last = items[items.length - 1];
    return { items, next_cursor: rows.length > q.limit && last ? encodeEventCursor({ at: last.at, id: last.id }) : null };
  }

  /** Drops events older than the retention window, then the oldest beyond the row cap. */
  async prune(): Promise<{ expired: number; over_cap: number }> {
    return pruneByAgeAndRows(this.db as Kysely<any>, 'events', 'at', this.retention, this.clock.now());
  }
}
