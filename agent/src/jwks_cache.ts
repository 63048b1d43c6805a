/**
 * The server's public keys as this host knows them (<state>/jwks.json): written on every
 * activation and refresh, and fetched from the server's /.well-known/jwks.json when a
 * message names a kid we do not have (key rotation) or nothing is cached yet (a
 * community host). Signed messages are verified against this set only.
 */
import { compactVerify, createLocalJWKSet, decodeProtectedHeader, type JSONWebKeySet } from 'jose';
import { TOKEN_ALG } from '../../protocol/src/index.js';
import type { Logger } from './logger.js';
import type { ServerLink } from './server_link.js';
import type { StateStore } from './state_store.js';

export const JWKS_FILE = 'jwks.json';
const REFETCH_MIN_INTERVAL_MS = 30_000;

const checkJwks = (v: unknown) =>
  v !== null && typeof v === 'object' && Array.isArray((v as { keys?: unknown }).keys) && (v as { keys: unknown[] }).keys.length > 0 ? null : 'not a JWKS';

/** The server's keys: cached in the state dir, re-fetched (rate-limited) for an unknown kid. */
export class JwksCache {
  private lastFetch = 0;

  constructor(
    private readonly store: StateStore,
    private readonly link: ServerLink,
    private readonly log: Logger,
  ) {}

  current(): JSONWebKeySet | null {
    return this.store.read<JSONWebKeySet>(JWKS_FILE, checkJwks);
  }

  private async fetch(): Promise<JSONWebKeySet | null> {
    if (Date.now() - this.lastFetch < REFETCH_MIN_INTERVAL_MS) return null;
    this.lastFetch = Date.now();
    try {
      const body: JSONWebKeySet = await this.link.jwks();
      await this.store.write(JWKS_FILE, body);
      this.log.info('fetched the server JWKS', { kids: body.keys.map((k) => k.kid) });
      return body;
    } catch (e) {
      this.log.warn('cannot fetch the server JWKS', { error: (e as Error).message });
      return null;
    }
  }

  /** Verifies a compact JWS (EdDSA only) and returns its JSON payload, or throws why not. */
  async verify(jws: string, opts: { fetch?: boolean } = {}): Promise<Record<string, unknown>> {
    const header = decodeProtectedHeader(jws);
    if (header.alg !== TOKEN_ALG) throw new Error(`algorithm ${String(header.alg)} not accepted`);
    let jwks = this.current();
    if ((opts.fetch ?? true) && (!jwks || !jwks.keys.some((k) => k.kid === header.kid))) jwks = (await this.fetch()) ?? jwks;
    if (!jwks) throw new Error('no server keys known to verify with');
    const { payload } = await compactVerify(jws, createLocalJWKSet(jwks), { algorithms: [TOKEN_ALG] });
    const v: unknown = JSON.parse(Buffer.from(payload).toString('utf8'));
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('payload is not an object');
    return v as Record<string, unknown>;
  }
}
