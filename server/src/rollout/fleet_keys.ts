/**
 * Per-fleet keys and who may ask for a fleet's license.
 *
 * Every fleet has its own envelope key, derived from the server's master fleet key
 * (AEGIS_FLEET_KEY) with HKDF-SHA256 over the fleet name and the fleet's key generation
 * (protocol deriveFleetKey). The generation lives in `fleet_keys` (no row: generation 1)
 * and is read on every seal, so `aegis-server fleet-key rotate` takes effect on every
 * replica at the next envelope. The master key itself opens no envelope.
 *
 * A license request on aegis.agent.<token>.license is answered only for the requesting
 * machine's own fleet: requesterFleet() resolves the token to an active machine and its
 * license's fleet, in one place, so the token's meaning can change without touching the
 * rest.
 */
import type { Kysely } from 'kysely';
import { deriveFleetKey, isFleetName, type LicenseRequestRefusalCode } from '../../../protocol/src/index.js';
import type { Database } from '../db/schema.js';
import type { Clock } from '../clock.js';

/** A license request the server will not answer; `code` goes into the reply. */
export class FleetLicenseRefusal extends Error {
  constructor(
    readonly code: LicenseRequestRefusalCode,
    message: string,
  ) {
    super(message);
    this.name = 'FleetLicenseRefusal';
  }
}

/** An operator command on fleet keys that cannot be done (unknown fleet, bad name). */
export class FleetKeyError extends Error {
  constructor(
    readonly code: 'FLEET_UNKNOWN' | 'FLEET_NAME_INVALID',
    message: string,
  ) {
    super(message);
    this.name = 'FleetKeyError';
  }
}

export interface FleetKey {
  fleet: string;
  generation: number;
  key: Buffer;
}

/** True when some license (of any status) names the fleet. Reads only. */
export async function fleetExists(db: Kysely<Database>, fleet: string): Promise<boolean> {
  const row = await db.selectFrom('licenses').select('id').where('fleet', '=', fleet).limit(1).executeTakeFirst();
  return row !== undefined;
}

/**
 * The fleet a license request on aegis.agent.<token>.license may ask for: the token names
 * the requesting machine (machines.id; nats-server lets each agent publish only under its
 * own token), which must be active; the answer is its license's fleet. Reads only.
 */
export async function requesterFleet(db: Kysely<Database>, token: string): Promise<string> {
  const row = await db
    .selectFrom('machines')
    .innerJoin('licenses', 'licenses.id', 'machines.license_id')
    .select(['licenses.fleet as fleet'])
    .where('machines.id', '=', token)
    .where('machines.status', '=', 'active')
    .executeTakeFirst();
  if (!row) throw new FleetLicenseRefusal('REQUESTER_UNKNOWN', `no active machine ${token}: license requests come from activated machines only`);
  if (!row.fleet) throw new FleetLicenseRefusal('FLEET_MISMATCH', `machine ${token} holds a license that names no fleet`);
  return row.fleet;
}

export class FleetKeys {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly master: Buffer,
    private readonly clock: Clock,
  ) {}

  private static checkName(fleet: string): void {
    if (!isFleetName(fleet)) throw new FleetKeyError('FLEET_NAME_INVALID', `${JSON.stringify(fleet)} is not a fleet name`);
  }

  /** The fleet's current generation (1 until its first rotation). Reads only. */
  async generation(fleet: string): Promise<number> {
    const row = await this.db.selectFrom('fleet_keys').select('generation').where('fleet', '=', fleet).executeTakeFirst();
    return row ? Number(row.generation) : 1;
  }

  /** The fleet's current key: what its hosts must hold as fleet_key. Reads only. */
  async current(fleet: string): Promise<FleetKey> {
    FleetKeys.checkName(fleet);
    const generation = await this.generation(fleet);
    return { fleet, generation, key: deriveFleetKey(this.master, fleet, generation) };
  }

  /**
   * Moves the fleet to the next generation: envelopes sealed from now on open only with
   * the new key. Refused for a fleet no license names (no row for a mistyped name).
   */
  async rotate(fleet: string): Promise<FleetKey> {
    FleetKeys.checkName(fleet);
    if (!(await fleetExists(this.db, fleet))) throw new FleetKeyError('FLEET_UNKNOWN', `no license names fleet ${fleet}`);
    const now = this.clock.now().toISOString();
    const generation = await this.db.transaction().execute(async (tx) => {
      const row = await tx.selectFrom('fleet_keys').select('generation').where('fleet', '=', fleet).executeTakeFirst();
      const next = (row ? Number(row.generation) : 1) + 1;
      if (row) await tx.updateTable('fleet_keys').set({ generation: next, rotated_at: now }).where('fleet', '=', fleet).where('generation', '=', row.generation).execute();
      else await tx.insertInto('fleet_keys').values({ fleet, generation: next, rotated_at: now }).execute();
      return next;
    });
    return { fleet, generation, key: deriveFleetKey(this.master, fleet, generation) };
  }
}
