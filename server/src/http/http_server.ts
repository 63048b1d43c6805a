/**
 * The node:http adapter: reads and limits bodies, enforces JSON content type, parses
 * JSON, routes, and turns every thrown AegisError into the error envelope
 * `{"error":{"code","message","details"}}`. Nothing else in the server imports node:http
 * (or node:https: the agent-facing mTLS listener is built here too, and hands handlers
 * the verified client certificate as `Request.peer`).
 */
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { AegisError } from '../../../protocol/src/index.js';
import type { Logger } from 'winston';
import { systemClock, type Clock } from '../clock.js';
import type { HttpLimits } from '../config.js';
import { checkBodyText, checkQuery } from './request_text.js';
import { STATUS_OF } from './status.js';
import type { PeerCertificate, Reply, Request, Router } from './router.js';

type Server = HttpServer | HttpsServer;

/** PEM material of an mTLS listener: its certificate and key, and the CA client certificates must chain to. */
export interface MtlsOptions {
  cert: string;
  key: string;
  clientCa: string;
}

/** PEM material of the main listener over HTTPS. */
export interface TlsOptions {
  cert: string;
  key: string;
}

/**
 * Browser origins allowed to call a listener. Only listed origins get CORS headers, and
 * only their preflights are answered; never Access-Control-Allow-Credentials (the API
 * authenticates with headers, never cookies, so a page has nothing ambient to send).
 */
export interface CorsPolicy {
  origins: ReadonlySet<string>;
}

const CORS_METHODS = 'GET, POST, PUT, PATCH, DELETE';
/** What a page may send: the API key headers, a JSON body, conditional GETs. */
const CORS_REQUEST_HEADERS = 'authorization, content-type, x-api-key, if-none-match, if-modified-since';
/** What a page may read beyond the CORS-safelisted response headers. */
const CORS_EXPOSED_HEADERS = 'retry-after, etag, last-modified, allow';

/** The main listener's certificate and key cannot serve: named, with what to do. */
export class TlsConfigError extends Error {
  readonly code = 'TLS_CONFIG_INVALID';
  constructor(message: string, cause: unknown) {
    super(message, { cause });
    this.name = 'TlsConfigError';
  }
}

export const MAX_BODY_BYTES = 1024 * 1024;

/** The route label of a request no route matched (404, 405): never the raw path. */
export const UNMATCHED_ROUTE = 'unmatched';

/**
 * Told of every answered request: its method, the matched route's pattern (or
 * UNMATCHED_ROUTE), the status sent and the seconds from arrival to the reply's end.
 */
export type RequestObserver = (o: { method: string; route: string; status: number; seconds: number }) => void;

function errorReply(err: AegisError, headers?: Record<string, string>): Reply {
  const body = { error: { code: err.code, message: err.message, details: err.details ?? null } };
  return { status: STATUS_OF[err.code], body, headers };
}

function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'] ?? NaN);
    if (Number.isFinite(declared) && declared > limit) {
      reject(new AegisError('PAYLOAD_TOO_LARGE', `request body exceeds ${limit} bytes`, { details: { limit } }));
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    let ended = false;
    req.on('data', (c: Buffer) => {
      if (failed) return;
      size += c.length;
      if (size > limit) {
        failed = true;
        reject(new AegisError('PAYLOAD_TOO_LARGE', `request body exceeds ${limit} bytes`, { details: { limit } }));
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      ended = true;
      if (!failed) resolve(Buffer.concat(chunks));
    });
    // The connection went away mid-body: the client hung up, or the request timeout cut it.
    const incomplete = (): void => {
      if (ended || failed) return;
      failed = true;
      reject(new AegisError('BAD_REQUEST', 'the request body did not arrive in full'));
    };
    req.on('error', incomplete);
    req.on('close', incomplete);
  });
}

function parseJsonBody(req: IncomingMessage, raw: Buffer): unknown {
  if (raw.length === 0) return null;
  const type = String(req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  if (type !== 'application/json') {
    throw new AegisError('UNSUPPORTED_MEDIA_TYPE', `content type must be application/json, got ${JSON.stringify(type || 'none')}`);
  }
  try {
    return JSON.parse(raw.toString('utf8'));
  } catch (cause) {
    throw new AegisError('MALFORMED_JSON', `request body is not valid JSON: ${(cause as Error).message}`);
  }
}

export interface HttpServerHandle {
  server: Server;
  url: string;
  close(): Promise<void>;
}

/** The verified client certificate of a request's connection, if it presented one. */
function peerOf(req: IncomingMessage): PeerCertificate | undefined {
  const sock = req.socket as Partial<TLSSocket>;
  if (!sock.encrypted || !sock.authorized || typeof sock.getPeerCertificate !== 'function') return undefined;
  const c = sock.getPeerCertificate(false);
  if (!c || !c.raw || !c.serialNumber) return undefined;
  const uris = (c.subjectaltname ?? '')
    .split(/,\s*/)
    .filter((n) => n.startsWith('URI:'))
    .map((n) => n.slice(4));
  return { serial: c.serialNumber.toUpperCase(), thumbprint: createHash('sha256').update(c.raw).digest('base64url'), uris };
}

/**
 * The agent-facing listener: HTTPS that requires a client certificate chaining to
 * `clientCa` (the handshake fails without one, or with one from another CA).
 */
export function createMtlsServer(router: Router, log: Logger, tls: MtlsOptions, limits: HttpLimits, clock: Clock = systemClock, observe?: RequestObserver): HttpsServer {
  const server = createHttpsServer(
    {
      cert: tls.cert,
      key: tls.key,
      ca: tls.clientCa,
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: 'TLSv1.3',
      // A handshake is what a client sends before its headers: it gets the same time.
      handshakeTimeout: limits.headersTimeoutMs,
      ...listenerOptions(limits),
    },
    requestListener(router, log, clock, observe),
  );
  server.on('tlsClientError', (err) => log.debug('TLS handshake refused', { error: err.message }));
  return capped(server, limits, log, 'agent');
}

export function createHttpServer(router: Router, log: Logger, limits: HttpLimits, clock: Clock = systemClock, observe?: RequestObserver, listener = 'main', cors?: CorsPolicy): HttpServer {
  return capped(createServer(listenerOptions(limits), requestListener(router, log, clock, observe, cors)), limits, log, listener);
}

/**
 * The main listener over HTTPS (TLS 1.2 or later, no client certificate). A certificate
 * and key that do not belong together, or that are not PEM, fail here, at start, with a
 * TlsConfigError naming both files.
 */
export function createHttpsMainServer(
  router: Router,
  log: Logger,
  tls: TlsOptions & { certPath: string; keyPath: string },
  limits: HttpLimits,
  clock: Clock = systemClock,
  observe?: RequestObserver,
  cors?: CorsPolicy,
): HttpsServer {
  let server: HttpsServer;
  try {
    server = createHttpsServer(
      { cert: tls.cert, key: tls.key, minVersion: 'TLSv1.2', handshakeTimeout: limits.headersTimeoutMs, ...listenerOptions(limits) },
      requestListener(router, log, clock, observe, cors),
    );
  } catch (e) {
    const why = (e as Error).message;
    const mismatch = /key values mismatch/i.test(why);
    throw new TlsConfigError(
      mismatch
        ? `the TLS key ${tls.keyPath} is not the key of the certificate ${tls.certPath} (key values mismatch); give the key the certificate was issued for (--tls-key / AEGIS_TLS_KEY)`
        : `the TLS certificate ${tls.certPath} and key ${tls.keyPath} cannot be used (${why}); both must be PEM (--tls-cert / AEGIS_TLS_CERT, --tls-key / AEGIS_TLS_KEY)`,
      e,
    );
  }
  server.on('tlsClientError', (err) => log.debug('TLS handshake refused', { listener: 'main', error: err.message }));
  return capped(server, limits, log, 'main');
}

/**
 * node:http's own limits, so a slow client cannot hold a connection: headers within
 * `headersTimeout`, the whole request (body included) within `requestTimeout` (else 408
 * and close), idle keep-alive connections closed after `keepAliveTimeout`. Expiry is
 * checked every `connectionsCheckingInterval`, so a short timeout gets a short interval.
 */
function listenerOptions(limits: HttpLimits) {
  return {
    headersTimeout: limits.headersTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    maxHeaderSize: limits.maxHeaderBytes,
    connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(limits.headersTimeoutMs / 4))),
  };
}

/** Caps connections held at once: beyond `maxConnections` node closes a connection on accept. */
function capped<S extends Server>(server: S, limits: HttpLimits, log: Logger, listener: string): S {
  server.maxConnections = limits.maxConnections;
  server.maxHeadersCount = limits.maxHeadersCount;
  // Said at most every 10 s, so a flood of refused connections does not flood the log too.
  let lastWarned = 0;
  let dropped = 0;
  server.on('drop', () => {
    dropped++;
    const now = Date.now();
    if (now - lastWarned < 10_000) return;
    lastWarned = now;
    log.warn('connection refused: listener at its connection cap', { listener, max_connections: limits.maxConnections, refused: dropped });
    dropped = 0;
  });
  return server;
}

/**
 * CORS for one request: the headers a listed origin gets, or, for a preflight (OPTIONS
 * with Origin and Access-Control-Request-Method), the whole answer: 204 for a listed
 * origin, 403 with no CORS headers for any other. Nothing at all without a policy.
 */
function corsFor(req: IncomingMessage, cors: CorsPolicy | undefined): { preflight: Reply | null; headers: Record<string, string> } {
  if (!cors || cors.origins.size === 0) return { preflight: null, headers: {} };
  const origin = typeof req.headers.origin === 'string' ? req.headers.origin : null;
  const listed = origin !== null && cors.origins.has(origin);
  const preflight = req.method === 'OPTIONS' && origin !== null && req.headers['access-control-request-method'] !== undefined;
  if (preflight) {
    if (!listed) {
      return { preflight: errorReply(new AegisError('FORBIDDEN', `origin ${JSON.stringify(origin.slice(0, 200))} may not call this API (it is not in AEGIS_CORS_ORIGINS)`), { vary: 'Origin' }), headers: {} };
    }
    return {
      preflight: {
        status: 204,
        body: null,
        headers: {
          'access-control-allow-origin': origin,
          'access-control-allow-methods': CORS_METHODS,
          'access-control-allow-headers': CORS_REQUEST_HEADERS,
          'access-control-max-age': '600',
          vary: 'Origin, Access-Control-Request-Method, Access-Control-Request-Headers',
        },
      },
      headers: {},
    };
  }
  if (!listed) return { preflight: null, headers: { vary: 'Origin' } };
  return { preflight: null, headers: { 'access-control-allow-origin': origin, 'access-control-expose-headers': CORS_EXPOSED_HEADERS, vary: 'Origin' } };
}

function requestListener(router: Router, log: Logger, clock: Clock, observe?: RequestObserver, cors?: CorsPolicy): (req: IncomingMessage, res: ServerResponse) => void {
  return (req: IncomingMessage, res: ServerResponse) => {
    const started = process.hrtime.bigint();
    const routed = { route: UNMATCHED_ROUTE };
    const c = corsFor(req, cors);
    const answer = c.preflight ? (req.resume(), Promise.resolve(c.preflight)) : handle(router, req, routed);
    void answer.then((reply) => {
      // Nobody is left to answer (the client hung up, or a timeout closed the connection).
      if (res.destroyed || req.socket.destroyed) return;
      const payload = reply.status === 204 || reply.status === 304 ? '' : (reply.raw ?? JSON.stringify(reply.body));
      res.writeHead(reply.status, {
        'content-type': 'application/json; charset=utf-8',
        'cache-control': 'no-store',
        'x-content-type-options': 'nosniff',
        // The time proofs are judged by: an agent whose proof is refused compares it with
        // its own clock to tell a clock that is off from a forged proof.
        date: clock.now().toUTCString(),
        ...(reply.headers ?? {}),
        ...c.headers,
      });
      if (reply.stream) {
        res.flushHeaders();
        const closers: (() => void)[] = [];
        res.on('close', () => {
          for (const fn of closers.splice(0)) fn();
        });
        reply.stream({
          write: (text) => {
            if (!res.destroyed && !res.writableEnded) res.write(text);
          },
          end: () => {
            if (!res.writableEnded) res.end();
          },
          onClose: (fn) => {
            if (res.destroyed) fn();
            else closers.push(fn);
          },
        });
      } else res.end(payload);
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      observe?.({ method: req.method ?? 'GET', route: routed.route, status: reply.status, seconds: ms / 1000 });
      log.debug('request', { method: req.method, path: req.url?.split('?')[0], status: reply.status, ms: Math.round(ms * 100) / 100 });
    });
  };

  async function handle(router: Router, req: IncomingMessage, routed: { route: string }): Promise<Reply> {
    try {
      const url = new URL(req.url ?? '/', 'http://localhost');
      const method = (req.method ?? 'GET').toUpperCase();
      const { match, allowed } = router.match(method, url.pathname);
      if (!match) {
        req.resume();
        if (allowed.length > 0) {
          return { ...errorReply(new AegisError('BAD_REQUEST', `method ${method} not allowed`)), status: 405, headers: { allow: allowed.join(', ') } };
        }
        return errorReply(new AegisError('NOT_FOUND', 'not found'));
      }
      routed.route = match.pattern;
      let body: unknown = null;
      const raw = await readBody(req, match.maxBody ?? MAX_BODY_BYTES);
      if (raw.length > 0) {
        if (!match.takesBody && method === 'GET') throw new AegisError('BAD_REQUEST', 'GET requests take no body');
        body = parseJsonBody(req, raw);
      }
      // Query and body text is checked once here for every route (path parameters by the router).
      checkQuery(url.search.slice(1));
      checkBodyText(body);
      const request: Request = {
        method,
        path: url.pathname,
        params: match.params,
        query: url.searchParams,
        headers: req.headers,
        clientIp: req.socket.remoteAddress ?? 'unknown',
        body,
      };
      const peer = peerOf(req);
      if (peer) request.peer = peer;
      if ((req.socket as Partial<TLSSocket>).encrypted) request.secure = true;
      return await match.handler(request);
    } catch (err) {
      if (err instanceof AegisError) {
        const headers = err.code === 'RATE_LIMITED' ? { 'retry-after': String((err.details as { retry_after: number }).retry_after) } : undefined;
        return errorReply(err, headers);
      }
      log.error('unhandled error', { err: err instanceof Error ? { message: err.message, stack: err.stack } : String(err) });
      return errorReply(new AegisError('INTERNAL', 'internal server error'));
    }
  }
}

export async function listen(server: Server, host: string, port: number): Promise<HttpServerHandle> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  const hostPart = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  return {
    server,
    url: `${'setSecureContext' in server ? 'https' : 'http'}://${hostPart}:${addr.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
