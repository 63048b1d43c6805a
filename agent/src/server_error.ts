/**
 * How the agent reads a failed call to aegis-server, whichever listener answered: a
 * *final* answer (revoked, seat limit, unknown key...) is never retried; network errors,
 * timeouts, 5xx and 429 are retryable, after Retry-After when the server sends one.
 */
import type { ErrorEnvelope } from '../../protocol/src/index.js';
import { AgentError } from './errors.js';

/** Server answers that retrying cannot change. */
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

/** A call to aegis-server that did not succeed; `final` says whether retrying can help. */
export class ServerError extends AgentError {
  readonly final: boolean;
  readonly retryAfterMs: number | null;
  constructor(code: string, message: string, opts: { status: number; final: boolean; retryAfterMs?: number | null; details?: unknown; cause?: unknown }) {
    super(code, message, { status: opts.status, details: opts.details, cause: opts.cause });
    this.name = 'ServerError';
    this.final = opts.final;
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

/**
 * The one classification of a non-2xx answer: the server's error envelope when there is
 * one (else `HTTP_<status>`), final for FINAL_CODES and for 4xx other than 408 and 429.
 */
export function answerError(status: number, body: unknown, retryAfter: string | null | undefined, fallbackMessage: string): ServerError {
  const err = (body as Partial<ErrorEnvelope> | null)?.error;
  const code = err?.code ?? `HTTP_${status}`;
  const seconds = Number(retryAfter);
  const final = FINAL_CODES.has(code) || (status >= 400 && status < 500 && status !== 429 && status !== 408);
  return new ServerError(code, err?.message ?? fallbackMessage, {
    status,
    final,
    retryAfterMs: retryAfter && Number.isFinite(seconds) && seconds > 0 ? seconds * 1000 : null,
    details: err?.details,
  });
}

/** No answer at all (refused, reset, TLS failure, timeout): always retryable. */
export function unreachableError(message: string, cause: unknown): ServerError {
  return new ServerError('SERVER_UNREACHABLE', message, { status: 503, final: false, cause });
}
