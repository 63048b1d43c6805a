/**
 * The flow log: every accepted flow report line, filed under the machine that reported it,
 * ordered by when the server received it (received_at, then id). It answers the operator's
 * time-ordered queries (newest first, keyset cursor), the segmenter's denied-egress input,
 * and is pruned by age (AEGIS_FLOW_RETENTION_DAYS) and size (AEGIS_FLOW_MAX_ROWS).
 */
import type { Kysely } from 'kysely';
import type { FlowLogVerdict, FlowProto } from '../../../protocol/src/index.js';
import type { Database } from '../db/schema.js';
import { iso, type Clock } from '../clock.js';
import type { FlowRow } from './flow_report.js';
import { pruneByAgeAndRows } from '../db/retention.js';
import { decodeTimeIdCursor, encodeTimeIdCursor } from '../pagination.js';

export const DEFAULT_FLOW_RETENTION_DAYS = 7;
export const DEFAULT_FLOW_MAX_ROWS = 5_000_000;
export const DEFAULT_FLOW_QUERY_LIMIT = 100;
export const MAX_FLOW_QUERY_LIMIT = 1000;
/** Rows per INSERT: well inside SQLite's and PostgreSQL's bound-parameter limits. */
const INSERT_CHUNK = 500;

export interface FlowRetention {
  days: number;
  maxRows: number;
}

/** Where a page ends: the last row's received_at and id. */
export interface FlowCursor {
  received_at: string;
  id: number;
}

export interface FlowQuery {
  /** The machines the caller may see (null: every machine). */
  machines: ReadonlySet<string> | null;
  machine?: string;
  service_id?: number;
  verdicts?: readonly FlowLogVerdict[];
  direction?: 'egress' | 'ingress';
  /** Received at or after (inclusive), ISO. */
  since?: string;
  /** Received before (exclusive), ISO. */
  until?: string;
  limit: number;
  cursor?: FlowCursor;
}

export interface FlowLogEntry {
  id: number;
  machine_id: string;
  service_id: number;
  revision: number | null;
  direction: string;
  verdict: string;
  proto: FlowProto;
  remote: string;
  port: number;
  rule: number | null;
  reason: string | null;
  count: number;
  interval: { start: string; end: string };
  received_at: string;
}

/** Denied (dropped or would-drop) egress over TCP/UDP: what the segmenter proposes edges from. */
const DENIED = ['dropped', 'would-drop'] as const;
const PROPOSABLE_PROTOS = ['tcp', 'udp'] as const;

/** The opaque cursor text of a position (base64url JSON). */
export function encodeFlowCursor(c: FlowCursor): string {
  return encodeTimeIdCursor(c.received_at, c.id);
}

/** Reads a cursor this server handed out; anything else is a 400 naming `cursor`. */
export function decodeFlowCursor(text: string): FlowCursor {
  const { at, id } = decodeTimeIdCursor(text);
  return { received_at: at, id };
}

function protoOut(text: string): FlowProto {
  return /^\d+$/.test(text) ? Number(text) : (text as FlowProto);
}

export class FlowLog {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly clock: Clock,
    readonly retention: FlowRetention = { days: DEFAULT_FLOW_RETENTION_DAYS, maxRows: DEFAULT_FLOW_MAX_ROWS },
  ) {}

  /** Files a report's rows under `machineId`, received at `receivedAt`, all or none (one transaction). */
  async append(machineId: string, rows: readonly FlowRow[], receivedAt: Date): Promise<void> {
    if (rows.length === 0) return;
    const received_at = iso(receivedAt);
    await this.db.transaction().execute(async (trx) => {
      for (let i = 0; i < rows.length; i += INSERT_CHUNK) {
        await trx
          .insertInto('flow_log')
          .values(rows.slice(i, i + INSERT_CHUNK).map((r) => ({ ...r, machine_id: machineId, received_at })))
          .execute();
      }
    });
  }

  /** A page of the log, newest first, and the cursor of the next page (null: no more). */
  async query(q: FlowQuery): Promise<{ items: FlowLogEntry[]; next_cursor: string | null }> {
    if (q.machines !== null && q.machines.size === 0) return { items: [], next_cursor: null };
    let s = this.db.selectFrom('flow_log').selectAll();
    if (q.machines !== null) s = s.where('machine_id', 'in', [...q.machines]);
    if (q.machine !== undefined) s = s.where('machine_id', '=', q.machine);
    if (q.service_id !== undefined) s = s.where('service_id', '=', q.service_id);
    if (q.verdicts !== undefined) s = s.where('verdict', 'in', [...q.verdicts]);
    if (q.direction !== undefined) s = s.where('direction', '=', q.direction);
    if (q.since !== undefined) s = s.where('received_at', '>=', q.since);
    if (q.until !== undefined) s = s.where('received_at', '<', q.until);
    const c = q.cursor;
    if (c !== undefined) {
      s = s.where((eb) => eb.or([eb('received_at', '<', c.received_at), eb.and([eb('received_at', '=', c.received_at), eb('id', '<', c.id)])]));
    }
    const rows = await s.orderBy('received_at', 'desc').orderBy('id', 'desc').limit(q.limit + 1).execute();
    const page = rows.slice(0, q.limit);
    const items = page.map((r) => ({
      id: Number(r.id),
      machine_id: r.machine_id,
      service_id: Number(r.service_id),
      revision: r.revision === null ? null : Number(r.revision),
      direction: r.direction,
      verdict: r.verdict,
      proto: protoOut(r.proto),
      remote: r.remote,
      port: Number(r.port),
      rule: r.rule === null ? null : Number(r.rule),
      reason: r.reason,
      count: Number(r.count),
      interval: { start: r.interval_start, end: r.interval_end },
      received_at: r.received_at,
    }));
    const last = items[items.length - 1];
    return { items, next_cursor: rows.length > q.limit && last ? encodeFlowCursor({ received_at: last.received_at, id: last.id }) : null };
  }

  /**
   * Denied egress a service's machines reported (or only `machines`', for an API key limited
   * to one customer), received at or after `since`, summed per destination: the segmenter's input.
   */
  async deniedEgress(serviceId: number, machines: ReadonlySet<string> | null, since?: string): Promise<Array<{ dst: string; proto: 'tcp' | 'udp'; port: number; count: number }>> {
    if (machines !== null && machines.size === 0) return [];
    let s = this.deniedEgressOf(serviceId, machines);
    if (since !== undefined) s = s.where('received_at', '>=', since);
    const rows = await s
      .select(['remote', 'proto', 'port', (eb) => eb.fn.sum<number>('count').as('count')])
      .groupBy(['remote', 'proto', 'port'])
      .orderBy('remote')
      .orderBy('proto')
      .orderBy('port')
      .execute();
    return rows.map((r) => ({ dst: r.remote, proto: r.proto as 'tcp' | 'udp', port: Number(r.port), count: Number(r.count) }));
  }

  /** The same denied egress per reporting machine, with when each destination was last reported. */
  async deniedEgressByMachine(serviceId: number, machines: ReadonlySet<string> | null): Promise<Array<{ machine_id: string; dst: string; proto: string; port: number; count: number; last_seen_at: string }>> {
    if (machines !== null && machines.size === 0) return [];
    const rows = await this.deniedEgressOf(serviceId, machines)
      .select(['machine_id', 'remote', 'proto', 'port', (eb) => eb.fn.sum<number>('count').as('count'), (eb) => eb.fn.max('received_at').as('last_seen_at')])
      .groupBy(['machine_id', 'remote', 'proto', 'port'])
      .orderBy('machine_id')
      .orderBy('remote')
      .orderBy('port')
      .orderBy('proto')
      .execute();
    return rows.map((r) => ({ machine_id: r.machine_id, dst: r.remote, proto: r.proto, port: Number(r.port), count: Number(r.count), last_seen_at: String(r.last_seen_at) }));
  }

  private deniedEgressOf(serviceId: number, machines: ReadonlySet<string> | null) {
    let s = this.db
      .selectFrom('flow_log')
      .where('service_id', '=', serviceId)
      .where('direction', '=', 'egress')
      .where('verdict', 'in', [...DENIED])
      .where('proto', 'in', [...PROPOSABLE_PROTOS]);
    if (machines !== null) s = s.where('machine_id', 'in', [...machines]);
    return s;
  }

  /**
   * Drops rows received before the retention window, then the oldest rows beyond the row
   * cap. Returns how many of each were removed.
   */
  async prune(): Promise<{ expired: number; over_cap: number }> {
    return pruneByAgeAndRows(this.db as Kysely<any>, 'flow_log', 'received_at', this.retention, this.clock.now());
  }

  /** Drops the flows of machines that were deleted. */
  async forgetMachines(machineIds: readonly string[]): Promise<void> {
    if (machineIds.length === 0) return;
    await this.db.deleteFrom('flow_log').where('machine_id', 'in', [...machineIds]).execute();
  }
}
