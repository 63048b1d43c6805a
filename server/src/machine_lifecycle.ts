/**
 * The life of a machine, from activation to the end of its seat, and of everything that
 * hangs off it: the tokens it is issued, its client certificates, its NATS user, its
 * agent access tokens and its agent registry row.
 *
 * A machine is a hardware fingerprint plus the host's own Ed25519 key. Knowing a hardware
 * id is never enough: activation, refresh and self-deactivation each carry a fresh proof
 * signed by the host key the seat is bound to (or, on the mTLS agent listener, a client
 * certificate for that key plus a certificate-bound access token).
 *
 * Every way a seat ends (deactivation, license revocation, customer deletion) goes through
 * here, so each one revokes the same things: certificates are refused by the agent
 * listener at once, NATS users are revoked on nats-server. Whether a license may be used
 * now is decided here too, once, for activation, refresh, the agent listener and online
 * validation.
 *
 * HTTP handlers parse, authorize, call this service and audit; they do not touch storage.
 */
import { randomUUID, type KeyObject } from 'node:crypto';
import type { Kysely, Selectable } from 'kysely';
import {
  AegisError,
  AUD_ACTIVATION_PROOF,
  AUD_AGENT_TOKEN_PROOF,
  AUD_DEACTIVATION_PROOF,
  AUD_HEARTBEAT_PROOF,
  AUD_REFRESH_PROOF,
  AUD_SNAPSHOTS_PROOF,
  DEFAULT_KERNEL_TOKEN_TTL_SECONDS,
  DEFAULT_LICENSE_TOKEN_TTL_SECONDS,
  PRODUCT_NAME,
  isMachineId,
  jwkThumbprint,
  type ActivationRequest,
  type AgentScope,
  type CertificateFields,
  type Ed25519PublicJwk,
  type IssuedAgentToken,
  type IssuedTokens,
  type License,
  type Machine,
  type NatsCredentialsField,
  type Tier,
  type TokenBundle,
  type ErrorCode,
  type ValidateRequest,
  type ValidateResult,
  type ValidationCode,
  entitlementMask,
  matchFingerprint,
  type FingerprintComponentName,
  type FingerprintComponents,
  type HeartbeatResponse,
  type FingerprintMatch,
  type HostEnvironment,
} from '../../protocol/src/index.js';
import type { Database, LicensesTable, MachinesTable } from './db/schema.js';
import type { Dialect } from './db/database.js';
import { epochSeconds, iso, type Clock } from './clock.js';
import type { AgentTokens } from './agent_tokens.js';
import type { AuditEntry, AuditLog } from './audit.js';
import { NOT_FOUND_MESSAGE, type Customers } from './customers.js';
import { acceptProof, publicKeyFromJwk } from './host_proof.js';
import { expiryGraceEnd, freshHeartbeatColumns, heartbeatVerdict, leaseEnd, leaseLapsed } from './heartbeats.js';
import type { PeerCertificate } from './http/router.js';
import type { Keyring } from './keys/keyring.js';
import { DbKeyring } from './keys/db_keyring.js';
import { validateLicenseToken, type SeatAnswer } from './license_validation.js';
import { componentsOf, entitlementsOf, majorOf, statusOf, toLicense, toMachine, type Licenses } from './licenses.js';
import { clonesOf, cloneRefusal, containerRefusal, driftedMachine, driftRefusal, type PresentedFingerprint } from './machine_fingerprint.js';
import type { NatsAuthority } from './nats/credentials.js';
import { machineIdOfSpiffe } from './pki/authority.js';
import type { CertifiableKey, CertificateIssuer } from './pki/issuer.js';
import { certificateRefused, type CertifiedPeer, type MachineCertificates } from './pki/machine_certs.js';
import type { AgentRegistry } from './rollout/agents.js';
import { TenancyError } from './tenancy.js';
import type { TokenService } from './tokens.js';

/** An activation request without its proof: what the seat binding reads (online and offline alike). */
export type SeatRequest = Omit<ActivationRequest, 'proof'>;
/** Runs once the license key resolved (rate limit, tenancy); refuses by throwing. */
export type OnLicense = (licenseId: string) => void | Promise<void>;
/** A verified offline file's single-use record: its nonce, kept until `expiresAt`. */
export interface OfflineGrant {
  nonce: string;
  expiresAt: string;
}
/** How an activation is authenticated: a host-key proof, or an offline request already verified. */
type ActivationAuth = { proof: unknown } | { offline: OfflineGrant };
/**
 * Deactivation by an offline release: `authorize` applies the caller's tenancy to the
 * machine, `release` verifies the file with the machine's host key and returns its nonce.
 */
export interface OfflineReleaseAuth {
  authorize: (machineId: string) => Promise<void>;
  release: (hostKey: KeyObject, machine: Pick<MachinesTable, 'id' | 'hardware_id' | 'host_key_thumbprint'>) => OfflineGrant;
}

/**
 * Records an offline file's nonce in `tx`; PROOF_REPLAYED when it was used before. The
 * insert conflicts on the primary key; concurrent uses serialise on it (PostgreSQL) or on
 * the one connection (SQLite), so exactly one commits.
 */
async function useNonce(tx: Kysely<Database>, now: string, g: OfflineGrant, kind: 'activation' | 'release', machineId: string | null, ids: Refusal['ids']): Promise<void> {
  const seen = await tx.selectFrom('offline_nonces').select('nonce').where('nonce', '=', g.nonce).executeTakeFirst();
  const replayed = () => new Refusal(new AegisError('PROOF_REPLAYED', `this offline ${kind === 'activation' ? 'request' : 'release'} file was already used`), ids);
  if (seen) throw replayed();
  try {
    await tx.insertInto('offline_nonces').values({ nonce: g.nonce, kind, machine_id: machineId, used_at: now, expires_at: g.expiresAt }).execute();
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    if (code === '23505' || /UNIQUE constraint failed/.test((e as Error).message ?? '')) throw replayed();
    throw e;
  }
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

/**
 * Records a refused request (with the ids a Refusal carries, within the audit log's
 * per-client bound on refusals) and rethrows the error; errors that are not AegisErrors
 * (bugs, storage failures) are rethrown unrecorded.
 */
export async function auditRefusal(audit: AuditLog, err: unknown, entry: Omit<AuditEntry, 'outcome' | 'reason'>): Promise<never> {
  if (err instanceof AegisError) {
    const ids = err instanceof Refusal ? err.ids : {};
    await audit.recordRefusal({ ...entry, ...ids, reason: `${err.code}: ${err.message}` });
  }
  throw err;
}

/** The license columns the "may it be used now" decision reads. */
export type LicenseUsabilityFields = Pick<LicensesTable, 'status' | 'expires_at' | 'revoke_reason' | 'allowed_major_versions'> &
  Partial<Pick<LicensesTable, 'module_name' | 'grace_period_seconds'>>;

/**
 * Why a license cannot be used at `now` (LICENSE_REVOKED, LICENSE_EXPIRED, and with an
 * agent version, VERSION_MISMATCH), or null when it can. Expiry needs no background job:
 * it is this comparison with the clock, and every credential handed out is capped at the
 * license's expiry (tokens, certificates, NATS users).
 */
export function licenseRefusal(lic: LicenseUsabilityFields, now: Date, agentVersion: string | null, opts: { grace?: boolean } = {}): AegisError | null {
  const status = statusOf(lic, now);
  if (status === 'revoked') return new AegisError('LICENSE_REVOKED', `license revoked${lic.revoke_reason ? `: ${lic.revoke_reason}` : ''}`);
  // Within its grace period an expired license still heartbeats and validates (VALID_IN_GRACE).
  const inGrace = opts.grace === true && expiryGraceEnd({ grace_period_seconds: null, ...lic }, now) !== null;
  if (status === 'expired' && !inGrace) return new AegisError('LICENSE_EXPIRED', `license expired at ${lic.expires_at}`);
  if (agentVersion !== null) {
    // A module license licenses a product module (its versions are that product's host
    // versions), never an aegis-agent host: activating or refreshing with it is refused.
    if (lic.module_name != null) return new AegisError('PRODUCT_MISMATCH', `this license is for module ${lic.module_name}, not for aegis-agent hosts`);
    const allowed = JSON.parse(lic.allowed_major_versions) as string[];
    const major = majorOf(agentVersion);
    if (allowed.length > 0 && (major === null || !allowed.includes(major))) {
      return new AegisError('VERSION_MISMATCH', `agent version ${agentVersion} is not allowed by this license (allowed majors: ${allowed.join(', ')})`);
    }
  }
  return null;
}

/** How a refresh is authenticated: a host-key proof, or the agent listener already did it. */
export type RefreshAuth = { proof: unknown } | { transport: 'agent-listener' };
/** Deactivation by the host itself (a proof) or by an admin the HTTP layer authorised. */
export type DeactivationAuth = { admin: true } | { proof: unknown };

interface SeatIds {
  license_id: string;
  customer_id: string;
  machine_id: string;
}

/** A machine whose hardware changed within its license's fingerprint strategy, for the audit record. */
export interface FingerprintChange {
  changed: FingerprintComponentName[];
  previous_hardware_id: string;
}

export interface Activation extends SeatIds {
  /** True for a new seat (201), false for the same machine activating again (200). */
  created: boolean;
  /** Set when the same machine came back with changed hardware (within the strategy). */
  fingerprint: FingerprintChange | null;
  /** The machine this new one is a clone of (clone_policy new_machine), else null. */
  clone_of: string | null;
  bundle: TokenBundle;
}

export interface Refreshed extends SeatIds {
  fingerprint: FingerprintChange | null;
  bundle: TokenBundle;
}

/** What a refresh may carry about the host's hardware now (RefreshRequest). */
export interface RefreshFingerprint {
  hardware_id?: string;
  components?: FingerprintComponents;
  environment?: HostEnvironment;
}

/** What ending seats revoked, for the audit record. */
export interface Revoked {
  certificates_revoked: number;
  nats_users_revoked: number;
}

export interface Deactivation extends Revoked {
  machine: Machine;
  license_id: string;
  customer_id: string;
}

export interface LicenseRevocation extends Revoked {
  license: License;
  /** False when the license already was revoked (nothing is audited then). */
  changed: boolean;
}

export interface CustomerDeletion extends Revoked {
  /** Licenses that were still usable (deleted under `force`). */
  revoked_license_ids: string[];
  machine_ids: string[];
  /** Deleted machines whose agents had reported (their registry rows and flows are dropped). */
  agents_removed: string[];
}

/** An authenticated agent call: the machine, the host its reports are filed under. */
export interface AgentCaller {
  machineId: string;
  hostname: string;
  peer: CertifiedPeer | null;
}

export interface MachineLifecycleDeps {
  db: Kysely<Database>;
  dialect: Dialect;
  clock: Clock;
  tokens: TokenService;
  keys: Keyring;
  licenses: Licenses;
  customers: Customers;
  certs: MachineCertificates;
  /** Issues client certificates from activation/refresh CSRs when a CA is configured. */
  issuer: CertificateIssuer | null;
  /** Per-agent NATS credentials (operator mode), when configured. */
  nats: NatsAuthority | null;
  agentTokens: AgentTokens;
  agents: AgentRegistry;
  audit: AuditLog;
  kernelTtlSeconds?: number;
  /** Lifetime of license tokens, perpetual licenses included (AEGIS_LICENSE_TOKEN_TTL). */
  licenseTokenTtlSeconds?: number;
  /** Lifetime of a machine's NATS credentials (AEGIS_NATS_CREDS_TTL). */
  natsCredentialsTtlSeconds?: number;
  /** Told the outcome of every validation, activation and deactivation (the server's metrics). */
  observer?: LifecycleObserver;
}

/**
 * Outcomes as stable codes: a validation's ValidationCode; an activation's `created` or
 * `reactivated`, a deactivation's `ok`; a refusal's ErrorCode (INTERNAL for anything else).
 */
export interface LifecycleObserver {
  validated(code: ValidationCode): void;
  activated(outcome: 'created' | 'reactivated' | ErrorCode): void;
  deactivated(outcome: 'ok' | ErrorCode): void;
}

const outcomeOf = (e: unknown): ErrorCode => (e instanceof AegisError ? e.code : 'INTERNAL');

export class MachineLifecycle {
  private readonly db: Kysely<Database>;
  private readonly clock: Clock;
  private readonly kernelTtlSeconds: number;
  private readonly licenseTokenTtlSeconds: number;
  private readonly natsCredentialsTtlSeconds: number;

  constructor(private readonly d: MachineLifecycleDeps) {
    this.db = d.db;
    this.clock = d.clock;
    this.kernelTtlSeconds = d.kernelTtlSeconds ?? DEFAULT_KERNEL_TOKEN_TTL_SECONDS;
    this.licenseTokenTtlSeconds = d.licenseTokenTtlSeconds ?? DEFAULT_LICENSE_TOKEN_TTL_SECONDS;
    this.natsCredentialsTtlSeconds = d.natsCredentialsTtlSeconds ?? 86_400;
  }

  /** Refuses a license that cannot be used now, naming why. */
  private checkUsable(lic: Selectable<LicensesTable>, agentVersion: string | null): void {
    const refusal = licenseRefusal(lic, this.clock.now(), agentVersion);
    if (refusal) throw new Refusal(refusal, { license_id: lic.id, customer_id: lic.customer_id });
  }

  // --- activation and refresh -------------------------------------------------------

  /**
   * Activates a machine: binds the seat, then issues its tokens, a client certificate
   * (when a CSR came and a CA is configured) and NATS credentials (operator mode).
   * `onLicense` runs once the key has resolved to a license and before any work on it
   * (the HTTP layer applies its per-license rate limit there).
   */
  async activate(input: ActivationRequest, onLicense: OnLicense = () => {}): Promise<Activation> {
    const { proof, ...request } = input;
    return this.activateObserved(request, { proof }, onLicense);
  }

  /**
   * Activates a machine from an offline request file the caller has already opened
   * (offline_activation.ts: the host key's signature over it verified, its age checked).
   * The same seat binding as online activation: only the proof check differs, the file's
   * nonce is recorded in the seat's transaction instead (a second use is PROOF_REPLAYED
   * and takes no seat).
   */
  activateOffline(request: SeatRequest, grant: OfflineGrant, onLicense: OnLicense = () => {}): Promise<Activation> {
    return this.activateObserved(request, { offline: grant }, onLicense);
  }

  private async activateObserved(request: SeatRequest, auth: ActivationAuth, onLicense: OnLicense): Promise<Activation> {
    try {
      const a = await this.activateSeat(request, auth, onLicense);
      this.d.observer?.activated(a.created ? 'created' : 'reactivated');
      return a;
    } catch (e) {
      this.d.observer?.activated(outcomeOf(e));
      throw e;
    }
  }

  private async activateSeat(input: SeatRequest, auth: ActivationAuth, onLicense: OnLicense): Promise<Activation> {
    // A bad CSR is refused before the seat is touched.
    const certKey = await this.verifyCsr(input.csr, input.host_public_key);
    const lic = await this.d.licenses.rowByKey(input.license_key);
    const ids = { license_id: lic.id, customer_id: lic.customer_id };
    await onLicense(lic.id);
    const hostKey = publicKeyFromJwk(input.host_public_key);
    const thumbprint = jwkThumbprint(input.host_public_key);
    if ('proof' in auth) {
      try {
        await acceptProof(this.db, this.clock, auth.proof, { audience: AUD_ACTIVATION_PROOF, hardwareId: input.hardware_id, key: hostKey });
      } catch (e) {
        throw e instanceof AegisError ? new Refusal(e, ids) : e;
      }
    }
    this.checkUsable(lic, input.agent_version);

    const now = iso(this.clock.now());
    const presented: PresentedFingerprint = { hardware_id: input.hardware_id, components: input.components ?? {}, environment: input.environment ?? null };
    const container = containerRefusal(lic, presented.environment);
    if (container) throw new Refusal(container, ids);
    const { machine, created, fingerprint, cloneOf, released } = await this.db.transaction().execute(async (tx) => {
      // Serialise activations of one customer (the hardware id binding below is per
      // customer) and of one license (the seat count read below must not change before
      // our insert commits). PostgreSQL takes row locks, the license first and then the
      // customer (the order a forced customer deletion takes them in); SQLite serialises
      // all transactions on its single connection.
      if (this.d.dialect === 'postgres') {
        await tx.selectFrom('licenses').select('id').where('id', '=', lic.id).forUpdate().executeTakeFirstOrThrow();
        await tx.selectFrom('customers').select('id').where('id', '=', lic.customer_id).forUpdate().executeTakeFirstOrThrow();
      }
      // An offline request is used once: its nonce is taken in the seat's transaction, so
      // a refused activation leaves it usable and a replay never reaches the seat count.
      if ('offline' in auth) await useNonce(tx, iso(this.clock.now()), auth.offline, 'activation', null, ids);
      const strategy = lic.fingerprint_match as FingerprintMatch;
      // Every active machine of the license is needed only to find clones (components
      // presented) or seats that end now (floating leases, heartbeat_cull deactivate);
      // otherwise only those with this host key (index machines_license_hostkey), so an
      // activation on a license of thousands of seats reads a handful of rows.
      const everySeat = Object.keys(presented.components).length > 0 || Number(lic.floating) === 1 || (lic.heartbeat_interval_seconds !== null && lic.heartbeat_cull !== 'keep');
      let seats = tx.selectFrom('machines').selectAll().where('license_id', '=', lic.id).where('status', '=', 'active');
      if (!everySeat) seats = seats.where('host_key_thumbprint', '=', thumbprint);
      const onLicense = await seats.execute();
      const sameKey = onLicense.filter((m) => m.host_key_thumbprint === thumbprint);
      const exact = sameKey.find((m) => m.hardware_id === input.hardware_id);
      // Hardware changed within the license's strategy: the same machine and seat, its
      // hardware id and components updated (the route audits what changed).
      const drift = exact ? null : driftedMachine(sameKey, presented.components, strategy);
      // A VM clone: another host key presenting an active machine's machine-id and
      // product UUID. Refused, or (new_machine) a machine of its own that takes a seat;
      // never the original's identity.
      const clones = clonesOf(onLicense, thumbprint, presented.components);
      const newMachineClones = lic.clone_policy === 'new_machine';
      if (!exact && !drift && clones.length > 0 && !newMachineClones) throw new Refusal(cloneRefusal(), { ...ids, machine_id: clones[0]!.id });
      // Under new_machine, the clones of one image share its hardware id on this license.
      const cloneIds = new Set(newMachineClones ? clones.map((m) => m.id) : []);
      // A hardware id is bound to one host key within a customer: knowing it never takes
      // a seat there. Machines of other customers are not looked at, so a hardware id
      // claimed first on another customer's license neither blocks this activation nor
      // tells anything about that machine. A clone admitted under new_machine shares its
      // original's hardware id on this license only.
      const bound = await tx
        .selectFrom('machines')
        .innerJoin('licenses', 'licenses.id', 'machines.license_id')
        .selectAll('machines')
        .where('machines.hardware_id', '=', input.hardware_id)
        .where('machines.status', '=', 'active')
        .where('licenses.customer_id', '=', lic.customer_id)
        .execute();
      const other = bound.find((m) => m.host_key_thumbprint !== thumbprint && !cloneIds.has(m.id));
      if (other) {
        throw new Refusal(
          new AegisError('HOST_KEY_MISMATCH', 'this hardware id is already bound to a different host key; deactivate that machine first'),
          { ...ids, machine_id: other.id },
        );
      }
      const same = exact ?? drift?.machine;
      if (same) {
        const set = {
          hostname: input.hostname,
          agent_version: input.agent_version,
          last_seen_at: now,
          hardware_id: input.hardware_id,
          ...fingerprintColumns(presented, same),
          // Activating again is contact: the heartbeat window and a floating lease start anew.
          ...freshHeartbeatColumns(lic, this.clock.now()),
        };
        await tx.updateTable('machines').set(set).where('id', '=', same.id).execute();
        const changed = drift ? { changed: drift.changed, previous_hardware_id: same.hardware_id } : null;
        return { machine: { ...same, ...set }, created: false, fingerprint: changed, cloneOf: null, released: [] as Released[] };
      }
      // Seats whose floating lease lapsed, or whose machine missed its heartbeat window and
      // grace under heartbeat_cull deactivate, are free now, culler or not: they end here.
      const released = endedSeats(lic, onLicense, this.clock.now());
      if (released.length > 0) {
        await tx
          .updateTable('machines')
          .set({ status: 'deactivated', deactivated_at: now })
          .where('id', 'in', released.map((r) => r.id))
          .where('status', '=', 'active')
          .execute();
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
        ...fingerprintColumns(presented, null),
        clone_of: clones.find((m) => m.clone_of === null)?.id ?? clones[0]?.id ?? null,
        ...freshHeartbeatColumns(lic, this.clock.now()),
        heartbeat_seq: 0,
      };
      await tx.insertInto('machines').values(row).execute();
      return { machine: row, created: true, fingerprint: null, cloneOf: row.clone_of, released };
    });
    await this.endReleased(lic, released);
    const tokens = await this.issueTokens(lic, machine);
    const certificate = await this.certificateFor(machine.id, certKey, lic.expires_at);
    const nats = await this.natsCredentials(lic, machine.id, input.hostname);
    return { bundle: { ...tokens, ...certificate, ...nats }, created, fingerprint, clone_of: cloneOf, license_id: lic.id, customer_id: lic.customer_id, machine_id: machine.id };
  }

  /**
   * Fresh license and kernel tokens (and, from a CSR, a new client certificate) for a
   * bound machine: the one refresh of both listeners. `auth` is a host-key proof (main
   * listener) or the agent listener's word that it authenticated this machine.
   * `onAuthenticated` runs once the caller has proved it is the machine (the HTTP layer
   * charges the per-machine budget there, so bogus proofs never spend it); it refuses by
   * throwing.
   */
  async refresh(
    machineId: string,
    auth: RefreshAuth,
    csr: string | undefined,
    onAuthenticated: (machineId: string) => void | Promise<void> = () => {},
    presented: RefreshFingerprint = {},
  ): Promise<Refreshed> {
    const m = await this.machineRow(machineId);
    const lic = await this.d.licenses.row(m.license_id);
    const ids = { license_id: lic.id, customer_id: lic.customer_id, machine_id: m.id };
    // The host signs its proof with the hardware id it computes now; a changed one is
    // accepted only when its components still match the machine's under the strategy.
    const hardwareId = presented.hardware_id ?? m.hardware_id;
    let certKey: CertifiableKey | null;
    let fingerprint: FingerprintChange | null = null;
    const update: Partial<Selectable<MachinesTable>> = { last_seen_at: iso(this.clock.now()) };
    try {
      if ('proof' in auth) await this.checkMachineProof(m, auth.proof, AUD_REFRESH_PROOF, hardwareId);
      await onAuthenticated(m.id);
      if (m.status !== 'active') throw new AegisError('MACHINE_DEACTIVATED', 'this machine was deactivated; activate it again');
      this.checkUsable(lic, null);
      const ended = endedSeats(lic, [m], this.clock.now());
      if (ended.length > 0) {
        await this.endSeat(lic, ended[0]!);
        throw new AegisError('MACHINE_DEACTIVATED', `${ended[0]!.why}; activate it again`);
      }
      const container = containerRefusal(lic, presented.environment ?? null);
      if (container) throw container;
      const components = presented.components ?? {};
      if (hardwareId !== m.hardware_id) {
        const strategy = lic.fingerprint_match as FingerprintMatch;
        const r = matchFingerprint(componentsOf(m), components, strategy);
        if (!r.same) throw driftRefusal(strategy, r.changed);
        const holder = await this.db
          .selectFrom('machines')
          .innerJoin('licenses', 'licenses.id', 'machines.license_id')
          .select('machines.id')
          .where('machines.hardware_id', '=', hardwareId)
          .where('machines.status', '=', 'active')
          .where('machines.host_key_thumbprint', '<>', m.host_key_thumbprint)
          .where('licenses.customer_id', '=', lic.customer_id)
          .executeTakeFirst();
        if (holder) throw new AegisError('HOST_KEY_MISMATCH', 'this hardware id is already bound to a different host key; deactivate that machine first');
        fingerprint = { changed: r.changed, previous_hardware_id: m.hardware_id };
        update.hardware_id = hardwareId;
      }
      if (Object.keys(components).length > 0 || presented.environment !== undefined) {
        Object.assign(update, fingerprintColumns({ hardware_id: hardwareId, components, environment: presented.environment ?? null }, m));
      }
      certKey = await this.verifyCsr(csr, hostKeyOf(m));
    } catch (e) {
      throw e instanceof AegisError ? new Refusal(e, e instanceof Refusal ? { ...ids, ...e.ids } : ids) : e;
    }
    await this.db.updateTable('machines').set(update).where('id', '=', m.id).execute();
    const current = { ...m, ...update };
    const tokens = await this.issueTokens(lic, current);
    const certificate = await this.certificateFor(m.id, certKey, lic.expires_at);
    const nats = await this.natsCredentials(lic, m.id, m.hostname, true);
    return { bundle: { ...tokens, ...certificate, ...nats }, fingerprint, ...ids };
  }

  // --- heartbeats, floating leases and the culler -------------------------------------

  /**
   * A machine's heartbeat: a host proof (aud aegis-heartbeat, single-use jti, iat within
   * the skew window) signed by the machine's own host key, carrying a `seq` strictly
   * greater than the last accepted one's. Marks the machine alive (a dead one under
   * heartbeat_cull keep comes back), starts its heartbeat window anew and renews a
   * floating lease. A seat whose lease lapsed or that missed its window and grace under
   * heartbeat_cull deactivate is ended here (MACHINE_DEACTIVATED): a heartbeat never
   * revives it. `onAuthenticated` runs once the proof checked.
   */
  async heartbeat(machineId: string, proof: unknown, onAuthenticated: (machineId: string) => void | Promise<void> = () => {}): Promise<{ response: HeartbeatResponse; revived: boolean } & SeatIds> {
    const m = await this.machineRow(machineId);
    const lic = await this.d.licenses.row(m.license_id);
    const ids = { license_id: lic.id, customer_id: lic.customer_id, machine_id: m.id };
    const now = this.clock.now();
    let seq: number;
    try {
      const claims = await acceptProof(this.db, this.clock, proof, { audience: AUD_HEARTBEAT_PROOF, hardwareId: m.hardware_id, key: publicKeyFromJwk(hostKeyOf(m)) });
      await onAuthenticated(m.id);
      seq = claims.seq as number;
      if (typeof claims.seq !== 'number' || !Number.isSafeInteger(seq) || seq < 1) throw new AegisError('PROOF_INVALID', 'proof rejected: a heartbeat proof carries an integer seq of at least 1');
      if (seq <= Number(m.heartbeat_seq)) throw new AegisError('PROOF_REPLAYED', `proof rejected: heartbeat seq ${seq} is not greater than the last accepted (${Number(m.heartbeat_seq)})`);
      if (m.status !== 'active') throw new AegisError('MACHINE_DEACTIVATED', 'this machine was deactivated; activate it again');
      const refusal = licenseRefusal(lic, now, null, { grace: true });
      if (refusal) throw refusal;
      const ended = endedSeats(lic, [m], now);
      if (ended.length > 0) {
        await this.endSeat(lic, ended[0]!);
        throw new AegisError('MACHINE_DEACTIVATED', `${ended[0]!.why}; activate it again`);
      }
    } catch (e) {
      throw e instanceof AegisError ? new Refusal(e, ids) : e;
    }
    const beats = lic.heartbeat_interval_seconds !== null;
    const set = {
      last_heartbeat_at: iso(now),
      heartbeat_seq: seq,
      heartbeat_status: beats ? 'alive' : null,
      lease_expires_at: leaseEnd(lic, now),
      last_seen_at: iso(now),
    };
    // Conditional on the seq still being below ours and the seat still held: two copies of
    // one heartbeat racing (or a cull between our read and this write) cannot both win.
    const r = await this.db
      .updateTable('machines')
      .set(set)
      .where('id', '=', m.id)
      .where('status', '=', 'active')
      .where('heartbeat_seq', '<', seq)
      .executeTakeFirst();
    if (Number(r.numUpdatedRows) !== 1) throw new Refusal(new AegisError('PROOF_REPLAYED', 'proof rejected: a heartbeat with this seq or a later one was accepted meanwhile'), ids);
    const next = beats ? new Date(now.getTime() + Number(lic.heartbeat_interval_seconds) * 1000).toISOString() : null;
    return {
      ...ids,
      revived: m.heartbeat_status === 'dead',
      response: { machine_id: m.id, heartbeat_status: 'alive', last_heartbeat_at: set.last_heartbeat_at, next_heartbeat_due_at: next, lease_expires_at: set.lease_expires_at, seq },
    };
  }

  /**
   * The culler: every active machine of a license with heartbeats or floating seats is
   * judged at the server's clock. A lapsed lease ends the seat; a machine past its window
   * and grace is deactivated (seat freed) or, under heartbeat_cull keep, marked dead (seat
   * kept). Each change is conditional on the row still being as read, so replicas running
   * the culler at once end a seat once. Answers what it did.
   */
  async cull(): Promise<{ deactivated: string[]; dead: string[] }> {
    const now = this.clock.now();
    const rows = await this.db
      .selectFrom('machines')
      .innerJoin('licenses', 'licenses.id', 'machines.license_id')
      .selectAll('machines')
      .select(['licenses.heartbeat_interval_seconds', 'licenses.heartbeat_cull', 'licenses.floating', 'licenses.lease_ttl_seconds', 'licenses.grace_period_seconds'])
      .where('machines.status', '=', 'active')
      .where((eb) => eb.or([eb('licenses.heartbeat_interval_seconds', 'is not', null), eb('licenses.floating', '=', 1)]))
      // Driven from the few licenses with heartbeats or floating seats (their indexes,
      // then machines_license), not a scan of every machine: on 1M machines that scan held
      // the event loop (SQLite is synchronous here) for seconds every cull interval.
      .where('machines.license_id', 'in', (eb) =>
        eb.selectFrom('licenses').select('licenses.id').where((w) => w.or([w('licenses.heartbeat_interval_seconds', 'is not', null), w('licenses.floating', '=', 1)])),
      )
      .execute();
    const deactivated: string[] = [];
    const dead: string[] = [];
    for (const row of rows) {
      const ended = endedSeats(row, [row], now);
      if (ended.length > 0) {
        const lic = await this.d.licenses.row(row.license_id);
        if (await this.endSeat(lic, ended[0]!)) deactivated.push(row.id);
        continue;
      }
      const v = heartbeatVerdict(row, row, now);
      if (v.state === 'missed' && v.cull === 'keep') {
        const r = await this.db
          .updateTable('machines')
          .set({ heartbeat_status: 'dead' })
          .where('id', '=', row.id)
          .where('status', '=', 'active')
          .where('heartbeat_status', '=', 'alive')
          .where('heartbeat_seq', '=', row.heartbeat_seq)
          .executeTakeFirst();
        if (Number(r.numUpdatedRows) === 1) {
          dead.push(row.id);
          const lic = await this.d.licenses.row(row.license_id);
          await this.d.audit.record({
            event_type: 'machine.heartbeat_dead',
            actor: 'aegis-server',
            license_id: lic.id,
            customer_id: lic.customer_id,
            machine_id: row.id,
            data: { last_heartbeat_at: row.last_heartbeat_at, heartbeat_cull: 'keep' },
          });
        }
      }
    }
    return { deactivated, dead };
  }

  /** Ends one seat the heartbeat rules ended (conditional: once), revokes what hung off it and audits; true when this call ended it. */
  private async endSeat(lic: Selectable<LicensesTable>, seat: Released): Promise<boolean> {
    const r = await this.db
      .updateTable('machines')
      .set({ status: 'deactivated', deactivated_at: iso(this.clock.now()) })
      .where('id', '=', seat.id)
      .where('status', '=', 'active')
      .executeTakeFirst();
    if (Number(r.numUpdatedRows) !== 1) return false;
    await this.endReleased(lic, [seat]);
    return true;
  }

  /** Revokes and audits seats already set deactivated (by activation's transaction or endSeat). */
  private async endReleased(lic: Selectable<LicensesTable>, released: readonly Released[]): Promise<void> {
    if (released.length === 0) return;
    const revoked = await this.revokeMachines(released.map((r) => r.id));
    for (const r of released) {
      await this.d.audit.record({
        event_type: r.kind === 'lease' ? 'machine.lease_expired' : 'machine.culled',
        actor: 'aegis-server',
        license_id: lic.id,
        customer_id: lic.customer_id,
        machine_id: r.id,
        reason: r.why,
        data: { certificates_revoked: revoked.certificates_revoked, nats_users_revoked: revoked.nats_users_revoked },
      });
    }
  }

  // --- the ends of a seat ------------------------------------------------------------

  /**
   * Frees a machine's seat and revokes what hangs off it: its client certificates (the
   * agent listener refuses them at once) and its NATS users. `proof` is required unless
   * the caller is an admin (authorised by the HTTP layer).
   */
  async deactivate(machineId: string, auth: DeactivationAuth | OfflineReleaseAuth): Promise<Deactivation> {
    try {
      const d = await this.deactivateSeat(machineId, auth);
      this.d.observer?.deactivated('ok');
      return d;
    } catch (e) {
      this.d.observer?.deactivated(outcomeOf(e));
      throw e;
    }
  }

  private async deactivateSeat(machineId: string, auth: DeactivationAuth | OfflineReleaseAuth): Promise<Deactivation> {
    const m = await this.machineRow(machineId);
    const lic = await this.d.licenses.row(m.license_id);
    const ids = { license_id: lic.id, customer_id: lic.customer_id, machine_id: m.id };
    let grant: OfflineGrant | null = null;
    try {
      if ('release' in auth) {
        await auth.authorize(m.id);
        // The release is checked against the key this seat is bound to.
        grant = auth.release(publicKeyFromJwk(hostKeyOf(m)), m);
      } else if (!('admin' in auth)) {
        await this.checkMachineProof(m, auth.proof, AUD_DEACTIVATION_PROOF);
      }
    } catch (e) {
      throw e instanceof AegisError && !(e instanceof TenancyError) ? new Refusal(e, ids) : e;
    }
    const now = iso(this.clock.now());
    if (grant) {
      const g = grant;
      await this.db.transaction().execute(async (tx) => {
        await useNonce(tx, now, g, 'release', m.id, ids);
        const r = await tx.updateTable('machines').set({ status: 'deactivated', deactivated_at: now }).where('id', '=', m.id).where('status', '=', 'active').executeTakeFirst();
        if (Number(r.numUpdatedRows) === 0) throw new Refusal(new AegisError('MACHINE_DEACTIVATED', 'this machine was already deactivated'), ids);
      });
    } else {
      await this.db.updateTable('machines').set({ status: 'deactivated', deactivated_at: now }).where('id', '=', m.id).where('status', '=', 'active').execute();
    }
    const revoked = await this.revokeMachines([m.id]);
    return { machine: toMachine(await this.machineRow(m.id)), license_id: lic.id, customer_id: lic.customer_id, ...revoked };
  }

  /** Revokes a license and, with it, the certificates and NATS users of all its machines. */
  async revokeLicense(licenseId: string, reason: string): Promise<LicenseRevocation> {
    const { license, changed } = await this.d.licenses.revoke(licenseId, reason);
    const machines = await this.d.licenses.machines(license.id);
    const certificates_revoked = await this.d.certs.revokeLicense(license.id);
    let nats_users_revoked = 0;
    for (const m of machines) nats_users_revoked += await this.revokeNats(m.id);
    return { license, changed, certificates_revoked, nats_users_revoked };
  }

  /**
   * Deletes a customer (refused while it holds a usable license, unless `force`) with its
   * licenses and machines, and revokes what those machines held: client certificates,
   * NATS users, agent registry rows. They are revoked after the rows are gone; until then
   * the agent listener already refuses certificates of a machine it cannot find.
   */
  async deleteCustomer(customerId: string, force: boolean): Promise<CustomerDeletion> {
    const { revokedLicenseIds, machineIds } = await this.d.customers.delete(customerId, force);
    const revoked = await this.revokeMachines(machineIds);
    const agents_removed = await this.d.agents.forgetMachines(machineIds);
    // What its hosts reported (server/src/events/) goes with the customer.
    await this.db.deleteFrom('events').where('customer_id', '=', customerId).execute();
    return { revoked_license_ids: revokedLicenseIds, machine_ids: machineIds, agents_removed, ...revoked };
  }

  private async revokeMachines(machineIds: readonly string[]): Promise<Revoked> {
    const certificates_revoked = await this.d.certs.revokeMachines(machineIds);
    let nats_users_revoked = 0;
    for (const id of machineIds) nats_users_revoked += await this.revokeNats(id);
    return { certificates_revoked, nats_users_revoked };
  }

  /** Revokes a machine's NATS users; returns how many were newly revoked. */
  private async revokeNats(machineId: string): Promise<number> {
    if (!this.d.nats) return 0;
    const r = await this.d.nats.revokeAgent(machineId);
    // Recorded in the config fragment either way; not pushed means live connections of
    // that user last until nats-server reloads its config.
    if (r.revoked.length > 0 && !r.pushed) {
      await this.d.audit.record({
        event_type: 'nats.revocation_not_pushed',
        outcome: 'refused',
        actor: 'aegis-server',
        machine_id: machineId,
        reason: String(r.pushError ?? 'unknown'),
      });
    }
    return r.revoked.length;
  }

  // --- the agent listener --------------------------------------------------------------

  /**
   * The machine a verified client certificate names, after checking its serial against
   * our records and the machine and license it belongs to (401 for any refusal).
   * Without a certificate: null, or 401 when the listener requires one.
   */
  async certifiedPeer(presented: PeerCertificate | undefined, requireMtls: boolean): Promise<CertifiedPeer | null> {
    if (!presented) {
      if (requireMtls) throw new AegisError('UNAUTHORIZED', 'a client certificate is required on the agent listener');
      return null;
    }
    const trustDomain = this.d.issuer?.ca.trustDomain;
    const named = trustDomain ? presented.uris.map((u) => machineIdOfSpiffe(u, trustDomain)).find((m) => m !== null) : undefined;
    if (!named) throw certificateRefused('it does not name an Aegis machine');
    const rec = await this.d.certs.check(presented.serial, presented.thumbprint);
    if (rec.machine_status !== 'active') throw certificateRefused('machine deactivated');
    const refusal = licenseRefusal(rec.license, this.clock.now(), null);
    if (refusal) throw certificateRefused(refusal.code === 'LICENSE_EXPIRED' ? 'license expired' : 'license revoked');
    if (rec.machine_id !== named) throw certificateRefused('not issued to the machine it names');
    return { serial: rec.serial, machine_id: rec.machine_id, license_id: rec.license_id, hostname: rec.hostname, thumbprint: rec.thumbprint };
  }

  /**
   * An agent access token for the machine of a verified certificate (bound to it), or,
   * without mTLS, for `machineId` once its host-key proof (aud aegis-agent-token) checks.
   */
  async issueAgentToken(peer: CertifiedPeer | null, scopes: AgentScope[], hostProof: { machineId?: string; proof?: string }): Promise<IssuedAgentToken> {
    if (peer) return this.d.agentTokens.issue(peer.machine_id, scopes, peer.thumbprint);
    const { machineId, proof } = hostProof;
    if (!machineId || !proof) {
      throw new AegisError('UNAUTHORIZED', 'without a client certificate, machine_id and a host-key proof (aud aegis-agent-token) are required');
    }
    const { machine } = await this.usableMachine(machineId);
    await this.checkMachineProof(machine, proof, AUD_AGENT_TOKEN_PROOF);
    return this.d.agentTokens.issue(machineId, scopes, null);
  }

  /** Authenticates an agent call: the certificate (when mTLS), then the access token and its scope. */
  async agentCaller(peer: CertifiedPeer | null, authorization: unknown, scope: AgentScope): Promise<AgentCaller> {
    const c = await this.d.agentTokens.authorize(authorization, scope, peer ? { machine_id: peer.machine_id, thumbprint: peer.thumbprint } : null);
    if (peer) return { machineId: peer.machine_id, hostname: peer.hostname, peer };
    const { machine } = await this.usableMachine(c.machine_id);
    return { machineId: c.machine_id, hostname: machine.hostname, peer: null };
  }

  /** Files an agent's status report under the machine its credentials name. */
  async recordStatus(who: AgentCaller, report: Record<string, unknown>): Promise<boolean> {
    return (await this.d.agents.record('status', who.machineId, report)) === null;
  }

  /** Notes that a machine was heard from (telemetry). */
  /** Marks the machine seen now; `db` may be a transaction the caller is writing in (one commit, not two). */
  async recordSeen(machineId: string, db: Kysely<Database> = this.db): Promise<void> {
    await db.updateTable('machines').set({ last_seen_at: iso(this.clock.now()) }).where('id', '=', machineId).execute();
  }

  /**
   * Authenticates the snapshot fallback: machine `machineId` must be active and have
   * signed `proof` (aud aegis-snapshots) with the host key it was bound to at activation.
   */
  async authenticateSnapshotMachine(machineId: string, proof: string): Promise<void> {
    const machine = isMachineId(machineId)
      ? await this.db.selectFrom('machines').selectAll().where('id', '=', machineId).where('status', '=', 'active').executeTakeFirst()
      : undefined;
    if (!machine) throw new AegisError('NOT_FOUND', NOT_FOUND_MESSAGE);
    await this.checkMachineProof(machine, proof, AUD_SNAPSHOTS_PROOF);
  }

  // --- validation ------------------------------------------------------------------------

  /**
   * The online check of a license token, with this service's answer to "is this seat
   * usable now?": the license (revoked, expired, deleted) and then the machine the token
   * names (deactivated, or not held under that license). `onVerified` runs once the
   * signature has verified (the HTTP layer's per-license budget).
   */
  async validate(input: ValidateRequest, onVerified?: (licenseId: string) => void | Promise<void>): Promise<ValidateResult> {
    const result = await this.validateToken(input, onVerified);
    this.d.observer?.validated(result.code);
    return result;
  }

  private validateToken(input: ValidateRequest, onVerified?: (licenseId: string) => void | Promise<void>): Promise<ValidateResult> {
    // One read of the license per validation (the entitlements come from the same row).
    // With the database keyring every replica shares, the same statement reads whether
    // the token's key was retired: a retirement on another replica refuses the very next
    // validation here, not one keyring poll later.
    const shared = this.d.keys instanceof DbKeyring;
    let licenseRead: Promise<(Selectable<LicensesTable> & { key_retired_at?: string | null }) | undefined> | null = null;
    const licenseRow = (licenseId: string, kid: string) => {
      if (licenseRead) return licenseRead;
      const q = this.db.selectFrom('licenses').selectAll('licenses').where('licenses.id', '=', licenseId);
      licenseRead = shared
        ? q.select((eb) => eb.selectFrom('keyring_keys').select('keyring_keys.retired_at').where('keyring_keys.kind', '=', 'signing').where('keyring_keys.kid', '=', kid).as('key_retired_at')).executeTakeFirst()
        : q.executeTakeFirst();
      return licenseRead;
    };
    const licenseAnswer = (row: (Selectable<LicensesTable> & { key_retired_at?: string | null }) | undefined, kid: string): SeatAnswer => {
      // A deleted license reads as revoked: its tokens must stop validating too.
      if (!row) return new AegisError('LICENSE_REVOKED', 'license revoked');
      if (row.key_retired_at != null) return { code: 'UNKNOWN_KEY', message: `unknown or retired key ${kid}` };
      const now = this.clock.now();
      const refusal = licenseRefusal(row, now, null, { grace: true });
      if (refusal) return refusal;
      const grace = expiryGraceEnd(row, now);
      return grace ? { grace_ends_at: grace } : null;
    };
    return validateLicenseToken(
      this.clock,
      this.d.tokens,
      input,
      {
        license: async (licenseId, kid) => licenseAnswer(await licenseRow(licenseId, kid), kid),
        seat: async (licenseId, machineId, kid) => {
          const lic = await licenseRow(licenseId, kid);
          const answer = licenseAnswer(lic, kid);
          if (answer && !('grace_ends_at' in answer)) return answer;
          const machine = await this.db.selectFrom('machines').selectAll().where('id', '=', machineId).executeTakeFirst();
          if (!machine || machine.license_id !== licenseId) return new AegisError('NOT_FOUND', NOT_FOUND_MESSAGE);
          if (machine.status !== 'active') return new AegisError('MACHINE_DEACTIVATED', 'this machine was deactivated; its license token no longer validates');
          // Judged at the server's clock whether or not the culler has run yet.
          const now = this.clock.now();
          const ended = endedSeats(lic!, [machine], now);
          if (ended.length > 0) return new AegisError('MACHINE_DEACTIVATED', `this machine's seat ended: ${ended[0]!.why}`);
          const v = heartbeatVerdict(lic!, machine, now);
          if (v.state === 'dead' || (v.state === 'missed' && v.cull === 'keep')) {
            return { code: 'HEARTBEAT_DEAD', message: 'this machine missed its heartbeat window; its seat is kept, and it validates again once it heartbeats' };
          }
          const ends = [answer?.grace_ends_at, v.state === 'grace' ? v.until : undefined].filter((d): d is Date => d !== undefined);
          return ends.length > 0 ? { grace_ends_at: new Date(Math.min(...ends.map((d) => d.getTime()))) } : null;
        },
        entitlements: async (licenseId) => {
          const row = licenseRead ? await licenseRead : await this.db.selectFrom('licenses').select('entitlements').where('id', '=', licenseId).executeTakeFirst();
          return row ? entitlementsOf(row) : [];
        },
      },
      onVerified,
    );
  }

  /** A machine as the API shows it (heartbeat state, lease and last heartbeat included). */
  async getMachine(id: string): Promise<Machine> {
    return toMachine(await this.machineRow(id));
  }

  // --- helpers -----------------------------------------------------------------------------

  private async machineRow(id: string): Promise<Selectable<MachinesTable>> {
    const m = await this.db.selectFrom('machines').selectAll().where('id', '=', id).executeTakeFirst();
    if (!m) throw new AegisError('NOT_FOUND', NOT_FOUND_MESSAGE);
    return m;
  }

  /** A machine that may use the agent API without mTLS: still active, its license usable. */
  private async usableMachine(machineId: string): Promise<{ machine: Selectable<MachinesTable>; license: Selectable<LicensesTable> }> {
    const machine = await this.machineRow(machineId);
    if (machine.status !== 'active') throw new AegisError('MACHINE_DEACTIVATED', 'this machine was deactivated; activate it again');
    const license = await this.d.licenses.row(machine.license_id);
    const refusal = licenseRefusal(license, this.clock.now(), null);
    if (refusal) throw refusal;
    return { machine, license };
  }

  private async checkMachineProof(m: Selectable<MachinesTable>, proof: unknown, audience: string, hardwareId = m.hardware_id): Promise<void> {
    await acceptProof(this.db, this.clock, proof, { audience, hardwareId, key: publicKeyFromJwk(hostKeyOf(m)) });
  }

  /** The key a CSR proved (checked against the host key), or null without a CSR or a CA. */
  private async verifyCsr(csr: string | undefined, hostKey: Ed25519PublicJwk): Promise<CertifiableKey | null> {
    if (csr === undefined || !this.d.issuer) return null;
    return this.d.issuer.verify(csr, hostKey);
  }

  /** The CA (and, for a proved key, a recorded certificate) when a CA is configured. */
  private async certificateFor(machineId: string, key: CertifiableKey | null, licenseExpiresAt: string | null): Promise<CertificateFields | Record<string, never>> {
    return this.d.issuer ? this.d.issuer.issue(machineId, key, licenseExpiresAt) : {};
  }

  /**
   * NATS credentials for machine `machineId` (operator mode only), for its own subjects.
   * They expire (natsCredentialsTtlSeconds, never after the license) and are renewed on
   * refresh once past half their lifetime (`renewOnly`), so a host that stops refreshing
   * loses NATS as it loses its tokens, and every end of a machine revokes them.
   */
  private async natsCredentials(lic: Selectable<LicensesTable>, machineId: string, hostname: string, renewOnly = false): Promise<{ nats?: NatsCredentialsField }> {
    if (!this.d.nats) return {};
    if (renewOnly && !(await this.d.nats.needsRenewal(machineId))) return {};
    const untilLicenseEnds = lic.expires_at === null ? Number.MAX_SAFE_INTEGER : Math.ceil((Date.parse(lic.expires_at) - this.clock.now().getTime()) / 1000);
    const ttlSeconds = Math.max(1, Math.min(this.natsCredentialsTtlSeconds, untilLicenseEnds));
    const c = await this.d.nats.issueAgentCredentials({ machineId, fleet: lic.fleet ?? 'default', hostname, ttlSeconds });
    return { nats: { creds: c.creds, user_public_key: c.userPublicKey, expires_at: c.expiresAt?.toISOString() ?? null } };
  }

  private async issueTokens(lic: Selectable<LicensesTable>, m: Pick<MachinesTable, 'id' | 'hardware_id' | 'host_key_thumbprint'>): Promise<IssuedTokens> {
    const now = this.clock.now();
    const license = toLicense(lic, now);
    const customer = await this.db.selectFrom('customers').select(['id', 'name']).where('id', '=', lic.customer_id).executeTakeFirstOrThrow();
    const iat = epochSeconds(now);
    const licenseExp = lic.expires_at === null ? undefined : epochSeconds(new Date(lic.expires_at));
    // Every machine-bound token ends, perpetual licenses included: its exp bounds how long
    // a host runs offline on it and how long a copy outlives the seat wherever it is only
    // checked offline. It never outlives the license; license_expires_at still answers
    // null for a perpetual license.
    const tokenExp = Math.min(iat + this.licenseTokenTtlSeconds, licenseExp ?? Number.MAX_SAFE_INTEGER);
    const license_token = await this.d.tokens.signLicense({
      sub: m.id,
      iat,
      exp: tokenExp,
      license_id: lic.id,
      license_type: license.license_type,
      customer: { id: customer.id, name: customer.name },
      product: { name: PRODUCT_NAME, allowed_major_versions: license.allowed_major_versions },
      tier: license.tier as Tier,
      features: license.features,
      entitlements: license.entitlements,
      hwid: m.hardware_id,
      cnf: { jkt: m.host_key_thumbprint },
      // The license's policy, for the host: grace after exp, heartbeat interval, lease.
      ...(lic.grace_period_seconds ? { grace_seconds: Number(lic.grace_period_seconds) } : {}),
      ...(lic.heartbeat_interval_seconds !== null ? { heartbeat_interval_seconds: Number(lic.heartbeat_interval_seconds) } : {}),
      ...(Number(lic.floating) === 1 && lic.lease_ttl_seconds !== null ? { lease_ttl_seconds: Number(lic.lease_ttl_seconds) } : {}),
    });
    // The kernel token never outlives the license and its grace period (the host keeps
    // enforcing licensed features until the grace ends).
    const kernelExp = Math.min(iat + this.kernelTtlSeconds, licenseExp === undefined ? Number.MAX_SAFE_INTEGER : licenseExp + Number(lic.grace_period_seconds ?? 0));
    const kernel_token = await this.d.tokens.signKernel({
      sub: m.id,
      hwid: m.hardware_id,
      tier: license.tier,
      features: license.features,
      // Entitlements mapped to kernel bits (24..30) join the tier features' bits.
      extraMask: entitlementMask(license.entitlements),
      iat,
      exp: kernelExp,
    });
    return {
      machine_id: m.id,
      license_token,
      kernel_token,
      kernel_token_expires_at: new Date(kernelExp * 1000).toISOString(),
      license_expires_at: lic.expires_at,
      jwks: this.d.keys.jwks(),
    };
  }
}

/** The fingerprint columns of a machine row: the presented components (or the recorded ones when none came) and environment. */
function fingerprintColumns(
  p: PresentedFingerprint,
  recorded: Pick<MachinesTable, 'fingerprint_components' | 'environment'> | null,
): Pick<MachinesTable, 'fingerprint_components' | 'environment'> {
  const has = Object.keys(p.components).length > 0;
  return {
    fingerprint_components: has ? JSON.stringify(p.components) : (recorded?.fingerprint_components ?? null),
    environment: p.environment ?? recorded?.environment ?? null,
  };
}

/** A seat the heartbeat rules ended: a lapsed floating lease, or a missed window under heartbeat_cull deactivate. */
interface Released {
  id: string;
  kind: 'lease' | 'heartbeat';
  why: string;
}

/** Which of `machines` (active ones of license `lic`) the heartbeat rules have ended at `now`. */
function endedSeats(lic: Parameters<typeof heartbeatVerdict>[0], machines: readonly Selectable<MachinesTable>[], now: Date): Released[] {
  const out: Released[] = [];
  for (const m of machines) {
    if (m.status !== 'active') continue;
    if (leaseLapsed(lic, m, now)) {
      out.push({ id: m.id, kind: 'lease', why: `its floating lease lapsed at ${m.lease_expires_at}` });
      continue;
    }
    const v = heartbeatVerdict(lic, m, now);
    if (v.state === 'missed' && v.cull === 'deactivate') out.push({ id: m.id, kind: 'heartbeat', why: `it missed its heartbeat window (last heartbeat ${m.last_heartbeat_at ?? m.activated_at})` });
  }
  return out;
}

function hostKeyOf(m: Pick<MachinesTable, 'host_public_key'>): Ed25519PublicJwk {
  return JSON.parse(m.host_public_key) as Ed25519PublicJwk;
}
