/** Errors the library throws for bad input or missing material; each carries a stable code. */

export type LicenseClientErrorCode =
  /** The JWKS answer or cache holds no usable Ed25519 public key. */
  | 'JWKS_NO_ED25519_KEYS'
  /** Neither the server nor the cache could give a JWKS. */
  | 'JWKS_UNAVAILABLE'
  /** The server answered the validation request with an error (not a verdict). */
  | 'SERVER_ERROR'
  /** An option the caller passed is unusable (e.g. no keys at all, a bad fleet key). */
  | 'BAD_OPTION';

export class LicenseClientError extends Error {
  constructor(
    readonly code: LicenseClientErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'LicenseClientError';
  }
}
