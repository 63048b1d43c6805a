/**
 * The one node:http adapter of aegisctl: a JSON request to aegis-server (TCP or TLS) or to
 * aegis-agent (HTTP over a Unix socket). Connection failures become UnreachableError here,
 * with the errno name kept, so no caller ever sees a raw socket error.
 */
import { request as httpRequest, type IncomingHttpHeaders, type RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { UnreachableError } from './errors.js';

/** Where a request goes: a base URL (server) or a Unix socket path (agent). */
export type Target = { kind: 'url'; url: URL } | { kind: 'socket'; socketPath: string };

export interface HttpRequest {
  method: string;
  /** Path plus query string, e.g. `/api/v1/customers?limit=5`. */
  path: string;
  headers?: Record<string, string>;
  /** Serialized as JSON when present. */
  body?: unknown;
  timeoutMs: number;
}

export interface HttpResponse {
  status: number;
  headers: IncomingHttpHeaders;
  text: string;
}

/** Larger answers than this are not an Aegis API; stop reading instead of filling memory. */
const MAX_RESPONSE_BYTES = 32 * 1024 * 1024;

/** A failed connection, before any response: errno name and the underlying error. */
export interface ConnectFailure {
  errno: string;
  cause: unknown;
}

/** Turns a ConnectFailure into the error the user sees; supplied by each client. */
export type FailureMapper = (f: ConnectFailure) => UnreachableError;

export function sendRequest(target: Target, req: HttpRequest, onFailure: FailureMapper): Promise<HttpResponse> {
  return exchange(target, req, onFailure, null);
}

/**
 * A request whose 2xx answer is newline-delimited JSON that may never end (a follow
 * stream): each complete line goes to `onLine` as it arrives, and the timeout stops counting
 * once the answer has begun. Resolves when the peer ends the stream; an error answer (not
 * 2xx) is read whole and returned like sendRequest's, for readJson to turn into an ApiError.
 */
export function streamLines(target: Target, req: HttpRequest, onFailure: FailureMapper, onLine: (line: string) => void): Promise<HttpResponse> {
  return exchange(target, req, onFailure, onLine);
}

/** Longest line of a stream: past it the stream is not an Aegis API. */
const MAX_LINE_BYTES = 1024 * 1024;

function exchange(target: Target, req: HttpRequest, onFailure: FailureMapper, onLine: ((line: string) => void) | null): Promise<HttpResponse> {
  const payload = req.body === undefined ? undefined : JSON.stringify(req.body);
  const headers: Record<string, string> = { accept: 'application/json', ...(req.headers ?? {}) };
  if (payload !== undefined) {
    headers['content-type'] = 'application/json';
    headers['content-length'] = String(Buffer.byteLength(payload));
  }
  // agent: false — one connection per request, closed afterwards, so nothing pooled keeps
  // the process alive once the command is done.
  const options: RequestOptions = { method: req.method, headers, agent: false };
  let send = httpRequest;
  if (target.kind === 'socket') {
    options.socketPath = target.socketPath;
    options.path = req.path;
    options.host = 'localhost';
  } else {
    const base = target.url;
    const prefix = base.pathname.replace(/\/+$/, '');
    options.protocol = base.protocol;
    options.hostname = base.hostname.replace(/^\[|\]$/g, '');
    options.port = base.port || (base.protocol === 'https:' ? 443 : 80);
    options.path = prefix + req.path;
    if (base.protocol === 'https:') send = httpsRequest;
  }

  return new Promise<HttpResponse>((resolve, reject) => {
    let settled = false;
    const fail = (errno: string, cause: unknown) => {
      if (settled) return;
      settled = true;
      reject(onFailure({ errno, cause }));
    };
    const r = send(options, (res) => {
      const status = res.statusCode ?? 0;
      if (onLine && status >= 200 && status < 300) {
        r.setTimeout(0);
        let pending = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          pending += c;
          let nl: number;
          while ((nl = pending.indexOf('\n')) >= 0) {
            const line = pending.slice(0, nl);
            pending = pending.slice(nl + 1);
            if (line.trim()) onLine(line);
          }
          if (pending.length > MAX_LINE_BYTES) res.destroy(new Error(`a line longer than ${MAX_LINE_BYTES} bytes`));
        });
        res.on('end', () => {
          if (settled) return;
          settled = true;
          resolve({ status, headers: res.headers, text: '' });
        });
        res.on('error', (e: NodeJS.ErrnoException) => fail(e.code ?? 'ERESPONSE', e));
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_RESPONSE_BYTES) {
          res.destroy(new Error(`response larger than ${MAX_RESPONSE_BYTES} bytes`));
          return;
        }
        chunks.push(c);
      });
      res.on('end', () => {
        if (settled) return;
        settled = true;
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') });
      });
      res.on('error', (e: NodeJS.ErrnoException) => fail(e.code ?? 'ERESPONSE', e));
    });
    r.setTimeout(req.timeoutMs, () => {
      const e = new Error(`no answer within ${req.timeoutMs / 1000}s`);
      fail('ETIMEDOUT', e);
      r.destroy(e);
    });
    r.on('error', (e: NodeJS.ErrnoException) => fail(e.code ?? 'ECONNECT', e));
    if (payload !== undefined) r.write(payload);
    r.end();
  });
}

/** A short human phrase for a connection errno. */
export function describeErrno(errno: string, timeoutMs: number): string {
  switch (errno) {
    case 'ENOENT':
      return 'no such socket';
    case 'ECONNREFUSED':
      return 'connection refused';
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    case 'ETIMEDOUT':
      return `no answer within ${Math.round(timeoutMs / 100) / 10}s`;
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return 'host name not found';
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return 'host unreachable';
    case 'ECONNRESET':
    case 'EPIPE':
      return 'connection closed unexpectedly';
    case 'ENOTSOCK':
      return 'not a socket';
    default:
      return errno;
  }
}
