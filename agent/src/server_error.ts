/**
 * How the agent reads a failed call to aegis-server, whichever listener answered: a
 * *final* answer (revoked, seat limit, unknown key...) is never retried; network errors,
 * timeouts, 5xx and 429 are retryable, after Retry-After when the server sends one.
 */
import type { ErrorEnvelope } from '../../protocol/src/index.js';
import { AgentError } from './errors.js';

/**
 * Codes of the server's error envelope that retrying the same request cannot change. Only
 * the server's own envelope counts: a bare 4xx (a proxy, a captive portal, another service
 * on that port) is not an answer from Aegis and stays retryable.
 */
export const FINAL_CODES: ReadonlySet<string> = new Set([
  'LICENSE_REVOKED',
  'LICENSE_EXPIRED',
  'LICENSE_SUSPENDED',
  'SEAT_LIMIT',
  'HOST_KEY_MISMATCH',
  'VERSION_MISMATCH',
  'NOT_FOUND',
  'MACHINE_DEACTIVATED',
  'VALIDATION_FAILED',
  'BAD_REQUEST',
]);

/**
 * The final answers that end a license on this host: the server says the license or the
 * seat is over. Anything else (a refused proof, a bad request, a 5xx) leaves the license
 * in place and is retried.
 */
export const LICENSE_ENDING_CODES: ReadonlySet<string> = new Set([
  'LICENSE_REVOKED',
  'LICENSE_EXPIRED',
  'LICENSE_SUSPENDED',
  'SEAT_LIMIT',
  'NOT_FOUND',
  'MACHINE_DEACTIVATED',
]);

/** Host-proof `iat` window of the server; a clock further off than this gets every proof refused. */
const PROOF_WINDOW_SECONDS = 300;

/** A call to aegis-server that did not succeed; `final` says whether retrying can help. */
export class ServerError extends AgentError {
  readonly final: boolean;
  /** True only for the server's explicit word that the license or seat is over. */
  readonly endsLicense: boolean;
  readonly retryAfterMs: number | null;
  constructor(code: string, message: string, opts: { status: number; final: boolean; retryAfterMs?: number | null; details?: unknown; cause?: unknown }) {
    super(code, message, { status: opts.status, details: opts.details, cause: opts.cause });
    this.name = 'ServerError';
    this.final = opts.final;
    this.endsLicense = opts.final && LICENSE_ENDING_CODES.has(code);
    this.retryAfterMs = opts.retryAfterMs ?? null;
  }
}

/** The body of an answer as JSON, or null when it is empty or not JSON. */
export function parseBody(text: string): unknown {
  try {
    return text ? JSON.parse(text) : null;
  } catch {
    return null;
  }
}

/** What an answer's headers add to its classification. */
export interface AnswerHeaders {
  retryAfter?: string | null;
  /** The server's `Date` header: how a refused proof is told apart from a clock that is off. */
  date?: string | null;
}

/** Seconds this host's clock is ahead of the server's (negative: behind), from a `Date` header. */
export function clockOffsetSeconds(serverDate: string | null | undefined, now = Date.now()): number | null {
  const t = serverDate ? Date.parse(serverDate) : NaN;
  return Number.isFinite(t) ? Math.round((now - t) / 1000) : null;
}

/**
 * The one classification of a non-2xx answer. With the server's error envelope: final for
 * FINAL_CODES, retryable otherwise. Without it (`HTTP_<status>`): always retryable, since
 * whoever answered was not aegis-server. A refused proof from a host whose clock is off
 * by more than the proof window becomes CLOCK_SKEW, retryable, saying by how much.
 */
export function answerError(status: number, body: unknown, headers: AnswerHeaders, fallbackMessage: string): ServerError {
  const err = (body as Partial<ErrorEnvelope> | null)?.error;
  const fromAegis = typeof err?.code === 'string' && typeof err.message === 'string';
  const code = fromAegis ? err.code : `HTTP_${status}`;
  const seconds = Number(headers.retryAfter);
  const retryAfterMs = headers.retryAfter && Number.isFinite(seconds) && seconds > 0 ? seconds * 1000 : null;
  const offset = clockOffsetSeconds(headers.date);
  if (fromAegis && code === 'PROOF_INVALID' && offset !== null && Math.abs(offset) > PROOF_WINDOW_SECONDS) {
    const how = offset > 0 ? 'ahead of' : 'behind';
    return new ServerError('CLOCK_SKEW', `this host's clock is ${Math.abs(offset)} s ${how} the server's (proofs must be within ${PROOF_WINDOW_SECONDS} s); fix the clock (NTP) — the server said: ${err.message}`, {
      status,
      final: false,
      retryAfterMs,
      details: { clock_offset_seconds: offset, server_said: err.message },
    });
  }
  const message = fromAegis ? err.message : `${fallbackMessage} without an Aegis error body (a proxy or another service may have answered); will retry`;
  return new ServerError(code, message, { status, final: fromAegis && FINAL_CODES.has(code), retryAfterMs, details: err?.details });
}

/** No answer at all (refused, reset, TLS failure, timeout): always retryable. */
export function unreachableError(message: string, cause: unknown): ServerError {
  return new ServerError('SERVER_UNREACHABLE', message, { status: 503, final: false, cause });
}
