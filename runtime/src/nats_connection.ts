/**
 * The NATS connection layer shared by aegis-server (ServerBus, NatsAuthority's account
 * push) and the agent (AgentBus): connect options for password or JWT credentials and
 * TLS, the classification of a failed first connect into an error with a stable code, and
 * the bookkeeping of a connection's status events (connected or not, reconnects,
 * permission violations). Both sides connect the same way, so they fail the same way.
 */
import { readFileSync } from 'node:fs';
import { credsAuthenticator, Events, type ConnectionOptions, type NatsConnection } from 'nats';

/** Structured log sink; a winston logger fits. */
export interface NatsLogger {
  info(msg: string, meta?: object): void;
  warn(msg: string, meta?: object): void;
  error(msg: string, meta?: object): void;
}

/** A logger that drops everything (no `log` option given). */
export const NO_LOG: NatsLogger = { info() {}, warn() {}, error() {} };

/** TLS to nats-server, as nats.js takes it (the files are read at connect). */
export interface NatsTlsOptions {
  /** CA bundle that signed nats-server's certificate (default: the system's). */
  caFile?: string;
  /** Client certificate and key, for a nats-server that verifies clients (`verify: true`). */
  certFile?: string;
  keyFile?: string;
}

/** How a client authenticates; `creds` wins over `credsFile`, both over user/pass. */
export interface NatsAuthOptions {
  /** Password auth (deploy/nats's static users). */
  user?: string;
  pass?: string;
  /** A NATS .creds file's text (user JWT + nkey seed). */
  creds?: string;
  /** Path of a .creds file, read again at every (re)connect so a renewed file is picked up. */
  credsFile?: string;
}

export type NatsConnectErrorCode = 'NATS_UNREACHABLE' | 'NATS_AUTH' | 'NATS_TLS';

/** Why a first connect failed (or could not be tried); the underlying error is kept in `cause`. */
export class NatsConnectError extends Error {
  readonly code: NatsConnectErrorCode;
  constructor(code: NatsConnectErrorCode, message: string, opts: { cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'NatsConnectError';
    this.code = code;
  }
}

const encoder = new TextEncoder();

/** An error's message, or the value as text. */
export function describeError(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The string `code` nats.js (and Node's tls module) put on errors, if any. */
export function natsErrorCode(err: unknown): string | undefined {
  const c = (err as { code?: unknown } | null)?.code;
  return typeof c === 'string' ? c : undefined;
}

/** True for TLS failures of Node's tls module and nats.js's "server requires TLS". */
export function isTlsError(err: unknown): boolean {
  const code = natsErrorCode(err) ?? '';
  return /CERT|SELF_SIGNED|UNABLE_TO_|ERR_TLS|ERR_SSL/.test(code) || /certificate|tls|ssl/i.test(describeError(err)) || code === 'SERVER_OPT_NA';
}

/** True when nats-server refused the credentials (wrong, revoked or expired). */
export function isAuthError(err: unknown): boolean {
  const code = natsErrorCode(err);
  return code === 'AUTHORIZATION_VIOLATION' || code === 'AUTHENTICATION_EXPIRED';
}

/** Rejects when `p` has not settled within `ms` (a flush waits through a disconnect otherwise). */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer from nats-server within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Connect options for the configured authentication and TLS. A credentials file that
 * cannot be read now is a NatsConnectError NATS_AUTH, rather than a connect that would
 * only fail later with a less useful message.
 */
export function authConnectOptions(auth: NatsAuthOptions, tls?: NatsTlsOptions): Partial<ConnectionOptions> {
  const out: Partial<ConnectionOptions> = {};
  if (auth.creds !== undefined) {
    out.authenticator = credsAuthenticator(encoder.encode(auth.creds));
  } else if (auth.credsFile !== undefined) {
    const file = auth.credsFile;
    try {
      readFileSync(file);
    } catch (err) {
      throw new NatsConnectError('NATS_AUTH', `cannot read the NATS credentials file ${file}: ${describeError(err)}`, { cause: err });
    }
    out.authenticator = credsAuthenticator(() => readFileSync(file));
  } else if (auth.user !== undefined) {
    out.user = auth.user;
    out.pass = auth.pass ?? '';
  }
  if (tls) out.tls = { ...tls };
  return out;
}

export interface LongLivedConnectOptions {
  /** One URL or several (a cluster). */
  url: string | string[];
  auth: NatsAuthOptions;
  tls?: NatsTlsOptions;
  /** Connection name shown by nats-server. */
  name: string;
  /** Reply subjects' prefix, when nats-server allows this user only its own inboxes. */
  inboxPrefix?: string;
  /** Wait between reconnect attempts, before jitter (default 1000 ms). */
  reconnectWaitMs?: number;
  /** Keep trying until a first connection succeeds instead of failing at once. */
  waitOnFirstConnect?: boolean;
}

/**
 * Options of a connection that lives as long as the process: reconnects forever (a
 * nats-server restarted with a changed config must not make the client give up, hence
 * ignoreAuthErrorAbort), and pings often enough to notice a dead server within 30 s.
 */
export function buildConnectOptions(o: LongLivedConnectOptions): ConnectionOptions {
  return {
    servers: o.url,
    ...authConnectOptions(o.auth, o.tls),
    name: o.name,
    ...(o.inboxPrefix !== undefined ? { inboxPrefix: o.inboxPrefix } : {}),
    maxReconnectAttempts: -1,
    reconnectTimeWait: o.reconnectWaitMs ?? 1000,
    reconnectJitter: 250,
    waitOnFirstConnect: o.waitOnFirstConnect ?? false,
    ignoreAuthErrorAbort: true,
    pingInterval: 10_000,
    maxPingOut: 3,
    timeout: 5000,
  };
}

export interface ConnectFailureContext {
  url: string | string[];
  /** Completes "nats-server at <url> refused …": whose credentials, and what to do. */
  refused: string;
  /** Completes "TLS to nats-server at <url> failed: <why>; …" (default: check the CA file). */
  tlsAdvice?: string;
}

/**
 * Maps a failed first connect to a NatsConnectError that says what to check: NATS_AUTH
 * (credentials refused, or unreadable), NATS_TLS, or NATS_UNREACHABLE. Each bus turns it
 * into its own error class with the same code and message.
 */
export function classifyConnectError(err: unknown, ctx: ConnectFailureContext): NatsConnectError {
  if (err instanceof NatsConnectError) return err;
  const where = Array.isArray(ctx.url) ? ctx.url.join(',') : ctx.url;
  if (isAuthError(err)) return new NatsConnectError('NATS_AUTH', `nats-server at ${where} refused ${ctx.refused}`, { cause: err });
  if (isTlsError(err)) {
    const advice = ctx.tlsAdvice ?? "check the CA file (tls.caFile) and that nats-server's certificate names this host";
    return new NatsConnectError('NATS_TLS', `TLS to nats-server at ${where} failed: ${describeError(err)}; ${advice}`, { cause: err });
  }
  return new NatsConnectError('NATS_UNREACHABLE', `cannot connect to nats-server at ${where}: ${describeError(err)}`, { cause: err });
}

/**
 * Follows a connection's status events: keeps `connected` current, logs disconnects,
 * reconnects, permission violations and lame duck mode, and runs `onReconnect` after each
 * reconnect (a bus re-reads or re-creates what a restarted nats-server may have lost).
 */
export class ConnectionWatch {
  connected = true;
  closed = false;
  onReconnect: () => void = () => {};

  /** `what` names the connection in log lines ("server bus", "agent bus"). */
  constructor(nc: NatsConnection, log: NatsLogger, what: string) {
    void (async () => {
      for await (const s of nc.status()) {
        switch (s.type) {
          case Events.Disconnect:
            this.connected = false;
            log.warn(`${what}: disconnected from nats-server, reconnecting`, { server: String(s.data) });
            break;
          case Events.Reconnect:
            this.connected = true;
            log.info(`${what}: reconnected to nats-server`, { server: String(s.data) });
            this.onReconnect();
            break;
          case Events.Error:
            if (s.permissionContext) {
              log.error(`${what}: nats-server denied ${s.permissionContext.operation} on ${s.permissionContext.subject}; check the NATS user's permissions (deploy/nats)`, {
                operation: s.permissionContext.operation,
                subject: s.permissionContext.subject,
              });
            } else {
              log.warn(`${what}: nats-server error`, { error: String(s.data) });
            }
            break;
          case Events.LDM:
            log.warn(`${what}: nats-server is entering lame duck mode; will move to another server`);
            break;
          default:
            break;
        }
      }
    })();
    void nc.closed().then((err) => {
      this.connected = false;
      this.closed = true;
      if (err) log.error(`${what}: NATS connection closed`, { error: describeError(err) });
    });
  }
}
