/**
 * A small method+path router: patterns like `/api/v1/customers/:id`. Handlers receive a
 * parsed request and return a Reply; they never touch node:http objects. Parameters are
 * percent-decoded and checked (no control characters, valid UTF-8, bounded length) before
 * any handler sees them; `match` throws ValidationError naming a bad one.
 */
import { pathParam } from './request_text.js';
import type { RouteDoc } from './route_doc.js';
/** The client certificate a TLS connection verified against the client CA (mTLS listener only). */
export interface PeerCertificate {
  /** Serial number, upper-case hex, as TLS reports it. */
  serial: string;
  /** RFC 8705 x5t#S256: base64url SHA-256 of the DER certificate. */
  thumbprint: string;
  /** URI subject alternative names (the SPIFFE id). */
  uris: string[];
}

export interface Request {
  method: string;
  path: string;
  params: Record<string, string>;
  query: URLSearchParams;
  headers: Record<string, string | string[] | undefined>;
  clientIp: string;
  /** Parsed JSON body (null when the request had none). */
  body: unknown;
  /** Set on the mTLS listener: the verified client certificate of the connection. */
  peer?: PeerCertificate;
  /** The request arrived over TLS (the console's cookie is then Secure). */
  secure?: boolean;
}

export interface Reply {
  status: number;
  body: unknown;
  headers?: Record<string, string>;
  /**
   * Sent as is instead of the JSON of `body`: static documentation assets, text formats such
   * as the Prometheus exposition; `headers` name its content type.
   */
  raw?: Buffer | string;
  /**
   * A long-lived answer (server-sent events): the headers are sent, then `stream` gets a
   * sink to write to until it ends the answer or the client goes (onClose).
   */
  stream?: (sink: StreamSink) => void;
}

/** Where a streaming answer writes: text chunks, an end, and news of the client leaving. */
export interface StreamSink {
  write(text: string): void;
  end(): void;
  onClose(fn: () => void): void;
}

export type Handler = (req: Request) => Promise<Reply>;

interface Route {
  method: string;
  /** The pattern as registered (`/api/v1/customers/:id`): what metrics label a request with. */
  pattern: string;
  segments: string[];
  handler: Handler;
  /** Whether the route takes a JSON body (POST/PATCH/DELETE with a body). */
  takesBody: boolean;
  /** Body limit in bytes when the route needs more than the server default. */
  maxBody?: number;
  doc?: RouteDoc;
}

/** A registered route as the API document lists it. */
export interface RegisteredRoute {
  method: string;
  /** As registered: `/api/v1/customers/:id`. */
  pattern: string;
  takesBody: boolean;
  doc?: RouteDoc;
}

export interface Match {
  handler: Handler;
  /** The matched route's pattern, never the raw path (bounded label values). */
  pattern: string;
  params: Record<string, string>;
  takesBody: boolean;
  maxBody?: number;
}

/**
 * Routes are matched in registration order (the first that fits wins). Two indexes keep
 * that order without scanning every route: a map from "METHOD /static/path" to the route
 * a parameterless path resolves to (only when no earlier pattern route of that method
 * also fits it), and the routes by segment count for everything else.
 */
export class Router {
  private readonly routes: Route[] = [];
  private readonly statics = new Map<string, Route>();
  private readonly bySegments = new Map<number, Route[]>();

  /** Registers a route; `doc` is what the OpenAPI document says of it (see route_doc.ts). */
  add(method: string, pattern: string, handler: Handler, opts: { body?: boolean; maxBody?: number; doc?: RouteDoc } = {}): this {
    const takesBody = opts.body ?? (method === 'POST' || method === 'PATCH' || method === 'PUT');
    const route: Route = { method, pattern, segments: pattern.split('/').filter(Boolean), handler, takesBody, maxBody: opts.maxBody, doc: opts.doc };
    const path = '/' + route.segments.join('/');
    const key = `${method} ${path}`;
    if (!route.segments.some((seg) => seg.startsWith(':')) && !this.statics.has(key)) {
      // An earlier pattern route that fits this path keeps it (first registered wins).
      const shadowed = (this.bySegments.get(route.segments.length) ?? []).some((r) => r.method === method && fits(r.segments, route.segments));
      if (!shadowed) this.statics.set(key, route);
    }
    this.routes.push(route);
    const same = this.bySegments.get(route.segments.length) ?? [];
    same.push(route);
    this.bySegments.set(route.segments.length, same);
    return this;
  }

  /** Every route, in registration order, with its documentation. */
  registered(): RegisteredRoute[] {
    return this.routes.map((r) => ({ method: r.method, pattern: r.pattern, takesBody: r.takesBody, ...(r.doc ? { doc: r.doc } : {}) }));
  }

  /** The route for method+path; `allowed` lists methods that match the path otherwise (for 405). */
  match(method: string, path: string): { match: Match | null; allowed: string[] } {
    const parts = path.split('/').filter(Boolean);
    const hit = this.statics.get(`${method} /${parts.join('/')}`);
    if (hit) return { match: { handler: hit.handler, pattern: hit.pattern, params: {}, takesBody: hit.takesBody, maxBody: hit.maxBody }, allowed: [] };
    const allowed: string[] = [];
    for (const r of this.bySegments.get(parts.length) ?? []) {
      const raw: Record<string, string> = {};
      let ok = true;
      for (let i = 0; i < parts.length; i++) {
        const seg = r.segments[i]!;
        if (seg.startsWith(':')) {
          raw[seg.slice(1)] = parts[i]!;
        } else if (seg !== parts[i]) {
          ok = false;
          break;
        }
      }
      if (!ok) continue;
      if (r.method === method) {
        // Decoded and checked once here, for every route: a bad parameter is 400 naming it.
        const params: Record<string, string> = {};
        for (const [name, text] of Object.entries(raw)) params[name] = pathParam(name, text);
        return { match: { handler: r.handler, pattern: r.pattern, params, takesBody: r.takesBody, maxBody: r.maxBody }, allowed };
      }
      allowed.push(r.method);
    }
    return { match: null, allowed };
  }
}

/** Whether a route's segments fit a path's (a `:param` fits any one segment). */
function fits(segments: string[], parts: string[]): boolean {
  return segments.length === parts.length && segments.every((seg, i) => seg.startsWith(':') || seg === parts[i]);
}
