/**
 * POST /api/v1/licenses/validate: the online check of a license token. Offline checks
 * (signature, time, product, version, hardware) plus what only the server knows: whether
 * the seat the token names may still be used (license revoked, expired or deleted; the
 * machine deactivated or unknown since the token was signed).
 */
import {
  AegisError,
  AUD_LICENSE,
  PRODUCT_NAME,
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
export type SeatRefusalLookup = (licenseId: string, machineId: string) => Promise<AegisError | null>;

/** Server answers to the validation verdicts they mean. */
const SEAT_VERDICTS: Record<string, ValidationCode> = {
  LICENSE_REVOKED: 'REVOKED',
  LICENSE_EXPIRED: 'EXPIRED',
  MACHINE_DEACTIVATED: 'MACHINE_DEACTIVATED',
  NOT_FOUND: 'MACHINE_UNKNOWN',
};

/**
 * `onVerified` runs once the signature has verified and the claims name a license, and
 * before any lookup: the HTTP layer charges the per-license budget there, so only tokens
 * this server signed spend a license's budget. It refuses by throwing.
 */
export async function validateLicenseToken(
  clock: Clock,
  tokens: TokenService,
  input: ValidateRequest,
  refusalOf: SeatRefusalLookup,
  onVerified: (licenseId: string) => void = () => {},
): Promise<ValidateResult> {
  const v = await tokens.verify(input.token);
  if (!v.ok) return { valid: false, code: v.code, message: v.message };
  const c = v.payload;
  const fail = (code: ValidationCode, message: string): ValidateResult => ({ valid: false, code, message, claims: c });
  if (c.aud !== AUD_LICENSE) return fail('WRONG_AUDIENCE', `token audience is ${JSON.stringify(c.aud)}, not ${AUD_LICENSE}`);
  if (typeof c.license_id !== 'string' || typeof c.sub !== 'string' || typeof c.iat !== 'number') {
    return fail('MALFORMED', 'license claims are incomplete (license_id, sub and iat are required)');
  }
  onVerified(c.license_id);
  const now = Math.floor(clock.now().getTime() / 1000);
  if (c.iat > now + LEEWAY_SECONDS || (typeof c.nbf === 'number' && c.nbf > now + LEEWAY_SECONDS)) {
    return fail('NOT_YET_VALID', 'token is not valid yet');
  }
  if (c.exp !== undefined && (typeof c.exp !== 'number' || c.exp <= now)) {
    return fail('EXPIRED', `license token expired${typeof c.exp === 'number' ? ` at ${new Date(c.exp * 1000).toISOString()}` : ''}; a machine that still holds its seat refreshes it`);
  }
  const refusal = await refusalOf(c.license_id, c.sub);
  if (refusal) {
    const code = SEAT_VERDICTS[refusal.code];
    if (code === 'MACHINE_UNKNOWN') return fail(code, 'the machine this token names is not registered under its license');
    return fail(code ?? 'REVOKED', refusal.message);
  }
  const product = c.product as { name?: unknown; allowed_major_versions?: unknown } | undefined;
  if (input.product !== undefined && input.product !== (product?.name ?? PRODUCT_NAME)) {
    return fail('PRODUCT_MISMATCH', `license is for ${String(product?.name)}, not ${input.product}`);
  }
  if (input.version !== undefined) {
    const allowed = Array.isArray(product?.allowed_major_versions) ? (product.allowed_major_versions as unknown[]).map(String) : [];
    const major = majorOf(input.version);
    if (allowed.length > 0 && (major === null || !allowed.includes(major))) {
      return fail('VERSION_MISMATCH', `version ${input.version} is not allowed (allowed majors: ${allowed.join(', ')})`);
    }
  }
  if (input.hardware_id !== undefined && input.hardware_id !== c.hwid) return fail('HWID_MISMATCH', 'license is bound to other hardware');
  return { valid: true, code: 'VALID', message: 'license is valid', claims: c };
}
