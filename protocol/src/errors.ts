/**
 * Error vocabulary shared by agent and server. Every error Aegis raises on purpose
 * is an AegisError with a stable `code`; the HTTP layer maps codes to statuses once.
 */
export type ErrorCode =
  | 'BAD_REQUEST'
  | 'VALIDATION_FAILED'
  | 'MALFORMED_JSON'
  | 'UNSUPPORTED_MEDIA_TYPE'
  | 'PAYLOAD_TOO_LARGE'
  | 'UNAUTHORIZED'
  | 'FORBIDDEN'
  | 'NOT_FOUND'
  | 'CONFLICT'
  | 'RATE_LIMITED'
  | 'SEAT_LIMIT'
  | 'HOST_KEY_MISMATCH'
  | 'MACHINE_CLONE_DETECTED'
  | 'CONTAINER_NOT_ALLOWED'
  | 'FINGERPRINT_MISMATCH'
  | 'PROOF_INVALID'
  | 'PROOF_REPLAYED'
  | 'LICENSE_REVOKED'
  | 'LICENSE_EXPIRED'
  | 'LICENSE_SUSPENDED'
  | 'VERSION_MISMATCH'
  | 'PRODUCT_MISMATCH'
  | 'MACHINE_DEACTIVATED'
  | 'CUSTOMER_HAS_ACTIVE_LICENSES'
  | 'SIGNING_KEY_UNAVAILABLE'
  | 'INSECURE_KEY_FILE'
  | 'WEBHOOK_URL_REFUSED'
  /** A file's bytes do not hash to the digests sent with them. */
  | 'HASH_MISMATCH'
  /** A YARA rule that does not compile (the compiler's message in details). */
  | 'YARA_RULE_INVALID'
  | 'INTERNAL';

export class AegisError extends Error {
  readonly code: ErrorCode;
  readonly details: unknown;

  constructor(code: ErrorCode, message: string, options: { details?: unknown; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'AegisError';
    this.code = code;
    this.details = options.details;
  }
}

/** One entry of a validation failure: which field, and what is wrong with it. */
export interface FieldProblem {
  path: string;
  message: string;
}

export class ValidationError extends AegisError {
  readonly problems: FieldProblem[];

  constructor(problems: FieldProblem[], message?: string) {
    super('VALIDATION_FAILED', message ?? problems.map((p) => `${p.path}: ${p.message}`).join('; '), {
      details: problems,
    });
    this.name = 'ValidationError';
    this.problems = problems;
  }
}
