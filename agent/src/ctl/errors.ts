/**
 * Errors of aegisctl. Everything a command can fail with is a CtlError: a message for
 * people, an optional hint (what to do about it) and the exit code. Low-level errors
 * (errno, HTTP) are mapped once, where they happen, and kept as `cause`.
 */
import { ExitCode, exitCodeForApiError } from './exit_codes.js';

export class CtlError extends Error {
  readonly exitCode: ExitCode;
  readonly hint: string | undefined;

  constructor(exitCode: ExitCode, message: string, options: { hint?: string; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'CtlError';
    this.exitCode = exitCode;
    this.hint = options.hint;
  }
}

/** Bad input caught before anything was sent. */
export class UsageError extends CtlError {
  constructor(message: string, options: { hint?: string } = {}) {
    super(ExitCode.USAGE, message, options);
    this.name = 'UsageError';
  }
}

/** Which peer a request went to, for messages and hints. */
export type PeerKind = 'server' | 'agent';

/** The peer could not be reached at all (no socket, refused, timeout, DNS). */
export class UnreachableError extends CtlError {
  readonly peer: PeerKind;
  /** errno name of the failure (`ENOENT`, `ECONNREFUSED`, ...) or `ETIMEDOUT` for our own timeout. */
  readonly errno: string | undefined;

  constructor(peer: PeerKind, message: string, options: { hint?: string; errno?: string; cause?: unknown; exitCode?: ExitCode } = {}) {
    super(options.exitCode ?? ExitCode.UNREACHABLE, message, options);
    this.name = 'UnreachableError';
    this.peer = peer;
    this.errno = options.errno;
  }
}

/** The peer answered with something that is not its API (not JSON, wrong shape). */
export class ProtocolError extends CtlError {
  constructor(message: string, options: { hint?: string; cause?: unknown } = {}) {
    super(ExitCode.FAILURE, message, options);
    this.name = 'ProtocolError';
  }
}

/** An error envelope `{"error":{"code","message","details"}}` from the server or the agent. */
export class ApiError extends CtlError {
  readonly peer: PeerKind;
  readonly status: number;
  readonly code: string;
  readonly details: unknown;

  constructor(peer: PeerKind, status: number, code: string, message: string, details: unknown, hint?: string) {
    super(exitCodeForApiError(code, status), message, hint === undefined ? {} : { hint });
    this.name = 'ApiError';
    this.peer = peer;
    this.status = status;
    this.code = code;
    this.details = details;
  }

  /** The same answer told better (the caller knows what was asked for). */
  rephrase(message: string, hint: string | undefined = this.hint): ApiError {
    const e = new ApiError(this.peer, this.status, this.code, message, this.details, hint);
    (e as { cause?: unknown }).cause = this;
    return e;
  }
}

/** One line for stderr: `aegisctl: error: <message>; <hint>`, never a stack trace. */
export function formatError(err: unknown): string {
  if (err instanceof CtlError) {
    return `aegisctl: error: ${oneLine(err.message)}${err.hint ? `; ${oneLine(err.hint)}` : ''}`;
  }
  const message = err instanceof Error ? err.message : String(err);
  return `aegisctl: error: unexpected failure: ${oneLine(message)}; this is a bug in aegisctl, please report it (AEGIS_DEBUG=1 shows details)`;
}

function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, '; ').trim();
}
