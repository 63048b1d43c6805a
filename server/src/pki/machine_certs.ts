/**
 * The record of every client certificate issued to a machine (serial, machine, expiry,
 * revocation). The agent listener checks a peer's serial here on every request, so a
 * deactivated or revoked machine is refused at once: no CRL to download, and replicas
 * sharing the database agree.
 */
import type { Kysely } from 'kysely';
import { AegisError } from '../../../protocol/src/index.js';
import type { Database } from '../db/schema.js';
import { iso, type Clock } from '../clock.js';
import type { IssuedCertificate } from './authority.js';

export interface CertifiedPeer {
  serial: string;
  machine_id: string;
  license_id: string;
  hostname: string;
  thumbprint: string;
}

/**
 * A presented certificate whose own record is good (known, not revoked, not expired),
 * with the machine and license it hangs off, as stored: whether those may still be used
 * is the machine lifecycle's decision, not the certificate record's.
 */
export interface CertificateRecordCheck extends CertifiedPeer {
  machine_status: string;
  license: { status: string; expires_at: string | null; revoke_reason: string | null; allowed_major_versions: string };
}

/** The 401 every refused client certificate gets, naming why. */
export function certificateRefused(why: string): AegisError {
  return new AegisError('UNAUTHORIZED', `client certificate refused: ${why}`);
}

export class MachineCertificates {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly clock: Clock,
  ) {}

  async record(machineId: string, cert: IssuedCertificate): Promise<void> {
    await this.db
      .insertInto('machine_certificates')
      .values({
        serial: cert.serial,
        machine_id: machineId,
        thumbprint: cert.thumbprint,
        not_before: iso(cert.notBefore),
        not_after: iso(cert.notAfter),
        revoked_at: null,
        created_at: iso(this.clock.now()),
      })
      .execute();
  }

  /**
   * The record of a presented certificate, refusing (401) one that is unknown, revoked,
   * expired by the server's clock (a kept-alive connection outlives its handshake), or
   * whose machine is gone. The caller decides whether that machine and its license may
   * still be used.
   */
  async check(serial: string, thumbprint: string): Promise<CertificateRecordCheck> {
    // Left joins: a certificate revoked with its deleted machine is refused as revoked,
    // not as unknown.
    const row = await this.db
      .selectFrom('machine_certificates as c')
      .leftJoin('machines as m', 'm.id', 'c.machine_id')
      .leftJoin('licenses as l', 'l.id', 'm.license_id')
      .select([
        'c.serial',
        'c.machine_id',
        'c.thumbprint',
        'c.not_after',
        'c.revoked_at',
        'm.status as machine_status',
        'm.hostname',
        'l.id as license_id',
        'l.status as license_status',
        'l.expires_at as license_expires_at',
        'l.revoke_reason',
        'l.allowed_major_versions',
      ])
      .where('c.serial', '=', serial.toUpperCase())
      .executeTakeFirst();
    if (!row || row.thumbprint !== thumbprint) throw certificateRefused('not issued by this server');
    if (row.revoked_at !== null) throw certificateRefused('revoked');
    if (row.not_after <= iso(this.clock.now())) throw certificateRefused('expired');
    if (row.machine_status === null || row.hostname === null || row.license_id === null || row.license_status === null || row.allowed_major_versions === null) {
      throw certificateRefused('machine removed');
    }
    return {
      serial: row.serial,
      machine_id: row.machine_id,
      license_id: row.license_id,
      hostname: row.hostname,
      thumbprint: row.thumbprint,
      machine_status: row.machine_status,
      license: { status: row.license_status, expires_at: row.license_expires_at, revoke_reason: row.revoke_reason, allowed_major_versions: row.allowed_major_versions },
    };
  }

  /** Marks every unrevoked certificate of a machine revoked; returns how many. */
  async revokeMachine(machineId: string): Promise<number> {
    const res = await this.db
      .updateTable('machine_certificates')
      .set({ revoked_at: iso(this.clock.now()) })
      .where('machine_id', '=', machineId)
      .where('revoked_at', 'is', null)
      .executeTakeFirst();
    return Number(res.numUpdatedRows);
  }

  /** Revokes every unrevoked certificate of these machines (rows may already be deleted); returns how many. */
  async revokeMachines(machineIds: readonly string[]): Promise<number> {
    if (machineIds.length === 0) return 0;
    const res = await this.db
      .updateTable('machine_certificates')
      .set({ revoked_at: iso(this.clock.now()) })
      .where('machine_id', 'in', [...machineIds])
      .where('revoked_at', 'is', null)
      .executeTakeFirst();
    return Number(res.numUpdatedRows);
  }

  /** Revokes the certificates of every machine of a license. */
  async revokeLicense(licenseId: string): Promise<number> {
    const res = await this.db
      .updateTable('machine_certificates')
      .set({ revoked_at: iso(this.clock.now()) })
      .where('revoked_at', 'is', null)
      .where('machine_id', 'in', (eb) => eb.selectFrom('machines').select('id').where('license_id', '=', licenseId))
      .executeTakeFirst();
    return Number(res.numUpdatedRows);
  }

  async forMachine(machineId: string): Promise<Array<{ serial: string; not_after: string; revoked_at: string | null }>> {
    return this.db
      .selectFrom('machine_certificates')
      .select(['serial', 'not_after', 'revoked_at'])
      .where('machine_id', '=', machineId)
      .orderBy('created_at')
      .execute();
  }

  /** Drops records of certificates expired for a day: they can no longer be presented. */
  async prune(): Promise<void> {
    await this.db.deleteFrom('machine_certificates').where('not_after', '<', iso(new Date(this.clock.now().getTime() - 86_400_000))).execute();
  }
}
