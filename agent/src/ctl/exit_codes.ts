/**
 * aegisctl's exit codes. They are part of its interface: scripts branch on them, so a
 * number keeps its meaning forever (append, never renumber).
 */
export const ExitCode = {
  /** The command did what was asked. */
  OK: 0,
  /** It failed for another reason (server error, conflict, unexpected answer). */
  FAILURE: 1,
  /** Bad usage or input: unknown option, malformed value or license key, or a request the server rejected as invalid (400). */
  USAGE: 2,
  /** aegis-agent or aegis-server could not be reached (no socket, connection refused, timeout). */
  UNREACHABLE: 3,
  /** Missing, unknown or insufficient credentials (401/403, socket permission denied). */
  UNAUTHORIZED: 4,
  /** The customer, license, machine or key named does not exist (404). */
  NOT_FOUND: 5,
  /** Licensing refused: license revoked, expired or suspended, seat limit, agent version, host key mismatch. */
  LICENSING_REFUSED: 6,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

/** The table shown at the end of `aegisctl --help`. */
export const EXIT_CODE_HELP: ReadonlyArray<readonly [ExitCode, string]> = [
  [ExitCode.OK, 'success'],
  [ExitCode.FAILURE, 'failure (server error, conflict, unexpected response)'],
  [ExitCode.USAGE, 'usage error: bad option or value, malformed license key, request rejected as invalid (400)'],
  [ExitCode.UNREACHABLE, 'cannot reach aegis-agent (socket) or aegis-server (network, timeout)'],
  [ExitCode.UNAUTHORIZED, 'unauthorized or forbidden: missing/unknown API key, missing scope, socket permission'],
  [ExitCode.NOT_FOUND, 'not found: unknown customer, license, machine or license key'],
  [ExitCode.LICENSING_REFUSED, 'refused by licensing: revoked, expired, suspended, seat limit, version, host key mismatch'],
];

/** Error codes (from the server or the agent) that mean "licensing said no". */
export const LICENSING_REFUSAL_CODES: ReadonlySet<string> = new Set([
  'SEAT_LIMIT',
  'LICENSE_REVOKED',
  'LICENSE_EXPIRED',
  'LICENSE_SUSPENDED',
  'VERSION_MISMATCH',
  'HOST_KEY_MISMATCH',
  'MACHINE_DEACTIVATED',
]);

const INVALID_REQUEST_CODES: ReadonlySet<string> = new Set([
  'BAD_REQUEST',
  'VALIDATION_FAILED',
  'MALFORMED_JSON',
  'UNSUPPORTED_MEDIA_TYPE',
  'PAYLOAD_TOO_LARGE',
  'INVALID_LICENSE_KEY',
]);

/**
 * The exit code for an error envelope: by its code first (stable across transports),
 * by the HTTP status when the code is one aegisctl does not know.
 */
export function exitCodeForApiError(code: string, status: number): ExitCode {
  if (LICENSING_REFUSAL_CODES.has(code)) return ExitCode.LICENSING_REFUSED;
  if (code === 'UNAUTHORIZED' || code === 'FORBIDDEN' || code === 'FORBIDDEN_CALLER' || code === 'CALLER_UNKNOWN') return ExitCode.UNAUTHORIZED;
  if (code === 'NOT_FOUND') return ExitCode.NOT_FOUND;
  if (INVALID_REQUEST_CODES.has(code)) return ExitCode.USAGE;
  if (code === 'SERVER_UNREACHABLE') return ExitCode.UNREACHABLE;
  if (status === 401 || status === 403) return ExitCode.UNAUTHORIZED;
  if (status === 404) return ExitCode.NOT_FOUND;
  if (status === 400 || status === 413 || status === 415) return ExitCode.USAGE;
  return ExitCode.FAILURE;
}
