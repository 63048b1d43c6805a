/**
 * The local control API: HTTP over the Unix socket /run/aegis/agent.sock (mode 0660, no
 * TCP port). aegisctl is its client. Errors use the server's envelope
 * `{"error":{"code","message","details"}}`. Every request is checked against the caller
 * the kernel names (control_access.ts): socket_group reads, root and admin_group write.
 */
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect } from 'node:net';
import { dirname } from 'node:path';
import { checkMapSnapshot, ValidationError, type MapSnapshot } from '../../protocol/src/index.js';
import { ControlAccess, resolveGroup, type AccessGroups } from './control_access.js';
import { AgentError } from './errors.js';
import type { Logger } from './logger.js';

const MAX_BODY = 1024 * 1024;

/**
 * What one local client may hold on the socket: a client that never finishes its headers
 * or its body is cut, and the socket keeps a bounded number of connections, so a stuck or
 * hostile local process cannot starve aegisctl.
 */
export interface ControlApiLimits {
  headersTimeoutMs: number;
  requestTimeoutMs: number;
  maxConnections: number;
}

export const DEFAULT_CONTROL_API_LIMITS: Readonly<ControlApiLimits> = { headersTimeoutMs: 10_000, requestTimeoutMs: 30_000, maxConnections: 64 };

export interface RequestContext {
  /** The query string of the request (handlers refuse what they do not know). */
  query: URLSearchParams;
}

export type Handler = (body: unknown, params: Record<string, string>, ctx: RequestContext) => Promise<unknown>;

/** A follower whose unread output grows past this is cut: a stalled reader cannot grow the agent's memory. */
export const MAX_STREAM_BACKLOG_BYTES = 1024 * 1024;

/**
 * A handler's answer that stays open: newline-delimited JSON, one value per line, until the
 * client disconnects (or falls MAX_STREAM_BACKLOG_BYTES behind). `start` gets a writer and
 * returns the function that stops producing.
 */
export class JsonLinesStream {
  constructor(readonly start: (write: (value: unknown) => void) => () => void) {}
}

/** A handler's answer that is not JSON: sent as is with its content type (GET /metrics). */
export class TextReply {
  constructor(
    readonly contentType: string,
    readonly text: string,
  ) {}
}

interface Route {
  method: string;
  pattern: RegExp;
  keys: string[];
  handler: Handler;
}

/**
 * Validates a MapSnapshot body with protocol's checker (the server's: schema, CIDRs,
 * duplicates, capacity), so a local PUT is refused exactly as the server would refuse it;
 * a 400 VALIDATION_FAILED names each failing path.
 */
export function checkSnapshot(body: unknown): MapSnapshot {
  try {
    return checkMapSnapshot(body);
  } catch (e) {
    if (!(e instanceof ValidationError)) throw e;
    throw new AgentError('VALIDATION_FAILED', `snapshot is not a valid MapSnapshot: ${e.message}`, { status: 400, details: e.problems, cause: e });
  }
}

export class ControlApi {
  private readonly routes: Route[] = [];
  private server: Server | null = null;
  private readonly access: ControlAccess;

  constructor(
    private readonly log: Logger,
    private readonly limits: ControlApiLimits = DEFAULT_CONTROL_API_LIMITS,
  ) {
    this.access = new ControlAccess(log);
  }

  /** Who may write (admin_group); applied to the next request, so a reload takes effect at once. */
  configureAccess(groups: Partial<AccessGroups>): void {
    this.access.configure(groups);
  }

  on(method: string, path: string, handler: Handler): this {
    const keys: string[] = [];
    const pattern = new RegExp(
      '^' +
        path.replace(/:([a-z_]+)/g, (_m, k: string) => {
          keys.push(k);
          return '([^/]+)';
        }) +
        '$',
    );
    this.routes.push({ method, pattern, keys, handler });
    return this;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let status = 200;
    let payload: unknown;
    try {
      const path = new URL(req.url ?? '/', 'http://agent').pathname;
      const route = this.routes.find((r) => r.method === req.method && r.pattern.test(path));
      if (!route) throw new AgentError('NOT_FOUND', `no ${req.method} ${path}`, { status: 404 });
      const m = route.pattern.exec(path)!;
      // Before the body is read: a refused caller's payload is never parsed.
      this.access.check(req.socket, route.method, path);
      const params = Object.fromEntries(route.keys.map((k, i) => [k, decodeURIComponent(m[i + 1]!)]));
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const c of req) {
        size += (c as Buffer).length;
        if (size > MAX_BODY) throw new AgentError('PAYLOAD_TOO_LARGE', 'request body too large', { status: 413 });
        chunks.push(c as Buffer);
      }
      let body: unknown = null;
      if (size > 0) {
        try {
          body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        } catch {
          throw new AgentError('MALFORMED_JSON', 'request body is not valid JSON', { status: 400 });
        }
      }
      const query = new URL(req.url ?? '/', 'http://agent').searchParams;
      payload = await route.handler(body, params, { query });
    } catch (e) {
      const err = e instanceof AgentError ? e : new AgentError('INTERNAL', (e as Error).message ?? String(e), { status: 500 });
      if (!(e instanceof AgentError)) this.log.error('control API handler failed', { error: (e as Error).stack });
      status = err.status >= 400 ? err.status : 500;
      payload = { error: { code: err.code, message: err.message, details: err.details ?? null } };
    }
    // Nobody is left to answer (the client hung up, or a timeout closed the connection).
    if (res.destroyed || req.socket.destroyed) return;
    if (payload instanceof JsonLinesStream) {
      this.stream(res, payload);
      return;
    }
    if (payload instanceof TextReply) {
      res.writeHead(status, { 'content-type': payload.contentType, 'cache-control': 'no-store' });
      res.end(payload.text);
      return;
    }
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(payload));
  }

  private stream(res: ServerResponse, s: JsonLinesStream): void {
    res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
    // Headers out at once: the client knows the request was accepted before the first entry.
    res.flushHeaders();
    let stop: (() => void) | null = null;
    const end = (): void => {
      stop?.();
      stop = null;
    };
    res.on('close', end);
    stop = s.start((value) => {
      if (res.destroyed) return;
      if (res.writableLength > MAX_STREAM_BACKLOG_BYTES) {
        this.log.warn('control API follower fell too far behind; disconnected', { backlog_bytes: res.writableLength });
        end();
        res.destroy();
        return;
      }
      res.write(JSON.stringify(value) + '\n');
    });
    if (res.destroyed) end();
  }

  /**
   * Listens on `path`. A socket file left by a crashed run is replaced, but a live one
   * (another agent answering) is not: two agents must not share a host.
   */
  async listen(path: string, group: string, adminGroup = ''): Promise<void> {
    this.access.configure({ admin_group: adminGroup });
    mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
    if (existsSync(path)) {
      if (!lstatSync(path).isSocket()) throw new AgentError('BAD_REQUEST', `${path} exists and is not a socket`);
      const alive = await new Promise<boolean>((resolve) => {
        const s = connect(path);
        s.once('connect', () => {
          s.destroy();
          resolve(true);
        });
        s.once('error', () => resolve(false));
      });
      if (alive) throw new AgentError('BAD_REQUEST', `another aegis-agent is listening on ${path}`);
      unlinkSync(path);
    }
    const server = createServer(
      {
        headersTimeout: this.limits.headersTimeoutMs,
        requestTimeout: this.limits.requestTimeoutMs,
        keepAliveTimeout: Math.min(5_000, this.limits.headersTimeoutMs),
        connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(this.limits.headersTimeoutMs / 4))),
      },
      (req, res) => void this.handle(req, res),
    );
    server.maxConnections = this.limits.maxConnections;
    server.maxHeadersCount = 100;
    // The socket is created with the process umask; narrow it before it can be reached.
    const oldMask = process.umask(0o117);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(path, () => resolve());
      });
    } finally {
      process.umask(oldMask);
    }
    chmodSync(path, 0o660);
    this.access.socketOwnedBy('', lstatSync(path).gid);
    if (group) {
      const gid = resolveGroup(group);
      if (gid !== null) {
        chownSync(path, process.getuid?.() ?? 0, gid);
        this.access.socketOwnedBy(group, gid);
      } else {
        this.log.warn('socket_group not found; socket stays root-only', { group });
      }
    }
    this.server = server;
  }

  async close(): Promise<void> {
    const s = this.server;
    this.server = null;
    if (!s) return;
    await new Promise<void>((resolve) => {
      s.close(() => resolve());
      s.closeAllConnections();
    });
  }
}
