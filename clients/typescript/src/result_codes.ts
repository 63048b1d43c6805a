/**
 * The verdicts of a license check, the same list and spelling as aegis-server's
 * POST /api/v1/licenses/validate (protocol/src/claims.ts VALIDATION_CODES): an offline
 * verdict and an online one mean the same thing. The list is carried here, not imported,
 * so the published package needs nothing outside itself; a test of the repository
 * (result_codes.test.ts) fails when the two lists differ.
 */
export const RESULT_CODES = [
  'VALID',
  'EXPIRED',
  'REVOKED',
  'SIGNATURE_INVALID',
  'MALFORMED',
  'UNKNOWN_KEY',
  'VERSION_MISMATCH',
  'HWID_MISMATCH',
  'NOT_YET_VALID',
  'PRODUCT_MISMATCH',
  'WRONG_AUDIENCE',
  'MACHINE_DEACTIVATED',
  'MACHINE_UNKNOWN',
  'MODULE_MISMATCH',
  'VERSION_NOT_ALLOWED',
  'ENTITLEMENT_MISSING',
  'VALID_IN_GRACE',
  'HEARTBEAT_DEAD',
] as const;
export type ResultCode = (typeof RESULT_CODES)[number];

/** The only signature algorithm accepted (Ed25519). */
export const TOKEN_ALG = 'EdDSA';

/** Audience of a module license token; any other audience is WRONG_AUDIENCE. */
export const AUD_MODULE_LICENSE = 'aegis-module-license';

/** A host product version: a major and up to three dotted parts, each at most six digits. */
export const HOST_VERSION_PATTERN = /^[0-9]{1,6}(\.[0-9]{1,6}){0,3}$/;

/** The major version of a host product version ("17.0.3" and "017" → "17"), or null when it is none. */
export function hostMajorOf(version: string): string | null {
  if (!HOST_VERSION_PATTERN.test(version)) return null;
  return String(Number(version.split('.')[0]));
}
