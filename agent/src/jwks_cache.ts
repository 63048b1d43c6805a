/**
 * The server's public keys as this host knows them (<state>/jwks.json): written on every
 * activation and refresh, and fetched from the server's /.well-known/jwks.json when a
 * message names a kid we do not have (key rotation) or nothing is cached yet (a
 * community host). Signed messages are verified against this set only.
 *
 * With trust anchors (trust_anchors.ts) every key set from the network goes through
 * admit(): a key is kept only when it is pinned, or when /.well-known/jwks.signed carries
 * it under a signature by a key already trusted. Without anchors the server's word is
 * taken as it comes (trust on first use).
 */
import { compactVerify, createLocalJWKSet, decodeProtectedHeader, importJWK, type JSONWebKeySet, type JWK } from 'jose';
import { JWKS_SIGNATURE_TYP, TOKEN_ALG, canonicalJson, isEd25519PublicJwk, jwkThumbprint } from '../../protocol/src/index.js';
import type { Logger } from './logger.js';
import type { ServerLink } from './server_link.js';
import type { StateStore } from './state_store.js';
import { UntrustedKeyError, type TrustAnchors } from './trust_anchors.js';

export const JWKS_FILE = 'jwks.json';
const REFETCH_MIN_INTERVAL_MS = 30_000;

const checkJwks = (v: unknown) =>
  v !== null && typeof v === 'object' && Array.isArray((v as { keys?: unknown }).keys) && (v as { keys: unknown[] }).keys.length > 0 ? null : 'not a JWKS';

/** A key's RFC 7638 thumbprint, or null for anything that is not an Ed25519 public key. */
const thumbprintOf = (k: JWK): string | null => (isEd25519PublicJwk(k) ? jwkThumbprint(k) : null);

/** The server's keys: cached in the state dir, re-fetched (rate-limited) for an unknown kid. */
export class JwksCache {
  private lastFetch = 0;

  constructor(
    private readonly store: StateStore,
    private readonly link: ServerLink,
    private readonly log: Logger,
    private readonly anchors: TrustAnchors | null = null,
  ) {}

  /** True when keys are admitted only through the operator's trust anchors. */
  get pinned(): boolean {
    return this.anchors?.active() ?? false;
  }

  /**
   * At start, with anchors: drop cached keys nothing vouches for (e.g. adopted on first use
   * before the operator pinned keys), so the offline license check never rests on them.
   */
  async open(): Promise<void> {
    if (!this.pinned) return;
    const cached = this.store.read<JSONWebKeySet>(JWKS_FILE, checkJwks);
    if (!cached) return;
    const kept = this.onlyTrusted(cached);
    if (kept.keys.length === cached.keys.length) return;
    const dropped = cached.keys.filter((k) => !kept.keys.includes(k)).map((k) => k.kid);
    this.log.warn('dropped cached server keys that no trust anchor vouches for', { kids: dropped });
    if (kept.keys.length === 0) this.store.remove(JWKS_FILE);
    else await this.store.write(JWKS_FILE, kept);
  }

  private onlyTrusted(jwks: JSONWebKeySet): JSONWebKeySet {
    if (!this.pinned) return jwks;
    const trusted = this.anchors!.trusted();
    return { keys: jwks.keys.filter((k) => trusted.has(thumbprintOf(k) ?? '')) };
  }

  current(): JSONWebKeySet | null {
    const jwks = this.store.read<JSONWebKeySet>(JWKS_FILE, checkJwks);
    if (!jwks) return null;
    const kept = this.onlyTrusted(jwks);
    return kept.keys.length > 0 ? kept : null;
  }

  /**
   * The part of `offered` this host may use. Without anchors: all of it. With anchors:
   * pinned and learned keys, and keys that the server's signed key set carries under a
   * signature by a trusted key; the rest is refused (logged). Throws UntrustedKeyError
   * when nothing is left.
   */
  async admit(offered: JSONWebKeySet, source: string): Promise<JSONWebKeySet> {
    if (!this.pinned) return offered;
    const trusted = this.anchors!.trusted();
    const keep: JWK[] = [];
    const unknown: JWK[] = [];
    for (const k of offered.keys) (trusted.has(thumbprintOf(k) ?? '') ? keep : unknown).push(k);
    if (unknown.length > 0) {
      const vouched = await this.signedSet(trusted);
      const refused: Array<{ kid: unknown; thumbprint: string | null }> = [];
      const learned: JWK[] = [];
      for (const k of unknown) {
        const tp = thumbprintOf(k);
        if (tp !== null && vouched.has(tp)) learned.push(k);
        else refused.push({ kid: k.kid, thumbprint: tp });
      }
      if (learned.length > 0) {
        keep.push(...learned);
        this.anchors!.learn(learned.map((k) => thumbprintOf(k)!));
        this.log.info('adopted server keys from a key set signed by a trusted key', { source, kids: learned.map((k) => k.kid) });
      }
      if (refused.length > 0) this.log.warn('refused server keys that no trust anchor vouches for', { source, keys: refused });
    }
    if (keep.length === 0) {
      throw new UntrustedKeyError(`the server's keys (${source}) are not trusted here: none is pinned (trusted_keys, trusted_jwks_path, aegisctl trust) or signed by a pinned key`, {
        offered: offered.keys.map((k) => ({ kid: k.kid, thumbprint: thumbprintOf(k) })),
      });
    }
    return { keys: keep };
  }

  /**
   * Thumbprints in /.well-known/jwks.signed when at least one of its signatures verifies
   * with a key in `trusted` over exactly that key set; empty otherwise.
   */
  private async signedSet(trusted: Set<string>): Promise<Set<string>> {
    let doc;
    try {
      doc = await this.link.signedJwks();
    } catch (e) {
      this.log.warn('cannot fetch the signed server JWKS', { error: (e as Error).message });
      return new Set();
    }
    const expected = canonicalJson(doc.jwks);
    for (const sig of doc.signatures) {
      try {
        if (typeof sig !== 'string') continue;
        const header = decodeProtectedHeader(sig);
        if (header.alg !== TOKEN_ALG || header.typ !== JWKS_SIGNATURE_TYP) continue;
        const signer = doc.jwks.keys.find((k) => k.kid === header.kid && trusted.has(thumbprintOf(k as JWK) ?? ''));
        if (!signer) continue;
        const { payload } = await compactVerify(sig, await importJWK({ ...(signer as JWK), alg: TOKEN_ALG }, TOKEN_ALG), { algorithms: [TOKEN_ALG] });
        if (Buffer.from(payload).toString('utf8') !== expected) continue;
        return new Set(doc.jwks.keys.map((k) => thumbprintOf(k as JWK)).filter((t): t is string => t !== null));
      } catch {
        // a signature that does not verify vouches for nothing; try the next
      }
    }
    this.log.warn('the signed server JWKS carries no valid signature by a trusted key', { signatures: doc.signatures.length });
    return new Set();
  }

  private async fetch(): Promise<JSONWebKeySet | null> {
    if (Date.now() - this.lastFetch < REFETCH_MIN_INTERVAL_MS) return null;
    this.lastFetch = Date.now();
    try {
      const body = await this.admit((await this.link.jwks()) as JSONWebKeySet, '/.well-known/jwks.json');
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
