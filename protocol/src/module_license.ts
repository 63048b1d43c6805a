/**
 * Module licenses: a license for one product module (an Odoo module, named by its
 * technical name) and the host product's major versions it may run on. Issuing one
 * answers with a signed license token the customer's product verifies offline against
 * the server's JWKS; it is bound to no machine, and carries its own audience so it never
 * passes where a machine-bound license token, kernel token, access token or host proof is
 * expected (nor they as it).
 */
import type { AUD_MODULE_LICENSE } from '../../clients/typescript/src/result_codes.js';
import type { LicenseType } from './claims.js';
import type { Feature, LicensedTier } from './tiers.js';

// The audience, the host version form and the major-version rule are the license client
// library's (what licensed products verify offline), so server and products decide alike.
export { AUD_MODULE_LICENSE, HOST_VERSION_PATTERN, hostMajorOf } from '../../clients/typescript/src/result_codes.js';

/**
 * The tier a module license gets when the request names none: the lowest tier that is
 * sold. A module license grants its module; any agent feature beyond the lowest tier's
 * must be asked for by naming the tier.
 */
export const DEFAULT_MODULE_LICENSE_TIER: LicensedTier = 'basic';

/** An Odoo technical module name: lowercase letters, digits and underscores. */
export const MODULE_NAME_PATTERN = /^[a-z][a-z0-9_]{0,127}$/;

/**
 * A customer's external reference (such as `CUST-001`): letters, digits, `.`, `_`, `-`,
 * at most 64, starting with a letter or digit. It may not have the form of an Aegis id
 * (a UUID), so a reference can never be mistaken for another customer's id.
 */
export const EXTERNAL_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const UUID_FORM = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** True when `value` may be a customer's external reference. */
export function isExternalId(value: unknown): value is string {
  return typeof value === 'string' && EXTERNAL_ID_PATTERN.test(value) && !UUID_FORM.test(value);
}

/** Claims of the license token of a module license (signed EdDSA, header `kid`). */
export interface ModuleLicenseClaims {
  iss: string;
  aud: typeof AUD_MODULE_LICENSE;
  /** The license id. */
  sub: string;
  jti: string;
  iat: number;
  /** Absent for a perpetual license (reads as null); the license's expiry otherwise. */
  exp?: number;
  license_id: string;
  license_type: LicenseType;
  /** `id` is the customer's external reference when it has one, else its Aegis id. */
  customer: { id: string; name: string };
  module: { technical_name: string; allowed_major_versions: string[] };
  tier: LicensedTier;
  features: Feature[];
  /** Operator-defined entitlements of the license, sorted (absent in tokens issued before them). */
  entitlements?: string[];
  /** Grace after `exp`: offline verifiers answer VALID_IN_GRACE until `exp + grace_seconds`. */
  grace_seconds?: number;
}
