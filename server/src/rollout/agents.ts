/**
 * What agents report (over NATS, aegis.agent.<machine>.status|ack|flows, or the agent
 * listener): last status, applied revision per service, and what their datapath decided
 * per flow (into the flow log, whose denied egress feeds the segmenter). Every report is filed under the machine its
 * subject or credentials name, never under a name taken from the payload, and only while
 * that machine is active. Acks and flows count only for services targeted at the machine
 * (or at every host), so no host can speak for a service it does not run. Reports are
 * untrusted input: shapes are checked and sizes capped, and a flow report with one bad
 * field is refused whole.
 */
import type { Kysely } from 'kysely';
import { AegisError, ALL_HOSTS, isMachineId, type AgentAck, type AgentStatusReport } from '../../../protocol/src/index.js';
import type { Database } from '../db/schema.js';
import { iso, type Clock } from '../clock.js';
import { statusOf } from '../licenses.js';
import type { FlowLog } from './flow_log.js';
import { FlowReportError, parseFlowReport } from './flow_report.js';

export interface AgentView {
  machine_id: string;
  /** The hostname the machine activated with: a label, not an identity. */
  host: string;
  last_seen_at: string;
  status: AgentStatusReport | null;
  applied: Record<string, AgentAck>;
}

/** Why a report was not recorded (logged by the caller); a flow report's names its first bad field. */
export type ReportRefusal = 'malformed' | `malformed: ${string}` | 'unknown machine' | 'service not targeted at this machine';

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

export class AgentRegistry {
  /** Told of every recorded report, with the customer of the machine (the console's live updates). */
  onRecorded: ((kind: 'status' | 'ack' | 'flows', machineId: string, customerId: string) => void) | null = null;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly clock: Clock,
    private readonly flowLog: FlowLog,
  ) {}

  private async upsert(machineId: string, hostname: string, patch: { status?: string; applied?: string }): Promise<void> {
    const now = iso(this.clock.now());
    const row = await this.db.selectFrom('agents').select('machine_id').where('machine_id', '=', machineId).executeTakeFirst();
    if (row) {
      await this.db
        .updateTable('agents')
        .set({ ...patch, hostname, last_seen_at: now })
        .where('machine_id', '=', machineId)
        .execute();
    } else {
      await this.db
        .insertInto('agents')
        .values({ machine_id: machineId, hostname, status: patch.status ?? 'null', applied: patch.applied ?? '{}', last_seen_at: now })
        .execute();
    }
  }

  /** Whether service `serviceId` currently runs on `machineId` (its own target or every host's). */
  private async targeted(machineId: string, serviceId: number): Promise<boolean> {
    const row = await this.db
      .selectFrom('seg_current')
      .select('target')
      .where('service_id', '=', serviceId)
      .where((eb) => eb.or([eb('target', '=', machineId), eb('target', '=', ALL_HOSTS)]))
      .executeTakeFirst();
    return row !== undefined;
  }

  /**
   * Files one report under `machineId`, the machine its subject or credentials name.
   * Returns null when recorded, else why not. The payload's own `host` or `machine_id`
   * fields identify nothing.
   */
  async record(kind: 'status' | 'ack' | 'flows', machineId: string, data: unknown): Promise<ReportRefusal | null> {
    if (!isMachineId(machineId) || !isObject(data)) return 'malformed';
    const machine = await this.db
      .selectFrom('machines')
      .innerJoin('licenses', 'licenses.id', 'machines.license_id')
      .select(['machines.hostname as hostname', 'machines.status as status', 'licenses.status as license_status', 'licenses.expires_at as expires_at', 'licenses.customer_id as customer_id'])
      .where('machines.id', '=', machineId)
      .executeTakeFirst();
    // A machine that was deactivated, or whose license was revoked or ran out, speaks for nothing.
    if (!machine || machine.status !== 'active' || statusOf({ status: machine.license_status, expires_at: machine.expires_at }, this.clock.now()) !== 'active') {
      return 'unknown machine';
    }
    const hostname = machine.hostname;
    if (kind === 'status') {
      if (typeof data.edition !== 'string' || !Array.isArray(data.services)) return 'malformed';
      await this.upsert(machineId, hostname, { status: JSON.stringify({ ...data, host: hostname, machine_id: machineId }) });
      this.onRecorded?.(kind, machineId, machine.customer_id);
      return null;
    }
    if (kind === 'ack') {
      if (!Number.isInteger(data.service_id) || !Number.isInteger(data.revision)) return 'malformed';
      if (!(await this.targeted(machineId, data.service_id as number))) return 'service not targeted at this machine';
      const row = await this.db.selectFrom('agents').select('applied').where('machine_id', '=', machineId).executeTakeFirst();
      const applied = row ? (JSON.parse(row.applied) as Record<string, unknown>) : {};
      applied[String(data.service_id)] = { ...data, host: hostname };
      await this.upsert(machineId, hostname, { applied: JSON.stringify(applied) });
      this.onRecorded?.(kind, machineId, machine.customer_id);
      return null;
    }
    // One moment of receipt: what old-format lines' intervals are, and what orders the log.
    const receivedAt = this.clock.now();
    let report;
    try {
      report = parseFlowReport(data, receivedAt.getTime());
    } catch (e) {
      if (e instanceof FlowReportError) return `malformed: ${e.message}`;
      throw e;
    }
    if (!(await this.targeted(machineId, report.service_id))) return 'service not targeted at this machine';
    await this.flowLog.append(machineId, report.rows, receivedAt);
    await this.upsert(machineId, hostname, {});
    this.onRecorded?.(kind, machineId, machine.customer_id);
    return null;
  }

  private view(r: Database['agents']): AgentView {
    return {
      machine_id: r.machine_id,
      host: r.hostname,
      last_seen_at: r.last_seen_at,
      status: JSON.parse(r.status) as AgentStatusReport | null,
      applied: JSON.parse(r.applied) as Record<string, AgentAck>,
    };
  }

  /** Every machine's agent (or only `machines`, for an API key limited to one customer). */
  async list(machines: ReadonlySet<string> | null = null): Promise<AgentView[]> {
    if (machines !== null && machines.size === 0) return [];
    let q = this.db.selectFrom('agents').selectAll();
    if (machines !== null) q = q.where('machine_id', 'in', [...machines]);
    return (await q.orderBy('hostname').orderBy('machine_id').execute()).map((r) => this.view(r));
  }

  async get(machineId: string): Promise<AgentView> {
    const r = await this.db.selectFrom('agents').selectAll().where('machine_id', '=', machineId).executeTakeFirst();
    if (!r) throw new AegisError('NOT_FOUND', `no agent of machine ${machineId} has reported`);
    return this.view(r);
  }

  /** Drops the reports and flows of machines that were deleted. Returns the machines that had reported. */
  async forgetMachines(machineIds: readonly string[]): Promise<string[]> {
    if (machineIds.length === 0) return [];
    const rows = await this.db.selectFrom('agents').select('machine_id').where('machine_id', 'in', [...machineIds]).execute();
    await this.db.deleteFrom('agents').where('machine_id', 'in', [...machineIds]).execute();
    await this.flowLog.forgetMachines(machineIds);
    return rows.map((r) => r.machine_id);
  }
}
