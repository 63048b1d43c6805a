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
   * The machine a presented certificate belongs to, refusing (401) one that is unknown,
   * revoked, expired by the server's clock (a kept-alive connection outlives its
   * handshake), or whose machine or license is no longer active.
   */
  async check(serial: string, thumbprint: string): Promise<CertifiedPeer> {
    const row = await this.db
      .selectFrom('machine_certificates as c')
      .innerJoin('machines as m', 'm.id', 'c.machine_id')
      .innerJoin('licenses as l', 'l.id', 'm.license_id')
      .select(['c.serial', 'c.machine_id', 'c.thumbprint', 'c.not_after', 'c.revoked_at', 'm.status as machine_status', 'm.hostname', 'l.id as license_id', 'l.status as license_status'])
      .where('c.serial', '=', serial.toUpperCase())
      .executeTakeFirst();
    const refuse = (why: string) => new AegisError('UNAUTHORIZED', `client certificate refused: ${why}`);
    if (!row || row.thumbprint !== thumbprint) throw refuse('not issued by this server');
    if (row.revoked_at !== null) throw refuse('revoked');
    if (row.not_after <= iso(this.clock.now())) throw refuse('expired');
    if (row.machine_status !== 'active') throw refuse('machine deactivated');
    if (row.license_status === 'revoked') throw refuse('license revoked');
    return { serial: row.serial, machine_id: row.machine_id, license_id: row.license_id, hostname: row.hostname, thumbprint: row.thumbprint };
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
