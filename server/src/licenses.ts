/**
 * Licenses: issue, look up, list, revoke. The key is generated here, returned once, and
 * stored only as a hash plus its last five characters. A module license (one naming
 * `module_name`) is also issued with a signed license token, bound to no machine, which
 * its customer's product verifies offline.
 */
import { createHash, randomUUID } from 'node:crypto';
import type { Kysely, Selectable } from 'kysely';
import {
  AegisError,
  AUD_MODULE_LICENSE,
  DEFAULT_MODULE_LICENSE_TIER,
  TOKEN_ISSUER,
  ValidationError,
  effectiveFeatures,
  generateLicenseKey,
  licenseKeySuffix,
  normalizeLicenseKey,
  canonicalEntitlements,
  DEFAULT_CLONE_POLICY,
  type HeartbeatCull,
  DEFAULT_FINGERPRINT_MATCH,
  FINGERPRINT_COMPONENT_NAMES,
  MAX_ENTITLEMENTS,
  type ClonePolicy,
  type Feature,
  type FingerprintComponentName,
  type FingerprintMatch,
  type HostEnvironment,
  type IssueLicenseRequest,
  type License,
  type LicensedTier,
  type LicenseStatus,
  type ModuleLicenseClaims,
  type LicenseType,
  type Machine,
  type Paged,
  type Tier,
} from '../../protocol/src/index.js';
import type { Database, LicensesTable, MachinesTable } from './db/schema.js';
import { iso, type Clock } from './clock.js';
import type { Page } from './pagination.js';
import { NOT_FOUND_MESSAGE } from './customers.js';
import type { TokenService } from './tokens.js';
import { usableLicense } from './usable_license.js';

export const DEMO_DEFAULT_DAYS = 14;
export const DEMO_MAX_DAYS = 30;

export interface LicenseFilters {
  /** A customer's id or external reference. */
  customer_id?: string;
  status?: LicenseStatus;
  tier?: string;
  license_type?: string;
  /** Only this customer's licenses (an API key limited to one customer; see tenancy.ts). */
  tenant?: string | null;
}

export function hashLicenseKey(canonicalKey: string): string {
  return createHash('sha256').update(`aegis-license-key:${canonicalKey}`).digest('hex');
}

/** The major version of an agent version string ("v1.4.2" → "1"), or null. */
export function majorOf(version: string): string | null {
  const m = /^v?(\d+)(?:\.|$)/.exec(version.trim());
  return m ? String(Number(m[1])) : null;
}

export function statusOf(row: Pick<LicensesTable, 'status' | 'expires_at'>, now: Date): LicenseStatus {
  if (row.status === 'revoked') return 'revoked';
  if (row.expires_at !== null && row.expires_at <= iso(now)) return 'expired';
  return 'active';
}

export function toLicense(r: Selectable<LicensesTable>, now: Date): License {
  const extra = JSON.parse(r.features) as Feature[];
  return {
    id: r.id,
    customer_id: r.customer_id,
    tier: r.tier as Tier,
    license_type: r.license_type as LicenseType,
    status: statusOf(r, now),
    module_name: r.module_name,
    key_suffix: r.key_suffix,
    max_machines: Number(r.max_machines),
    allowed_major_versions: JSON.parse(r.allowed_major_versions) as string[],
    features: effectiveFeatures(r.tier as Tier, extra),
    extra_features: extra,
    fleet: r.fleet,
    entitlements: entitlementsOf(r),
    fingerprint_match: r.fingerprint_match as FingerprintMatch,
    clone_policy: r.clone_policy as ClonePolicy,
    allow_containers: Number(r.allow_containers) === 1,
    heartbeat_interval_seconds: r.heartbeat_interval_seconds === null ? null : Number(r.heartbeat_interval_seconds),
    heartbeat_cull: (r.heartbeat_cull ?? 'deactivate') as HeartbeatCull,
    floating: Number(r.floating) === 1,
    lease_ttl_seconds: r.lease_ttl_seconds === null ? null : Number(r.lease_ttl_seconds),
    grace_period_seconds: r.grace_period_seconds === null ? null : Number(r.grace_period_seconds),
    expires_at: r.expires_at,
    revoked_at: r.revoked_at,
    revoke_reason: r.revoke_reason,
    created_at: r.created_at,
    updated_at: r.updated_at,
  };
}

/** A license row's entitlements. */
export function entitlementsOf(r: Pick<LicensesTable, 'entitlements'>): string[] {
  return JSON.parse(r.entitlements) as string[];
}

/** The components recorded for a machine (name → salted digest); empty when its agent sent none. */
export function componentsOf(r: Pick<MachinesTable, 'fingerprint_components'>): Partial<Record<FingerprintComponentName, string>> {
  return r.fingerprint_components === null ? {} : (JSON.parse(r.fingerprint_components) as Partial<Record<FingerprintComponentName, string>>);
}

/**
 * The heartbeat and floating-lease columns of a license from an issue request, checked:
 * a floating license needs a lease TTL, a lease TTL needs a floating license.
 */
export function licensePolicyColumns(
  input: Pick<IssueLicenseRequest, 'heartbeat_interval_seconds' | 'heartbeat_cull' | 'floating' | 'lease_ttl_seconds' | 'grace_period_seconds'>,
): Pick<LicensesTable, 'heartbeat_interval_seconds' | 'heartbeat_cull' | 'floating' | 'lease_ttl_seconds' | 'grace_period_seconds'> {
  const floating = input.floating === true;
  const lease = input.lease_ttl_seconds ?? null;
  if (floating && lease === null) throw new ValidationError([{ path: '/lease_ttl_seconds', message: 'a floating license needs lease_ttl_seconds' }]);
  if (!floating && lease !== null) throw new ValidationError([{ path: '/lease_ttl_seconds', message: 'only a floating license leases seats' }]);
  return {
    heartbeat_interval_seconds: input.heartbeat_interval_seconds ?? null,
    heartbeat_cull: input.heartbeat_cull ?? 'deactivate',
    floating: floating ? 1 : 0,
    lease_ttl_seconds: lease,
    grace_period_seconds: input.grace_period_seconds ?? null,
  };
}

export function toMachine(r: Selectable<MachinesTable>): Machine {
  const { host_public_key: _omit, fingerprint_components: _digests, heartbeat_seq: _seq, ...rest } = r;
  const recorded = componentsOf(r);
  return {
    ...rest,
    fingerprint_components: FINGERPRINT_COMPONENT_NAMES.filter((n) => recorded[n] !== undefined),
    environment: r.environment as HostEnvironment | null,
    heartbeat_status: (r.heartbeat_status ?? null) as Machine['heartbeat_status'],
    last_heartbeat_at: r.last_heartbeat_at ?? null,
    lease_expires_at: r.lease_expires_at ?? null,
  };
}

const epochSeconds = (d: Date): number => Math.floor(d.getTime() / 1000);

export class Licenses {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly clock: Clock,
    private readonly tokens: TokenService,
  ) {}

  /** The tier a request asks for: named, or the module default; an agent license must name one. */
  private tierOf(input: IssueLicenseRequest): LicensedTier {
    if (input.tier !== undefined) return input.tier;
    if (input.module_name !== undefined) return DEFAULT_MODULE_LICENSE_TIER;
    throw new ValidationError([{ path: '/tier', message: 'is required for a license without module_name' }]);
  }

  /** Resolves the expiry from the license type and the request, or says what is wrong. */
  private expiryOf(input: IssueLicenseRequest, now: Date): string | null {
    const { license_type: type, expires_at, duration_days } = input;
    if (expires_at !== undefined && duration_days !== undefined) {
      throw new AegisError('VALIDATION_FAILED', 'give expires_at or duration_days, not both', {
        details: [{ path: '/duration_days', message: 'conflicts with expires_at' }],
      });
    }
    if (type === 'perpetual') {
      if (expires_at !== undefined || duration_days !== undefined) {
        throw new AegisError('VALIDATION_FAILED', 'a perpetual license has no expiry', {
          details: [{ path: expires_at !== undefined ? '/expires_at' : '/duration_days', message: 'not allowed for perpetual licenses' }],
        });
      }
      return null;
    }
    let exp: Date;
    if (expires_at !== undefined) {
      exp = new Date(expires_at);
      if (Number.isNaN(exp.getTime())) {
        throw new AegisError('VALIDATION_FAILED', 'expires_at is not a date', { details: [{ path: '/expires_at', message: 'must be an ISO-8601 date-time' }] });
      }
    } else if (duration_days !== undefined) {
      exp = new Date(now.getTime() + duration_days * 86_400_000);
    } else if (type === 'demo') {
      exp = new Date(now.getTime() + DEMO_DEFAULT_DAYS * 86_400_000);
    } else {
      throw new AegisError('VALIDATION_FAILED', 'a subscription needs expires_at or duration_days', {
        details: [{ path: '/expires_at', message: 'is required for subscription licenses (or give duration_days)' }],
      });
    }
    if (exp.getTime() <= now.getTime()) {
      throw new AegisError('VALIDATION_FAILED', 'expiry must be in the future', { details: [{ path: '/expires_at', message: 'must be in the future' }] });
    }
    if (type === 'demo' && exp.getTime() - now.getTime() > DEMO_MAX_DAYS * 86_400_000) {
      throw new AegisError('VALIDATION_FAILED', `a demo license lasts at most ${DEMO_MAX_DAYS} days`, {
        details: [{ path: expires_at !== undefined ? '/expires_at' : '/duration_days', message: `at most ${DEMO_MAX_DAYS} days for demo licenses` }],
      });
    }
    return iso(exp);
  }

  /** Issues a license to customer `input.customer_id` (an Aegis id: the caller resolved any external reference). */
  async issue(input: IssueLicenseRequest): Promise<{ license: License; license_key: string }> {
    const now = this.clock.now();
    const tier = this.tierOf(input);
    if (input.module_name !== undefined && input.fleet !== undefined) {
      // A fleet's license re-licenses aegis-agent hosts; a module license licenses a product module.
      throw new ValidationError([{ path: '/fleet', message: 'not allowed for a module license' }]);
    }
    const expires_at = this.expiryOf(input, now);
    const customer = await this.db.selectFrom('customers').select(['id', 'is_active', 'name', 'external_id']).where('id', '=', input.customer_id).executeTakeFirst();
    if (!customer) {
      throw new AegisError('VALIDATION_FAILED', 'customer not found', { details: [{ path: '/customer_id', message: 'no such customer' }] });
    }
    if (Number(customer.is_active) !== 1) {
      throw new AegisError('CONFLICT', 'customer is inactive; reactivate it before issuing licenses');
    }
    if (input.fleet) {
      // A fleet is one customer's: its newest license decides what every host of the fleet
      // runs, so a license of another customer naming it would re-license (or revoke) them.
      const other = await this.db.selectFrom('licenses').select('id').where('fleet', '=', input.fleet).where('customer_id', '<>', input.customer_id).limit(1).executeTakeFirst();
      if (other) {
        throw new AegisError('CONFLICT', `fleet ${input.fleet} belongs to another customer; choose another fleet name`, {
          details: [{ path: '/fleet', message: 'taken by another customer' }],
        });
      }
    }
    const key = generateLicenseKey();
    const id = randomUUID();
    const allowed = [...new Set(input.allowed_major_versions ?? [])];
    const extra = [...new Set(input.features ?? [])];
    const entitlements = canonicalEntitlements(input.entitlements ?? []);
    let token: { token: string; kid: string } | null = null;
    let claims: ModuleLicenseClaims | null = null;
    if (input.module_name !== undefined) {
      claims = {
        jti: randomUUID(),
        iss: TOKEN_ISSUER,
        aud: AUD_MODULE_LICENSE,
        sub: id,
        iat: epochSeconds(now),
        ...(expires_at === null ? {} : { exp: epochSeconds(new Date(expires_at)) }),
        customer: { id: customer.external_id ?? customer.id, name: customer.name },
        module: { technical_name: input.module_name, allowed_major_versions: allowed },
        license_type: input.license_type,
        license_id: id,
        tier,
        features: effectiveFeatures(tier, extra),
        entitlements,
        ...(input.grace_period_seconds ? { grace_seconds: input.grace_period_seconds } : {}),
      } as ModuleLicenseClaims;
      token = await this.tokens.signModuleLicense(claims, null);
    }
    const row: Selectable<LicensesTable> = {
      id,
      customer_id: input.customer_id,
      tier,
      license_type: input.license_type,
      status: 'active',
      key_hash: hashLicenseKey(key),
      key_suffix: licenseKeySuffix(key),
      max_machines: input.max_machines ?? 1,
      allowed_major_versions: JSON.stringify(allowed),
      features: JSON.stringify(extra),
      fleet: input.fleet ?? null,
      expires_at,
      revoked_at: null,
      revoke_reason: null,
      created_at: iso(now),
      updated_at: iso(now),
      module_name: input.module_name ?? null,
      token_claims: claims === null ? null : JSON.stringify(claims),
      token_kid: token?.kid ?? null,
      entitlements: JSON.stringify(entitlements),
      fingerprint_match: input.fingerprint_match ?? DEFAULT_FINGERPRINT_MATCH,
      clone_policy: input.clone_policy ?? DEFAULT_CLONE_POLICY,
      allow_containers: input.allow_containers === false ? 0 : 1,
      ...licensePolicyColumns(input),
    };
    await this.db.insertInto('licenses').values(row).execute();
    return { license: { ...toLicense(row, now), token: token?.token ?? null }, license_key: key };
  }

  /**
   * A license with its token (null for an aegis-agent license): the claims signed at
   * issue, signed again by the same key, which gives the same token. When that key has
   * been retired its tokens no longer verify, so the active key signs the claims and is
   * recorded; from then on that token is the license's.
   */
  async getWithToken(id: string): Promise<License> {
    const row = await this.row(id);
    const license = toLicense(row, this.clock.now());
    if (row.token_claims === null) return { ...license, token: null };
    const signed = await this.tokens.signModuleLicense(JSON.parse(row.token_claims) as ModuleLicenseClaims, row.token_kid);
    if (signed.kid !== row.token_kid) await this.db.updateTable('licenses').set({ token_kid: signed.kid }).where('id', '=', id).execute();
    return { ...license, token: signed.token };
  }

  async row(id: string): Promise<Selectable<LicensesTable>> {
    const row = await this.db.selectFrom('licenses').selectAll().where('id', '=', id).executeTakeFirst();
    if (!row) throw new AegisError('NOT_FOUND', NOT_FOUND_MESSAGE);
    return row;
  }

  async get(id: string): Promise<License> {
    return toLicense(await this.row(id), this.clock.now());
  }

  /** The license a presented key names; unknown and malformed keys are the same 404. */
  async rowByKey(key: string): Promise<Selectable<LicensesTable>> {
    const canonical = normalizeLicenseKey(key);
    if (canonical === null) throw new AegisError('NOT_FOUND', NOT_FOUND_MESSAGE);
    const row = await this.db.selectFrom('licenses').selectAll().where('key_hash', '=', hashLicenseKey(canonical)).executeTakeFirst();
    if (!row) throw new AegisError('NOT_FOUND', NOT_FOUND_MESSAGE);
    return row;
  }

  async list(f: LicenseFilters, page: Page): Promise<Paged<License>> {
    const now = this.clock.now();
    const nowIso = iso(now);
    let q = this.db.selectFrom('licenses');
    if (f.tenant) q = q.where('customer_id', '=', f.tenant);
    if (f.customer_id) {
      const ref = f.customer_id;
      q = q.where('customer_id', 'in', (eb) => eb.selectFrom('customers').select('id').where((w) => w.or([w('id', '=', ref), w('external_id', '=', ref)])));
    }
    if (f.tier) q = q.where('tier', '=', f.tier);
    if (f.license_type) q = q.where('license_type', '=', f.license_type);
    if (f.status === 'revoked') q = q.where('status', '=', 'revoked');
    if (f.status === 'expired') q = q.where('status', '=', 'active').where('expires_at', '<=', nowIso);
    if (f.status === 'active') q = q.where(usableLicense(nowIso));
    const { n } = await q.select((eb) => eb.fn.countAll<string | number>().as('n')).executeTakeFirstOrThrow();
    const rows = await q.selectAll().orderBy('created_at').orderBy('id').limit(page.limit).offset(page.offset).execute();
    return { items: rows.map((r) => toLicense(r, now)), total: Number(n), ...page };
  }

  async revoke(id: string, reason: string): Promise<{ license: License; changed: boolean }> {
    const now = iso(this.clock.now());
    const r = await this.db
      .updateTable('licenses')
      .set({ status: 'revoked', revoked_at: now, revoke_reason: reason, updated_at: now })
      .where('id', '=', id)
      .where('status', '<>', 'revoked')
      .executeTakeFirst();
    const license = await this.get(id);
    return { license, changed: Number(r.numUpdatedRows) > 0 };
  }

  /**
   * Attaches (`add`) or detaches entitlement codes, atomically: the read and the write are
   * one transaction (PostgreSQL locks the license row), so concurrent changes never lose
   * one another. A module license's token claims follow, so its token (signed again from
   * them) carries the new set. More than MAX_ENTITLEMENTS in all is refused.
   */
  async changeEntitlements(id: string, codes: readonly string[], add: boolean, dialect: 'sqlite' | 'postgres'): Promise<{ license: License; changed: string[] }> {
    const now = iso(this.clock.now());
    const changed = await this.db.transaction().execute(async (tx) => {
      let q = tx.selectFrom('licenses').select(['entitlements', 'token_claims']).where('id', '=', id);
      if (dialect === 'postgres') q = q.forUpdate();
      const row = await q.executeTakeFirst();
      if (!row) throw new AegisError('NOT_FOUND', NOT_FOUND_MESSAGE);
      const current = new Set(entitlementsOf(row));
      const changed = canonicalEntitlements(codes).filter((c) => current.has(c) !== add);
      if (changed.length === 0) return changed;
      for (const c of changed) {
        if (add) current.add(c);
        else current.delete(c);
      }
      if (current.size > MAX_ENTITLEMENTS) {
        throw new ValidationError([{ path: '/entitlements', message: `a license holds at most ${MAX_ENTITLEMENTS} entitlements (this would make ${current.size})` }]);
      }
      const next = canonicalEntitlements([...current]);
      const claims = row.token_claims === null ? null : JSON.stringify({ ...(JSON.parse(row.token_claims) as ModuleLicenseClaims), entitlements: next });
      await tx.updateTable('licenses').set({ entitlements: JSON.stringify(next), token_claims: claims, updated_at: now }).where('id', '=', id).execute();
      return changed;
    });
    return { license: await this.getWithToken(id), changed };
  }

  async machines(licenseId: string): Promise<Machine[]> {
    await this.row(licenseId);
    const rows = await this.db.selectFrom('machines').selectAll().where('license_id', '=', licenseId).orderBy('activated_at').execute();
    return rows.map(toMachine);
  }
}
