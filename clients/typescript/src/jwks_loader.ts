/**
 * The server's public keys for offline verification: fetched from
 * `<server>/.well-known/jwks.json`, kept in a cache file (replaced atomically), and read
 * from that file when the server cannot be reached. A key set without an Ed25519 public
 * key is refused and never cached, so a bad answer cannot replace good keys.
 */
import { readFile } from 'node:fs/promises';
import { writeFileAtomicAsync } from './atomic_file.js';
import { LicenseClientError } from './errors.js';
import { isEd25519Jwk, type JwksDocument } from './jws.js';

export const JWKS_PATH = '/.well-known/jwks.json';
const DEFAULT_TIMEOUT_MS = 5000;

export interface LoadJwksOptions {
  /** File the key set is cached in; without one nothing is cached. */
  cachePath?: string;
  fetch?: typeof globalThis.fetch;
  timeoutMs?: number;
  /** Read the cache only; no network. */
  offline?: boolean;
}

export interface LoadedJwks {
  jwks: JwksDocument;
  source: 'network' | 'cache';
}

/** Only the Ed25519 public keys of `doc`; throws JWKS_NO_ED25519_KEYS when there are none. */
export function ed25519KeysOnly(doc: unknown, where: string): JwksDocument {
  const keys = doc !== null && typeof doc === 'object' && Array.isArray((doc as JwksDocument).keys) ? (doc as JwksDocument).keys : null;
  const usable = (keys ?? []).filter(isEd25519Jwk).map((k) => ({ kty: 'OKP', crv: 'Ed25519', x: k.x, kid: k.kid, alg: 'EdDSA', use: 'sig' }));
  if (usable.length === 0) throw new LicenseClientError('JWKS_NO_ED25519_KEYS', `${where} holds no Ed25519 public key`);
  return { keys: usable };
}

async function readCache(path: string): Promise<JwksDocument> {
  return ed25519KeysOnly(JSON.parse(await readFile(path, 'utf8')), `JWKS cache ${path}`);
}

/** The server's key set: from the network (then cached), else from the cache. */
export async function loadJwks(serverUrl: string, options: LoadJwksOptions = {}): Promise<LoadedJwks> {
  const { cachePath } = options;
  if (!options.offline) {
    let body: unknown;
    let networkError: Error | null = null;
    try {
      const res = await (options.fetch ?? globalThis.fetch)(new URL(JWKS_PATH, serverUrl), { signal: AbortSignal.timeout(options.timeoutMs ?? DEFAULT_TIMEOUT_MS) });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      body = await res.json();
    } catch (e) {
      networkError = e as Error;
    }
    if (networkError === null) {
      // A reachable server answering an unusable key set is refused, not papered over by the cache.
      const jwks = ed25519KeysOnly(body, `the JWKS of ${serverUrl}`);
      if (cachePath) await writeFileAtomicAsync(cachePath, `${JSON.stringify(jwks)}\n`, 0o644);
      return { jwks, source: 'network' };
    }
    if (!cachePath) throw new LicenseClientError('JWKS_UNAVAILABLE', `cannot fetch ${JWKS_PATH} from ${serverUrl} (${networkError.message}) and no cache is configured`);
    try {
      return { jwks: await readCache(cachePath), source: 'cache' };
    } catch (e) {
      throw new LicenseClientError('JWKS_UNAVAILABLE', `cannot fetch ${JWKS_PATH} from ${serverUrl} (${networkError.message}) nor read the cache (${(e as Error).message})`);
    }
  }
  if (!cachePath) throw new LicenseClientError('BAD_OPTION', 'offline loadJwks needs cachePath');
  try {
    return { jwks: await readCache(cachePath), source: 'cache' };
  } catch (e) {
    if (e instanceof LicenseClientError) throw e;
    throw new LicenseClientError('JWKS_UNAVAILABLE', `cannot read the JWKS cache ${cachePath}: ${(e as Error).message}`);
  }
}
