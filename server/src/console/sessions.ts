/**
 * Operator console sessions: what a browser holds instead of the admin API key it signed
 * in with. The cookie carries an opaque 256-bit random id; the server keeps only its
 * SHA-256, with the API key's id, a CSRF token and the expiry. Every request re-reads the
 * key, so a session is exactly as strong as its key: same scopes, same customer limit,
 * and it ends when the key is revoked. Sessions live in this process's memory: a restart
 * signs every browser out (nothing to leak from the database, nothing to replicate).
 *
 * A write through a session (any method but GET/HEAD) must carry the session's CSRF token
 * in X-CSRF-Token (the double submit: the page read it from the sign-in answer, a page of
 * another origin cannot) and an Origin of this console (browsers always send one on a
 * cross-origin or non-GET fetch); the cookie is SameSite=Strict besides.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { AegisError } from '../../../protocol/src/index.js';
import type { ApiKeys, ApiPrincipal } from '../api_keys.js';
import { iso, type Clock } from '../clock.js';
import type { ConsoleSettings } from '../config.js';
import type { Request } from '../http/router.js';

export const SESSION_COOKIE = 'aegis_console';
/** The header a console write carries its CSRF token in. */
export const CSRF_HEADER = 'x-csrf-token';
/** Sessions held at once; past this the oldest is dropped (a flood of sign-ins cannot grow memory). */
export const MAX_SESSIONS = 10_000;

interface Session {
  apiKeyId: string;
  csrf: string;
  expiresAt: number;
}

export interface OpenedSession {
  /** The cookie value: only ever in the Set-Cookie header. */
  id: string;
  csrf_token: string;
  expires_at: string;
}

const digest = (id: string): string => createHash('sha256').update(id).digest('base64url');

function sameText(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** The value of cookie `name` in a Cookie header, or null. */
export function cookieOf(req: Request, name: string): string | null {
  const header = req.headers.cookie;
  const text = Array.isArray(header) ? header.join('; ') : header;
  if (typeof text !== 'string') return null;
  for (const part of text.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    if (part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return null;
}

const single = (v: string | string[] | undefined): string | undefined => (Array.isArray(v) ? v[0] : v);

export class ConsoleSessions {
  private readonly sessions = new Map<string, Session>();
  /** Told of every session that ends (sign-out, expiry, eviction, revoked key): its live streams close. */
  onEnd: ((sessionKey: string) => void) | null = null;

  private drop(key: string): void {
    if (this.sessions.delete(key)) this.onEnd?.(key);
  }

  constructor(
    private readonly apiKeys: ApiKeys,
    private readonly clock: Clock,
    readonly settings: ConsoleSettings,
  ) {}

  /** Opens a session for a principal that just proved its key. */
  open(p: ApiPrincipal): OpenedSession {
    this.sweep();
    while (this.sessions.size >= MAX_SESSIONS) this.drop(this.sessions.keys().next().value!);
    const id = randomBytes(32).toString('base64url');
    const csrf = randomBytes(32).toString('base64url');
    const expiresAt = this.clock.now().getTime() + this.settings.sessionSeconds * 1000;
    this.sessions.set(digest(id), { apiKeyId: p.id, csrf, expiresAt });
    return { id, csrf_token: csrf, expires_at: iso(new Date(expiresAt)) };
  }

  /** Ends the request's session; whether there was one. */
  close(req: Request): boolean {
    const id = cookieOf(req, SESSION_COOKIE);
    if (id === null || !this.sessions.has(digest(id))) return false;
    this.drop(digest(id));
    return true;
  }

  /** Whether the session `sessionKey` (as authenticate answers it) is still open and unexpired. */
  isLive(sessionKey: string): boolean {
    const s = this.sessions.get(sessionKey);
    if (!s) return false;
    if (s.expiresAt <= this.clock.now().getTime()) {
      this.drop(sessionKey);
      return false;
    }
    return true;
  }

  /** Whether the session is open, unexpired, and its key not revoked (a live stream's recheck). */
  async stillValid(sessionKey: string): Promise<boolean> {
    const s = this.sessions.get(sessionKey);
    if (!s || !this.isLive(sessionKey)) return false;
    if (await this.apiKeys.principalById(s.apiKeyId)) return true;
    this.drop(sessionKey);
    return false;
  }

  /** Whether the request carries a session cookie at all (it may be stale). */
  presented(req: Request): boolean {
    return cookieOf(req, SESSION_COOKIE) !== null;
  }

  /** The live session of the request's cookie, or null (none, unknown, expired). */
  private live(req: Request): Session | null {
    const id = cookieOf(req, SESSION_COOKIE);
    if (id === null || id.length > 100) return null;
    const key = digest(id);
    const s = this.sessions.get(key);
    if (!s) return null;
    if (s.expiresAt <= this.clock.now().getTime()) {
      this.drop(key);
      return null;
    }
    return s;
  }

  /**
   * The principal of the request's session: UNAUTHORIZED without a live one (or when its
   * key was revoked), FORBIDDEN for a write without the CSRF token or from another origin.
   */
  async authenticate(req: Request): Promise<{ principal: ApiPrincipal; csrf_token: string; expires_at: string; session_key: string }> {
    const s = this.live(req);
    if (!s) throw new AegisError('UNAUTHORIZED', 'no console session, or it expired: sign in again');
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      this.assertOrigin(req);
      const token = single(req.headers[CSRF_HEADER]);
      if (typeof token !== 'string' || !sameText(token, s.csrf)) {
        throw new AegisError('FORBIDDEN', `a console write must carry the session's CSRF token in ${CSRF_HEADER}`, { details: { reason: 'csrf_token' } });
      }
    }
    const principal = await this.apiKeys.principalById(s.apiKeyId);
    if (!principal) {
      this.close(req);
      throw new AegisError('UNAUTHORIZED', 'the API key of this console session was revoked');
    }
    return { principal, csrf_token: s.csrf, expires_at: iso(new Date(s.expiresAt)), session_key: digest(cookieOf(req, SESSION_COOKIE)!) };
  }

  /**
   * A write must come from the console's own origin: the configured ones, else the
   * request's own Host over the scheme it arrived by. A missing Origin is refused too (a
   * browser sends one with every non-GET fetch), and so is Sec-Fetch-Site other than same-origin.
   */
  assertOrigin(req: Request): void {
    const origin = single(req.headers.origin);
    const site = single(req.headers['sec-fetch-site']);
    const refuse = (why: string): never => {
      throw new AegisError('FORBIDDEN', `console writes must come from the console's own origin (${why})`, { details: { reason: 'origin' } });
    };
    if (site !== undefined && site !== 'same-origin') refuse(`Sec-Fetch-Site: ${site}`);
    if (typeof origin !== 'string' || origin === 'null') refuse('no Origin');
    const allowed = this.settings.origins.length > 0 ? this.settings.origins : this.ownOrigin(req);
    if (!allowed.includes(origin!)) refuse(`Origin ${origin}`);
  }

  private ownOrigin(req: Request): string[] {
    const host = single(req.headers.host);
    if (typeof host !== 'string' || host === '') return [];
    return [`${req.secure ? 'https' : 'http'}://${host}`];
  }

  /** The Set-Cookie value that hands `id` to the browser (or clears it with null). */
  cookie(req: Request, id: string | null): string {
    const secure = req.secure || this.settings.secureCookie ? '; Secure' : '';
    const life = id === null ? 'Max-Age=0' : `Max-Age=${this.settings.sessionSeconds}`;
    return `${SESSION_COOKIE}=${id ?? ''}; Path=/; HttpOnly; SameSite=Strict; ${life}${secure}`;
  }

  /** Forgets expired sessions. */
  sweep(): void {
    const now = this.clock.now().getTime();
    for (const [k, s] of this.sessions) if (s.expiresAt <= now) this.drop(k);
  }

  get size(): number {
    return this.sessions.size;
  }
}
