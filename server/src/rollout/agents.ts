/**
 * What agents report (over NATS, aegis.agent.<host>.status|ack|flows): last status,
 * applied revision per service, and the flows their datapath denied or would deny, which
 * feed the segmenter. Reports are untrusted input: shapes are checked and sizes capped.
 */
import type { Kysely } from 'kysely';
import { AegisError, isHostId, type AgentAck, type AgentStatusReport } from '../../../protocol/src/index.js';
import type { Database } from '../db/schema.js';
import { iso, type Clock } from '../clock.js';

const MAX_FLOWS_PER_REPORT = 10_000;

export interface AgentView {
  host: string;
  machine_id: string | null;
  last_seen_at: string;
  status: AgentStatusReport | null;
  applied: Record<string, AgentAck>;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

export class AgentRegistry {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly clock: Clock,
  ) {}

  private async upsert(host: string, patch: { machine_id?: string | null; status?: string; applied?: string }): Promise<void> {
    const now = iso(this.clock.now());
    const row = await this.db.selectFrom('agents').selectAll().where('host', '=', host).executeTakeFirst();
    if (row) {
      await this.db
        .updateTable('agents')
        .set({ ...patch, last_seen_at: now })
        .where('host', '=', host)
        .execute();
    } else {
      await this.db
        .insertInto('agents')
        .values({ host, machine_id: patch.machine_id ?? null, status: patch.status ?? 'null', applied: patch.applied ?? '{}', last_seen_at: now })
        .execute();
    }
  }

  /** Dispatches one report; returns false for a report that is not well-formed. */
  async record(kind: 'status' | 'ack' | 'flows', host: string, data: unknown): Promise<boolean> {
    if (!isHostId(host) || !isObject(data) || data.host !== host) return false;
    if (kind === 'status') {
      if (typeof data.edition !== 'string' || !Array.isArray(data.services)) return false;
      await this.upsert(host, { status: JSON.stringify(data), machine_id: typeof data.machine_id === 'string' ? data.machine_id : null });
      return true;
    }
    if (kind === 'ack') {
      if (!Number.isInteger(data.service_id) || !Number.isInteger(data.revision)) return false;
      const row = await this.db.selectFrom('agents').select('applied').where('host', '=', host).executeTakeFirst();
      const applied = row ? (JSON.parse(row.applied) as Record<string, unknown>) : {};
      applied[String(data.service_id)] = data;
      await this.upsert(host, { applied: JSON.stringify(applied) });
      return true;
    }
    const flows = data.flows;
    if (!Number.isInteger(data.service_id) || !Array.isArray(flows) || flows.length > MAX_FLOWS_PER_REPORT) return false;
    const now = iso(this.clock.now());
    for (const f of flows) {
      if (!isObject(f) || typeof f.dst !== 'string' || f.dst.length > 64 || (f.proto !== 'tcp' && f.proto !== 'udp')) continue;
      if (!Number.isInteger(f.port) || (f.port as number) < 0 || (f.port as number) > 65535 || !Number.isInteger(f.count) || (f.count as number) < 1) continue;
      const key = { host, service_id: data.service_id as number, dst: f.dst, proto: f.proto, port: f.port as number };
      const existing = await this.db
        .selectFrom('agent_flows')
        .select('count')
        .where('host', '=', host)
        .where('service_id', '=', key.service_id)
        .where('dst', '=', key.dst)
        .where('proto', '=', key.proto)
        .where('port', '=', key.port)
        .executeTakeFirst();
      if (existing) {
        await this.db
          .updateTable('agent_flows')
          .set({ count: Number(existing.count) + (f.count as number), last_seen_at: now })
          .where('host', '=', host)
          .where('service_id', '=', key.service_id)
          .where('dst', '=', key.dst)
          .where('proto', '=', key.proto)
          .where('port', '=', key.port)
          .execute();
      } else {
        await this.db.insertInto('agent_flows').values({ ...key, count: f.count as number, last_seen_at: now }).execute();
      }
    }
    return true;
  }

  private view(r: Database['agents']): AgentView {
    return {
      host: r.host,
      machine_id: r.machine_id,
      last_seen_at: r.last_seen_at,
      status: JSON.parse(r.status) as AgentStatusReport | null,
      applied: JSON.parse(r.applied) as Record<string, AgentAck>,
    };
  }

  async list(): Promise<AgentView[]> {
    return (await this.db.selectFrom('agents').selectAll().orderBy('host').execute()).map((r) => this.view(r));
  }

  async get(host: string): Promise<AgentView> {
    const r = await this.db.selectFrom('agents').selectAll().where('host', '=', host).executeTakeFirst();
    if (!r) throw new AegisError('NOT_FOUND', `no agent ${host} has reported`);
    return this.view(r);
  }

  /**
   * Drops the registry rows of hosts whose last status named one of these machines (the
   * machines were deleted: their hosts no longer speak for any seat). Returns the hosts.
   */
  async forgetMachines(machineIds: readonly string[]): Promise<string[]> {
    if (machineIds.length === 0) return [];
    const rows = await this.db.selectFrom('agents').select('host').where('machine_id', 'in', [...machineIds]).execute();
    if (rows.length > 0) await this.db.deleteFrom('agents').where('machine_id', 'in', [...machineIds]).execute();
    return rows.map((r) => r.host);
  }

  /**
   * Flows reported for a service by all agents (or only by `hosts`, for an API key limited
   * to one customer), summed per destination (segmenter input).
   */
  async flows(serviceId: number, hosts: ReadonlySet<string> | null = null): Promise<Array<{ dst: string; proto: 'tcp' | 'udp'; port: number; count: number }>> {
    if (hosts !== null && hosts.size === 0) return [];
    let q = this.db.selectFrom('agent_flows');
    if (hosts !== null) q = q.where('host', 'in', [...hosts]);
    const rows = await q
      .select(['dst', 'proto', 'port', (eb) => eb.fn.sum<number>('count').as('count')])
      .where('service_id', '=', serviceId)
      .groupBy(['dst', 'proto', 'port'])
      .execute();
    return rows.map((r) => ({ dst: r.dst, proto: r.proto as 'tcp' | 'udp', port: Number(r.port), count: Number(r.count) }));
  }
}
