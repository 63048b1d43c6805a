/**
 * Snapshot targets: which machines a snapshot is for. Operators name hosts the way they
 * know them (`target_host`, hostnames) or exactly (`target_machine`, machine ids); both are
 * resolved here, once, when the snapshot is posted, to the ids of active machines, and
 * only ids are stored, published to and served. A hostname is a label any host may choose
 * at activation, so a name that several active machines hold is refused (409, listing
 * them) rather than guessed, and a key limited to one customer resolves names among that
 * customer's machines only.
 */
import type { Kysely } from 'kysely';
import { usableLicense } from '../usable_license.js';
import { AegisError, ALL_HOSTS, isAgentHostId, isMachineId, ValidationError } from '../../../protocol/src/index.js';
import type { Database } from '../db/schema.js';
import { iso, type Clock } from '../clock.js';

/** What the query string asked for; null: every host (`_all`). */
export interface TargetQuery {
  hosts: string[];
  machines: string[];
}

function list(text: string | null): string[] {
  if (text === null) return [];
  return [...new Set(text.split(',').map((h) => h.trim()).filter(Boolean))].sort();
}

/** Parses `target_host` and `target_machine` (comma-separated); neither: every host. */
export function parseTargetQuery(hostText: string | null, machineText: string | null): TargetQuery | null {
  const hosts = list(hostText);
  const machines = list(machineText);
  const bad = [
    ...hosts.filter((h) => !isAgentHostId(h)).map((h) => ({ path: 'target_host', message: `${JSON.stringify(h)} is not a host name (letters, digits, _ and -)` })),
    ...machines.filter((m) => !isMachineId(m)).map((m) => ({ path: 'target_machine', message: `${JSON.stringify(m)} is not a machine id` })),
  ];
  if (bad.length > 0) throw new ValidationError(bad);
  if (hosts.length === 0 && machines.length === 0) return null;
  return { hosts, machines };
}

export interface Candidate {
  machine_id: string;
  hostname: string;
  license_id: string;
  last_seen_at: string | null;
}

export class TargetResolver {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly clock: Clock,
  ) {}

  /** Active machines of usable licenses, optionally of one customer, whose hostname or id is listed. */
  private async active(customerId: string | null, by: 'hostname' | 'id', values: string[]): Promise<Candidate[]> {
    if (values.length === 0) return [];
    let q = this.db
      .selectFrom('machines')
      .innerJoin('licenses', 'licenses.id', 'machines.license_id')
      .select(['machines.id as machine_id', 'machines.hostname as hostname', 'machines.license_id as license_id', 'machines.last_seen_at as last_seen_at'])
      .where('machines.status', '=', 'active')
      .where(usableLicense(iso(this.clock.now())))
      .where(by === 'id' ? 'machines.id' : 'machines.hostname', 'in', values);
    if (customerId !== null) q = q.where('licenses.customer_id', '=', customerId);
    return (await q.orderBy('machines.id').execute()) as Candidate[];
  }

  /**
   * The machine ids `query` names (ALL_HOSTS for every host), among the active machines of
   * `customerId` (null: of every customer). Unknown names and ids are NOT_FOUND; a name
   * held by several active machines is CONFLICT with the candidates in details.
   */
  async resolve(query: TargetQuery | null, customerId: string | null): Promise<string[]> {
    if (query === null) return [ALL_HOSTS];
    const named = await this.active(customerId, 'hostname', query.hosts);
    const byName = new Map<string, Candidate[]>();
    for (const c of named) byName.set(c.hostname, [...(byName.get(c.hostname) ?? []), c]);
    const missingHosts = query.hosts.filter((h) => !byName.has(h));
    const byId = await this.active(customerId, 'id', query.machines);
    const missingMachines = query.machines.filter((m) => !byId.some((c) => c.machine_id === m));
    if (missingHosts.length > 0 || missingMachines.length > 0) {
      const what = [...missingHosts.map((h) => `named ${h}`), ...missingMachines.map((m) => `with id ${m}`)].join(', ');
      throw new AegisError('NOT_FOUND', `no active machine ${what}${customerId === null ? '' : " of this key's customer"}`, {
        details: { hosts: missingHosts, machines: missingMachines },
      });
    }
    const ambiguous = [...byName.entries()].filter(([, cs]) => cs.length > 1);
    if (ambiguous.length > 0) {
      throw new AegisError(
        'CONFLICT',
        `${ambiguous.map(([h, cs]) => `${h} names ${cs.length} active machines`).join('; ')}: target them by id with target_machine`,
        { details: { ambiguous: Object.fromEntries(ambiguous) } },
      );
    }
    return [...new Set([...named.map((c) => c.machine_id), ...byId.map((c) => c.machine_id)])].sort();
  }

  /** The hostname label of each machine id (ALL_HOSTS stays itself; an unknown id maps to itself). */
  async labels(ids: readonly string[]): Promise<string[]> {
    const real = ids.filter((id) => id !== ALL_HOSTS && isMachineId(id));
    const rows = real.length === 0 ? [] : await this.db.selectFrom('machines').select(['id', 'hostname']).where('id', 'in', real).execute();
    const names = new Map(rows.map((r) => [r.id, r.hostname]));
    return ids.map((id) => names.get(id) ?? id);
  }
}
