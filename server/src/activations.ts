/**
 * Binding licenses to machines (seed 000's activation, made hard to fool): a machine is a
 * hardware fingerprint plus the host's own Ed25519 key. Knowing a hardware id is never
 * enough: every activation, refresh and self-deactivation carries a fresh proof signed
 * by the host key the seat was bound to.
 */
import { randomUUID } from 'node:crypto';
import type { Kysely, Selectable } from 'kysely';
import {
  AegisError,
  AUD_ACTIVATION_PROOF,
  AUD_DEACTIVATION_PROOF,
  AUD_REFRESH_PROOF,
  DEFAULT_KERNEL_TOKEN_TTL_SECONDS,
  PRODUCT_NAME,
  jwkThumbprint,
  type Ed25519PublicJwk,
  type Tier,
} from '../../protocol/src/index.js';
import type { Database, LicensesTable, MachinesTable } from './db/schema.js';
import type { Dialect } from './db/database.js';
import { epochSeconds, iso, type Clock } from './clock.js';
import { NOT_FOUND_MESSAGE } from './customers.js';
import { acceptProof, publicKeyFromJwk } from './host_proof.js';
import { Licenses, statusOf, toLicense, toMachine, type Machine } from './licenses.js';
import type { TokenService } from './tokens.js';
import type { KeyStore } from './keys/keystore.js';

export interface ActivationInput {
  license_key: string;
  hardware_id: string;
  host_public_key: Ed25519PublicJwk;
  hostname: string;
  agent_version: string;
  proof: string;
}

export interface IssuedTokens {
  machine_id: string;
  license_token: string;
  kernel_token: string;
  kernel_token_expires_at: string;
  license_expires_at: string | null;
  jwks: ReturnType<KeyStore['jwks']>;
}

export interface ActivationResult extends IssuedTokens {
  created: boolean;
  license_id: string;
  customer_id: string;
}

/** Thrown refusals carry the ids the audit record needs. */
export class Refusal extends AegisError {
  constructor(
    base: AegisError,
    readonly ids: { license_id?: string; customer_id?: string; machine_id?: string },
  ) {
    super(base.code, base.message, { details: base.details, cause: base });
    this.name = 'Refusal';
  }
}

export function majorOf(version: string): string | null {
  const m = /^v?(\d+)(?:\.|$)/.exec(version.trim());
  return m ? String(Number(m[1])) : null;
}

export class Activations {
  private readonly licenses: Licenses;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly dialect: Dialect,
    private readonly clock: Clock,
    private readonly tokens: TokenService,
    private readonly keys: KeyStore,
    private readonly kernelTtlSeconds = DEFAULT_KERNEL_TOKEN_TTL_SECONDS,
  ) {
    this.licenses = new Licenses(db, clock);
  }

  /** Refuses a license that cannot be used now, naming why. */
  private checkUsable(lic: Selectable<LicensesTable>, agentVersion: string | null): void {
    const ids = { license_id: lic.id, customer_id: lic.customer_id };
    const status = statusOf(lic, this.clock.now());
    if (status === 'revoked') throw new Refusal(new AegisError('LICENSE_REVOKED', `license revoked${lic.revoke_reason ? `: ${lic.revoke_reason}` : ''}`), ids);
    if (status === 'expired') throw new Refusal(new AegisError('LICENSE_EXPIRED', `license expired at ${lic.expires_at}`), ids);
    if (agentVersion !== null) {
      const allowed = JSON.parse(lic.allowed_major_versions) as string[];
      const major = majorOf(agentVersion);
      if (allowed.length > 0 && (major === null || !allowed.includes(major))) {
        throw new Refusal(
          new AegisError('VERSION_MISMATCH', `agent version ${agentVersion} is not allowed by this license (allowed majors: ${allowed.join(', ')})`),
          ids,
        );
      }
    }
  }

  /**
   * Activates a machine. `onLicense` runs once the key has resolved to a license and
   * before any work on it (the HTTP layer applies its per-license rate limit there).
   */
  async activate(input: ActivationInput, onLicense: (licenseId: string) => void = () => {}): Promise<ActivationResult> {
    const lic = await this.licenses.rowByKey(input.license_key);
    const ids = { license_id: lic.id, customer_id: lic.customer_id };
    onLicense(lic.id);
    const hostKey = publicKeyFromJwk(input.host_public_key);
    const thumbprint = jwkThumbprint(input.host_public_key);
    try {
      await acceptProof(this.db, this.clock, input.proof, { audience: AUD_ACTIVATION_PROOF, hardwareId: input.hardware_id, key: hostKey });
    } catch (e) {
      throw e instanceof AegisError ? new Refusal(e, ids) : e;
    }
    this.checkUsable(lic, input.agent_version);

    const now = iso(this.clock.now());
    const { machine, created } = await this.db.transaction().execute(async (tx) => {
      // Serialise activations of one license: the seat count read below must not change
      // before our insert commits. PostgreSQL takes a row lock; SQLite serialises all
      // transactions on its single connection.
      if (this.dialect === 'postgres') {
        await tx.selectFrom('licenses').select('id').where('id', '=', lic.id).forUpdate().executeTakeFirstOrThrow();
      }
      const bound = await tx.selectFrom('machines').selectAll().where('hardware_id', '=', input.hardware_id).where('status', '=', 'active').execute();
      const other = bound.find((m) => m.host_key_thumbprint !== thumbprint);
      if (other) {
        throw new Refusal(
          new AegisError('HOST_KEY_MISMATCH', 'this hardware id is already bound to a different host key; deactivate that machine first'),
          { ...ids, machine_id: other.id },
        );
      }
      const same = bound.find((m) => m.license_id === lic.id);
      if (same) {
        await tx
          .updateTable('machines')
          .set({ hostname: input.hostname, agent_version: input.agent_version, last_seen_at: now })
          .where('id', '=', same.id)
          .execute();
        return { machine: { ...same, hostname: input.hostname, agent_version: input.agent_version, last_seen_at: now }, created: false };
      }
      const { n } = await tx
        .selectFrom('machines')
        .select((eb) => eb.fn.countAll<string | number>().as('n'))
        .where('license_id', '=', lic.id)
        .where('status', '=', 'active')
        .executeTakeFirstOrThrow();
      if (Number(n) >= Number(lic.max_machines)) {
        throw new Refusal(
          new AegisError('SEAT_LIMIT', `all ${lic.max_machines} seat(s) of this license are in use; deactivate a machine to free one`, {
            details: { max_machines: Number(lic.max_machines), active_machines: Number(n) },
          }),
          ids,
        );
      }
      const row: Selectable<MachinesTable> = {
        id: randomUUID(),
        license_id: lic.id,
        hardware_id: input.hardware_id,
        host_key_thumbprint: thumbprint,
        host_public_key: JSON.stringify({ kty: 'OKP', crv: 'Ed25519', x: input.host_public_key.x }),
        hostname: input.hostname,
        agent_version: input.agent_version,
        status: 'active',
        activated_at: now,
        last_seen_at: now,
        deactivated_at: null,
      };
      await tx.insertInto('machines').values(row).execute();
      return { machine: row, created: true };
    });
    const tokens = await this.issueTokens(lic, machine);
    return { ...tokens, created, license_id: lic.id, customer_id: lic.customer_id };
  }

  private async machineRow(id: string): Promise<Selectable<MachinesTable>> {
    const m = await this.db.selectFrom('machines').selectAll().where('id', '=', id).executeTakeFirst();
    if (!m) throw new AegisError('NOT_FOUND', NOT_FOUND_MESSAGE);
    return m;
  }

  private async checkMachineProof(m: Selectable<MachinesTable>, proof: unknown, audience: string): Promise<void> {
    const jwk = JSON.parse(m.host_public_key) as Ed25519PublicJwk;
    await acceptProof(this.db, this.clock, proof, { audience, hardwareId: m.hardware_id, key: publicKeyFromJwk(jwk) });
  }

  /** Fresh license and kernel tokens for a bound machine that proves it holds its key. */
  refresh(machineId: string, proof: unknown): Promise<IssuedTokens & { license_id: string; customer_id: string }> {
    return this.refreshWith(machineId, (m) => this.checkMachineProof(m, proof, AUD_REFRESH_PROOF));
  }

  /**
   * Fresh tokens for a machine the transport already authenticated (a client
   * certificate checked against its records plus a scoped access token).
   */
  refreshAuthenticated(machineId: string): Promise<IssuedTokens & { license_id: string; customer_id: string }> {
    return this.refreshWith(machineId, async () => {});
  }

  private async refreshWith(
    machineId: string,
    authenticate: (m: Selectable<MachinesTable>) => Promise<void>,
  ): Promise<IssuedTokens & { license_id: string; customer_id: string }> {
    const m = await this.machineRow(machineId);
    const lic = await this.licenses.row(m.license_id);
    const ids = { license_id: lic.id, customer_id: lic.customer_id, machine_id: m.id };
    try {
      await authenticate(m);
      if (m.status !== 'active') throw new AegisError('MACHINE_DEACTIVATED', 'this machine was deactivated; activate it again');
      this.checkUsable(lic, null);
    } catch (e) {
      throw e instanceof AegisError && !(e instanceof Refusal) ? new Refusal(e, ids) : e;
    }
    await this.db.updateTable('machines').set({ last_seen_at: iso(this.clock.now()) }).where('id', '=', m.id).execute();
    return { ...(await this.issueTokens(lic, m)), license_id: lic.id, customer_id: lic.customer_id };
  }

  /**
   * Frees a machine's seat. `proof` is required unless the caller is an admin
   * (authorised by the HTTP layer).
   */
  async deactivate(machineId: string, auth: { admin: true } | { proof: unknown }): Promise<{ machine: Machine; license_id: string; customer_id: string }> {
    const m = await this.machineRow(machineId);
    const lic = await this.licenses.row(m.license_id);
    if (!('admin' in auth)) {
      try {
        await this.checkMachineProof(m, auth.proof, AUD_DEACTIVATION_PROOF);
      } catch (e) {
        throw e instanceof AegisError ? new Refusal(e, { license_id: lic.id, customer_id: lic.customer_id, machine_id: m.id }) : e;
      }
    }
    const now = iso(this.clock.now());
    await this.db.updateTable('machines').set({ status: 'deactivated', deactivated_at: now }).where('id', '=', m.id).where('status', '=', 'active').execute();
    return { machine: toMachine(await this.machineRow(m.id)), license_id: lic.id, customer_id: lic.customer_id };
  }

  private async issueTokens(lic: Selectable<LicensesTable>, m: Pick<MachinesTable, 'id' | 'hardware_id' | 'host_key_thumbprint'>): Promise<IssuedTokens> {
    const now = this.clock.now();
    const license = toLicense(lic, now);
    const customer = await this.db.selectFrom('customers').select(['id', 'name']).where('id', '=', lic.customer_id).executeTakeFirstOrThrow();
    const iat = epochSeconds(now);
    const licenseExp = lic.expires_at === null ? undefined : epochSeconds(new Date(lic.expires_at));
    const license_token = await this.tokens.signLicense({
      sub: m.id,
      iat,
      ...(licenseExp === undefined ? {} : { exp: licenseExp }),
      license_id: lic.id,
      license_type: license.license_type,
      customer: { id: customer.id, name: customer.name },
      product: { name: PRODUCT_NAME, allowed_major_versions: license.allowed_major_versions },
      tier: license.tier as Tier,
      features: license.features,
      hwid: m.hardware_id,
      cnf: { jkt: m.host_key_thumbprint },
    });
    // The kernel token never outlives the license.
    const kernelExp = Math.min(iat + this.kernelTtlSeconds, licenseExp ?? Number.MAX_SAFE_INTEGER);
    const kernel_token = await this.tokens.signKernel({
      sub: m.id,
      hwid: m.hardware_id,
      tier: license.tier,
      features: license.features,
      iat,
      exp: kernelExp,
    });
    return {
      machine_id: m.id,
      license_token,
      kernel_token,
      kernel_token_expires_at: new Date(kernelExp * 1000).toISOString(),
      license_expires_at: lic.expires_at,
      jwks: this.keys.jwks(),
    };
  }
}
