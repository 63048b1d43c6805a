/**
 * Operator console sessions: what a browser holds instead of the admin API key it signed
 * in with. The cookie carries an opaque 256-bit random id; the server keeps only its
 * SHA-256, with the API key's id, a CSRF token and the expiry. Every request re-reads the
 * key, so a session is exactly as strong as its key: same scopes, same customer limit,
 * and it ends when the key is revoked. Sessions live in the database (console_sessions),
 * so a session opened on one replica works on every other and survives a restart, and a
 * sign-out on one ends it on all. The cookie itself is never stored: a copy of the
 * database signs nobody in (the CSRF token alone is useless without the cookie).
 *
 * A write through a session (any method but GET/HEAD) must carry the session's CSRF token
 * in X-CSRF-Token (the double submit: the page read it from the sign-in answer, a page of
 * another origin cannot) and an Origin of this console (browsers always send one on a
 * cross-origin or non-GET fetch); the cookie is SameSite=Strict besides.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { AegisError } from '../../../protocol/src/index.js';
import type { ApiKeys, ApiPrincipal } from '../api_keys.js';
import type { Kysely } from 'kysely';
import { iso, type Clock } from '../clock.js';
import type { Database } from '../db/schema.js';
import type { ConsoleSettings } from '../config.js';
import type { Request } from '../http/router.js';

export const SESSION_COOKIE = 'aegis_console';
/** The header a console write carries its CSRF token in. */
export const CSRF_HEADER = 'x-csrf-token';
/** Sessions held at once; past this the oldest are dropped (a flood of sign-ins cannot grow the table). */
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
  /**
   * Told of every session this replica ends (sign-out, a revoked key): its live streams
   * close at once. A session ended on another replica is seen by stillValid at the
   * stream's next heartbeat.
   */
  onEnd: ((sessionKey: string) => void) | null = null;

  constructor(
    private readonly apiKeys: ApiKeys,
    private readonly clock: Clock,
    readonly settings: ConsoleSettings,
    private readonly db: Kysely<Database>,
  ) {}

  /** Opens a session for a principal that just proved its key. */
  async open(p: ApiPrincipal): Promise<OpenedSession> {
    await this.sweep();
    const id = randomBytes(32).toString('base64url');
    const csrf = randomBytes(32).toString('base64url');
    const now = this.clock.now().getTime();
    const expiresAt = now + this.settings.sessionSeconds * 1000;
    await this.db.insertInto('console_sessions').values({ id_hash: digest(id), api_key_id: p.id, csrf, expires_ms: expiresAt, created_ms: now }).execute();
    return { id, csrf_token: csrf, expires_at: iso(new Date(expiresAt)) };
  }

  /** Ends the request's session on every replica; whether there was one. */
  async close(req: Request): Promise<boolean> {
    const id = cookieOf(req, SESSION_COOKIE);
    if (id === null || id.length > 100) return false;
    const key = digest(id);
    const r = await this.db.deleteFrom('console_sessions').where('id_hash', '=', key).executeTakeFirst();
    this.onEnd?.(key);
    return Number(r.numDeletedRows) > 0;
  }

  /** Whether the session `sessionKey` (as authenticate answers it) is open, unexpired, and its key not revoked: a live stream's recheck. */
  async stillValid(sessionKey: string): Promise<boolean> {
    const row = await this.db.selectFrom('console_sessions').select(['api_key_id', 'expires_ms']).where('id_hash', '=', sessionKey).executeTakeFirst();
    if (!row) return false;
    if (Number(row.expires_ms) <= this.clock.now().getTime()) {
      await this.end(sessionKey);
      return false;
    }
    return (await this.apiKeys.principalById(row.api_key_id)) !== null;
  }

  /** Whether the request carries a session cookie at all (it may be stale). */
  presented(req: Request): boolean {
    return cookieOf(req, SESSION_COOKIE) !== null;
  }

  /** The live session of the request's cookie, or null (none, unknown, expired). */
  private async live(req: Request): Promise<Session | null> {
    const id = cookieOf(req, SESSION_COOKIE);
    if (id === null || id.length > 100) return null;
    const row = await this.db.selectFrom('console_sessions').select(['api_key_id', 'csrf', 'expires_ms']).where('id_hash', '=', digest(id)).executeTakeFirst();
    if (!row) return null;
    const s = { apiKeyId: row.api_key_id, csrf: row.csrf, expiresAt: Number(row.expires_ms) };
    if (s.expiresAt <= this.clock.now().getTime()) {
      await this.end(digest(id));
      return null;
    }
    return s;
  }

  /**
   * Deletes a session seen expired, so it stays ended whatever a clock does later (a
   * replica whose clock is behind must not revive it), and closes its streams here.
   */
  private async end(key: string): Promise<void> {
    await this.db.deleteFrom('console_sessions').where('id_hash', '=', key).execute();
    this.onEnd?.(key);
  }

  /**
   * The principal of the request's session: UNAUTHORIZED without a live one (or when its
   * key was revoked), FORBIDDEN for a write without the CSRF token or from another origin.
   */
  async authenticate(req: Request): Promise<{ principal: ApiPrincipal; csrf_token: string; expires_at: string; session_key: string }> {
    const s = await this.live(req);
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
      await this.close(req);
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

  /** Forgets expired sessions, and the oldest beyond MAX_SESSIONS. */
  async sweep(): Promise<void> {
    await this.db.deleteFrom('console_sessions').where('expires_ms', '<=', this.clock.now().getTime()).execute();
    const n = Number((await this.db.selectFrom('console_sessions').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow()).n);
    if (n < MAX_SESSIONS) return;
    const cut = await this.db.selectFrom('console_sessions').select('created_ms').orderBy('created_ms', 'desc').offset(MAX_SESSIONS - 1).limit(1).executeTakeFirst();
    if (cut) await this.db.deleteFrom('console_sessions').where('created_ms', '<=', Number(cut.created_ms)).execute();
  }

  /** Sessions held now (expired ones included until the next sweep). */
  async size(): Promise<number> {
    return Number((await this.db.selectFrom('console_sessions').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow()).n);
  }
}
