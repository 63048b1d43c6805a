/**
 * The server's public keys as this host knows them (<state>/jwks.json): written on every
 * activation and refresh, and fetched from the server's /.well-known/jwks.json when a
 * message names a kid we do not have (key rotation) or nothing is cached yet (a
 * community host). Signed messages are verified against this set only.
 *
 * With trust anchors (trust_anchors.ts) every key set from the network goes through
 * admit(): a key is kept only when it is pinned, or when /.well-known/jwks.signed carries
 * it under a signature by a key already trusted, and that set is no older than the newest
 * signed set accepted before (so a replayed set cannot bring back a retired key). Each
 * admit() consults the signed set, which is how retirements reach the host: a learned key
 * the newest set no longer lists is forgotten. Without anchors the server's word is taken
 * as it comes (trust on first use).
 */
import { compactVerify, createLocalJWKSet, decodeProtectedHeader, importJWK, type JSONWebKeySet, type JWK } from 'jose';
import { JWKS_SIGNATURE_TYP, TOKEN_ALG, isEd25519PublicJwk, jwkThumbprint, parseSignedJwksPayload, type SignedJwksPayload } from '../../protocol/src/index.js';
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
    // The signed set first: a newer one may have retired a learned key the answer still offers.
    const vouched = await this.signedSet(this.anchors!.trusted());
    const trusted = this.anchors!.trusted();
    const keep: JWK[] = [];
    const unknown: JWK[] = [];
    for (const k of offered.keys) (trusted.has(thumbprintOf(k) ?? '') ? keep : unknown).push(k);
    if (unknown.length > 0) {
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
   * with a key in `trusted` and the set it signs is not older than the newest accepted
   * (TrustAnchors.acceptSignedSet); empty otherwise. A newer set is remembered, and the
   * learned keys it no longer lists are forgotten (and dropped from jwks.json).
   */
  private async signedSet(trusted: Set<string>): Promise<Set<string>> {
    const set = await this.verifiedSignedSet(trusted);
    if (!set) return new Set();
    const keys = set.jwks.keys
      .map((k) => ({ thumbprint: thumbprintOf(k as JWK), kid: typeof k.kid === 'string' ? k.kid : null }))
      .filter((k): k is { thumbprint: string; kid: string | null } => k.thumbprint !== null);
    let accepted;
    try {
      accepted = this.anchors!.acceptSignedSet({ seq: set.seq, iat: set.iat, keys });
    } catch (e) {
      this.log.warn((e as Error).message, { code: (e as { code?: string }).code, seq: set.seq, iat: set.iat, kids: keys.map((k) => k.kid) });
      return new Set();
    }
    if (accepted.newer) {
      this.log.info('accepted a newer signed server key set', { seq: set.seq, iat: set.iat, kids: keys.map((k) => k.kid) });
      if (accepted.forgotten.length > 0) {
        this.log.warn('forgot learned server keys the newest signed key set no longer lists (retired by the server)', { thumbprints: accepted.forgotten });
        const cached = this.store.read<JSONWebKeySet>(JWKS_FILE, checkJwks);
        if (cached) {
          const gone = new Set(accepted.forgotten);
          const kept = cached.keys.filter((k) => !gone.has(thumbprintOf(k) ?? ''));
          if (kept.length === 0) this.store.remove(JWKS_FILE);
          else if (kept.length !== cached.keys.length) await this.store.write(JWKS_FILE, { keys: kept });
        }
      }
      for (const tp of accepted.retiredPins) {
        this.log.warn('a pinned server key is no longer in the server\'s signed key set (retired there); it stays trusted because the operator pinned it: unpin it with aegisctl trust remove, or remove it from trusted_keys / trusted_jwks_path', {
          thumbprint: tp,
        });
      }
    }
    return new Set(keys.map((k) => k.thumbprint));
  }

  /** The payload of /.well-known/jwks.signed when a signature by a key in `trusted` verifies; null otherwise (logged). */
  private async verifiedSignedSet(trusted: Set<string>): Promise<SignedJwksPayload | null> {
    let doc;
    try {
      doc = await this.link.signedJwks();
    } catch (e) {
      this.log.warn('cannot fetch the signed server JWKS', { error: (e as Error).message });
      return null;
    }
    for (const sig of doc.signatures) {
      try {
        if (typeof sig !== 'string') continue;
        const header = decodeProtectedHeader(sig);
        if (header.alg !== TOKEN_ALG || header.typ !== JWKS_SIGNATURE_TYP) continue;
        const signer = doc.jwks.keys.find((k) => k.kid === header.kid && trusted.has(thumbprintOf(k as JWK) ?? ''));
        if (!signer) continue;
        const { payload } = await compactVerify(sig, await importJWK({ ...(signer as JWK), alg: TOKEN_ALG }, TOKEN_ALG), { algorithms: [TOKEN_ALG] });
        // What is signed is used, never the document's unsigned copy.
        const set = parseSignedJwksPayload(Buffer.from(payload).toString('utf8'));
        if (typeof set === 'string') {
          this.log.warn('a signed server key set verified but is not an ordered key set; refused', { reason: set, kid: header.kid });
          continue;
        }
        return set;
      } catch {
        // a signature that does not verify vouches for nothing; try the next
      }
    }
    this.log.warn('the signed server JWKS carries no valid signature by a trusted key', { signatures: doc.signatures.length });
    return null;
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
