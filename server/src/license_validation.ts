/**
 * POST /api/v1/licenses/validate: the online check of a license token. Two kinds verify
 * here, told apart by audience: a machine-bound license token (`aegis-license`, from
 * activation) and a module license token (`aegis-module-license`, from issuing a module
 * license). Offline checks (signature, time, product or module, version, hardware) plus
 * what only the server knows: whether the license (and, for a machine-bound token, the
 * seat it names) may still be used: revoked, expired or deleted; the machine deactivated
 * or unknown since the token was signed.
 */
import {
  AegisError,
  AUD_LICENSE,
  AUD_MODULE_LICENSE,
  PRODUCT_NAME,
  hostMajorOf,
  type ValidateRequest,
  type ValidateResult,
  type ValidationCode,
} from '../../protocol/src/index.js';
import type { Clock } from './clock.js';
import { majorOf } from './licenses.js';
import type { TokenService } from './tokens.js';

/** Clock leeway for nbf/iat, absorbing small skew between server replicas. */
const LEEWAY_SECONDS = 30;

/**
 * Why the seat a token names (its license and its machine, `sub`) cannot be used now, or
 * null. LICENSE_REVOKED for a revoked or deleted license, LICENSE_EXPIRED,
 * MACHINE_DEACTIVATED, and NOT_FOUND for a machine the server does not hold under that
 * license. The machine lifecycle answers it.
 */
export type SeatRefusalLookup = (licenseId: string, machineId: string, kid: string) => Promise<SeatAnswer>;

/**
 * A seat or license lookup's answer: null (usable), a refusal (mapped to its verdict), a
 * verdict of its own (HEARTBEAT_DEAD), or usable but in grace until `grace_ends_at`
 * (an expired license within its grace period, a machine that missed its heartbeat window
 * within grace).
 */
export type SeatAnswer = AegisError | { code: ValidationCode; message: string } | { grace_ends_at: Date } | null;

/**
 * Why a license cannot be used now (LICENSE_REVOKED, also for a deleted one; LICENSE_EXPIRED), or null.
 * `kid` is the key that signed the token: a lookup may refuse it (UNKNOWN_KEY) when it was
 * retired since this replica last loaded the keyring.
 */
export type LicenseRefusalLookup = (licenseId: string, kid: string) => Promise<SeatAnswer>;

/** The entitlements a license holds now (the server's record, which may be newer than a token's claim). */
export type EntitlementsLookup = (licenseId: string) => Promise<string[]>;

export interface ValidationLookups {
  seat: SeatRefusalLookup;
  license: LicenseRefusalLookup;
  entitlements: EntitlementsLookup;
}

/** Server answers to the validation verdicts they mean. */
const SEAT_VERDICTS: Record<string, ValidationCode> = {
  LICENSE_REVOKED: 'REVOKED',
  LICENSE_EXPIRED: 'EXPIRED',
  MACHINE_DEACTIVATED: 'MACHINE_DEACTIVATED',
  NOT_FOUND: 'MACHINE_UNKNOWN',
};

/**
 * What the caller asked about the product against what the token licenses. Today's
 * fields (`product`, `version`) answer today's codes (PRODUCT_MISMATCH, VERSION_MISMATCH);
 * the module fields (`module_name`, `odoo_version`) answer MODULE_MISMATCH and
 * VERSION_NOT_ALLOWED. Versions match on their major ("17.0" and "17" both match "17");
 * no allowed versions means any.
 */
function productRefusal(input: ValidateRequest, name: string, allowed: readonly string[]): { code: ValidationCode; message: string } | null {
  if (input.product !== undefined && input.product !== name) return { code: 'PRODUCT_MISMATCH', message: `license is for ${name}, not ${input.product}` };
  if (input.module_name !== undefined && input.module_name !== name) return { code: 'MODULE_MISMATCH', message: `license is for module ${name}, not ${input.module_name}` };
  const majors = allowed.length > 0 ? ` (allowed majors: ${allowed.join(', ')})` : '';
  if (input.version !== undefined && allowed.length > 0) {
    const major = majorOf(input.version);
    if (major === null || !allowed.includes(major)) return { code: 'VERSION_MISMATCH', message: `version ${input.version} is not allowed${majors}` };
  }
  if (input.odoo_version !== undefined && allowed.length > 0) {
    const major = hostMajorOf(input.odoo_version);
    if (major === null || !allowed.includes(major)) return { code: 'VERSION_NOT_ALLOWED', message: `version ${input.odoo_version} is not allowed${majors}` };
  }
  return null;
}

/**
 * `onVerified` runs once the signature has verified and the claims name a license, and
 * before any lookup: the HTTP layer charges the per-license budget there, so only tokens
 * this server signed spend a license's budget. It refuses by throwing.
 */
export async function validateLicenseToken(
  clock: Clock,
  tokens: TokenService,
  input: ValidateRequest,
  lookups: ValidationLookups,
  onVerified: (licenseId: string) => void | Promise<void> = () => {},
): Promise<ValidateResult> {
  const v = await tokens.verify(input.token);
  if (!v.ok) return { valid: false, code: v.code, message: v.message };
  const c = v.payload;
  const fail = (code: ValidationCode, message: string): ValidateResult => ({ valid: false, code, message, claims: c });
  const moduleToken = c.aud === AUD_MODULE_LICENSE;
  if (c.aud !== AUD_LICENSE && !moduleToken) {
    return fail('WRONG_AUDIENCE', `token audience is ${JSON.stringify(c.aud)}, not ${AUD_LICENSE} or ${AUD_MODULE_LICENSE}`);
  }
  const module = c.module as { technical_name?: unknown; allowed_major_versions?: unknown } | undefined;
  if (typeof c.license_id !== 'string' || typeof c.iat !== 'number') return fail('MALFORMED', 'license claims are incomplete (license_id and iat are required)');
  if (moduleToken ? typeof module?.technical_name !== 'string' : typeof c.sub !== 'string') {
    return fail('MALFORMED', moduleToken ? 'module license claims name no module' : 'license claims are incomplete (sub is required)');
  }
  await onVerified(c.license_id);
  const now = Math.floor(clock.now().getTime() / 1000);
  if (c.iat > now + LEEWAY_SECONDS || (typeof c.nbf === 'number' && c.nbf > now + LEEWAY_SECONDS)) {
    return fail('NOT_YET_VALID', 'token is not valid yet');
  }
  // A token past its exp that carries a grace claim is in grace until exp + grace_seconds.
  let graceEnd: number | null = null;
  if (typeof c.exp === 'number' && c.exp <= now && typeof c.grace_seconds === 'number' && c.grace_seconds > 0 && now < c.exp + c.grace_seconds) {
    graceEnd = (c.exp + c.grace_seconds) * 1000;
  } else if (c.exp !== undefined && (typeof c.exp !== 'number' || c.exp <= now)) {
    const refresh = moduleToken ? '' : '; a machine that still holds its seat refreshes it';
    return fail('EXPIRED', `license token expired${typeof c.exp === 'number' ? ` at ${new Date(c.exp * 1000).toISOString()}` : ''}${refresh}`);
  }
  const answer = moduleToken ? await lookups.license(c.license_id, v.kid) : await lookups.seat(c.license_id, c.sub as string, v.kid);
  let refusal: AegisError | null = null;
  if (answer instanceof AegisError) refusal = answer;
  else if (answer && 'grace_ends_at' in answer) graceEnd = Math.min(graceEnd ?? Infinity, answer.grace_ends_at.getTime());
  else if (answer) return fail(answer.code, answer.message);
  if (refusal) {
    const code = SEAT_VERDICTS[refusal.code];
    if (code === 'MACHINE_UNKNOWN') return fail(code, 'the machine this token names is not registered under its license');
    return fail(code ?? 'REVOKED', refusal.message);
  }
  const strings = (v: unknown): string[] => (Array.isArray(v) ? v.map(String) : []);
  let mismatch;
  if (moduleToken) {
    mismatch = productRefusal(input, module!.technical_name as string, strings(module!.allowed_major_versions));
  } else {
    const product = c.product as { name?: unknown; allowed_major_versions?: unknown } | undefined;
    mismatch = productRefusal(input, typeof product?.name === 'string' ? product.name : PRODUCT_NAME, strings(product?.allowed_major_versions));
  }
  if (mismatch) return fail(mismatch.code, mismatch.message);
  if (input.hardware_id !== undefined && input.hardware_id !== c.hwid) {
    return fail('HWID_MISMATCH', moduleToken ? 'a module license is bound to no hardware' : 'license is bound to other hardware');
  }
  // Entitlements are checked against what the license holds now, not the token's claim:
  // one detached since the token was signed is missing at once.
  const entitlements = await lookups.entitlements(c.license_id);
  const missing = (input.entitlements ?? []).filter((e) => !entitlements.includes(e));
  if (missing.length > 0) {
    return { valid: false, code: 'ENTITLEMENT_MISSING', message: `the license does not grant: ${[...new Set(missing)].join(', ')}`, claims: c, entitlements };
  }
  if (graceEnd !== null) {
    const grace_ends_at = new Date(graceEnd).toISOString();
    return { valid: true, code: 'VALID_IN_GRACE', message: `license is in its grace period until ${grace_ends_at}`, claims: c, entitlements, grace_ends_at };
  }
  return { valid: true, code: 'VALID', message: 'license is valid', claims: c, entitlements };
}
