/**
 * Online validation: POST <server>/api/v1/licenses/validate, the authoritative answer
 * (it alone knows a revocation). The last answer per (server, token, module, version) is
 * cached for `cacheTtlMs`. When the server cannot be reached (network error, timeout, a
 * 5xx or 429), the caller gets:
 *  - the last REVOKED answer, whatever its age: a license the server revoked stays revoked;
 *  - else, with `offline` keys, the offline verdict (verifyLicenseToken) now, not a stale
 *    VALID: it re-checks signature, expiry, module and version at the current time;
 *  - else UNKNOWN_KEY (nothing to verify with), ok false.
 * `source` says which it is. A 4xx other than 429 is the caller's mistake: SERVER_ERROR.
 */
import { LicenseClientError } from './errors.js';
import { RESULT_CODES, type ResultCode } from './result_codes.js';
import { verifyLicenseToken, type ModuleLicenseClaims, type VerifyOptions } from './verify_license.js';

export const VALIDATE_PATH = '/api/v1/licenses/validate';

export interface OnlineRequest {
  token: string;
  moduleName?: string;
  /** The host product's version; sent as odoo_version. */
  version?: string;
}

export interface OnlineOptions {
  /** How long an answer is reused without asking again (default 5 minutes). */
  cacheTtlMs?: number;
  fetch?: typeof globalThis.fetch;
  timeoutMs?: number;
  /** Keys (and options) for the offline verdict when the server is unreachable. */
  offline?: Omit<VerifyOptions, 'moduleName' | 'version'>;
  /** Answer cache to use (default: one per process). */
  cache?: OnlineCache;
  now?: () => number;
}

export interface OnlineResult {
  ok: boolean;
  code: ResultCode;
  message: string;
  claims?: ModuleLicenseClaims;
  /** With VALID_IN_GRACE: when the grace ends (ISO 8601). */
  grace_ends_at?: string;
  /** online: the server answered now; cache: a cached server answer; offline: verified here. */
  source: 'online' | 'cache' | 'offline';
}

interface CachedAnswer {
  at: number;
  result: Omit<OnlineResult, 'source'>;
}

/** Cached server answers. */
export class OnlineCache {
  private readonly answers = new Map<string, CachedAnswer>();
  get(key: string): CachedAnswer | undefined {
    return this.answers.get(key);
  }
  set(key: string, answer: CachedAnswer): void {
    this.answers.set(key, answer);
  }
  clear(): void {
    this.answers.clear();
  }
}

const defaultCache = new OnlineCache();
export const DEFAULT_ONLINE_CACHE_TTL_MS = 5 * 60_000;
const isCode = (c: unknown): c is ResultCode => typeof c === 'string' && (RESULT_CODES as readonly string[]).includes(c);

class Unreachable extends Error {}

/** Validates online, with the cache and the offline fallback described above. */
export async function validateOnline(serverUrl: string, request: OnlineRequest, options: OnlineOptions = {}): Promise<OnlineResult> {
  const cache = options.cache ?? defaultCache;
  const now = options.now ?? Date.now;
  const key = JSON.stringify([serverUrl, request.token, request.moduleName ?? null, request.version ?? null]);
  const cached = cache.get(key);
  if (cached && now() - cached.at < (options.cacheTtlMs ?? DEFAULT_ONLINE_CACHE_TTL_MS)) return { ...cached.result, source: 'cache' };
  try {
    const result = await ask(serverUrl, request, options);
    cache.set(key, { at: now(), result });
    return { ...result, source: 'online' };
  } catch (e) {
    if (!(e instanceof Unreachable)) throw e;
    if (cached?.result.code === 'REVOKED') return { ...cached.result, source: 'cache' };
    if (options.offline) {
      const v = verifyLicenseToken(request.token, { ...options.offline, moduleName: request.moduleName, version: request.version, now: now() });
      return { ...v, message: `${v.message} (verified offline: ${e.message})`, source: 'offline' };
    }
    return { ok: false, code: 'UNKNOWN_KEY', message: `server unreachable (${e.message}) and no keys to verify offline`, source: 'offline' };
  }
}

async function ask(serverUrl: string, request: OnlineRequest, options: OnlineOptions): Promise<Omit<OnlineResult, 'source'>> {
  const body = {
    token: request.token,
    ...(request.moduleName === undefined ? {} : { module_name: request.moduleName }),
    ...(request.version === undefined ? {} : { odoo_version: request.version }),
  };
  let res: Response;
  try {
    res = await (options.fetch ?? globalThis.fetch)(new URL(VALIDATE_PATH, serverUrl), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(options.timeoutMs ?? 5000),
    });
  } catch (e) {
    throw new Unreachable((e as Error).message);
  }
  if (res.status >= 500 || res.status === 429) throw new Unreachable(`HTTP ${res.status}`);
  const answer = (await res.json().catch(() => null)) as { valid?: unknown; code?: unknown; message?: unknown; claims?: unknown; grace_ends_at?: unknown; error?: { code?: unknown; message?: unknown } } | null;
  if (res.status !== 200 || answer === null || !isCode(answer.code) || typeof answer.valid !== 'boolean') {
    const why = answer?.error ? `${String(answer.error.code)}: ${String(answer.error.message)}` : `HTTP ${res.status}`;
    throw new LicenseClientError('SERVER_ERROR', `the server refused the validation request (${why})`);
  }
  return {
    // VALID_IN_GRACE is valid too, until grace_ends_at.
    ok: answer.valid && (answer.code === 'VALID' || answer.code === 'VALID_IN_GRACE'),
    ...(typeof answer.grace_ends_at === 'string' ? { grace_ends_at: answer.grace_ends_at } : {}),
    code: answer.code,
    message: typeof answer.message === 'string' ? answer.message : answer.code,
    ...(answer.claims && typeof answer.claims === 'object' ? { claims: answer.claims as ModuleLicenseClaims } : {}),
  };
}
