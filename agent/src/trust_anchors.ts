/**
 * The server signing keys this host was told to trust, out of band: thumbprints in the
 * agent config (trusted_keys), a JWKS file installed with the agent (trusted_jwks_path),
 * and <state>/trust.json kept by `aegisctl trust add|remove`. When any is set the agent
 * adopts a key from the network only if it is pinned here or arrives in a key set signed
 * by a key it already trusts (those are remembered in <state>/trust_learned.json). With
 * none set, the agent trusts what the server sends (trust on first use).
 *
 * Signed key sets are ordered (`seq`, the server's keyring generation): the newest one
 * accepted is kept in <state>/trust_signed_jwks.json (0600, atomic), a set that is not
 * newer is refused unless it is that same set re-signed, and a learned key the newest set
 * no longer lists (the server retired it) is forgotten. A pinned key stays pinned: the
 * operator's word wins, with a warning.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { isEd25519PublicJwk, jwkThumbprint } from '../../protocol/src/index.js';
import { writeFileAtomic } from '../../runtime/src/atomic_file.js';
import { AgentError, ConfigError } from './errors.js';

/** Pins kept by aegisctl: `{ "keys": [{ "thumbprint", "kid", "added_at" }] }`. */
export const TRUST_FILE = 'trust.json';
/** Keys adopted through a signed key set: `{ "thumbprints": [...] }`. */
export const LEARNED_FILE = 'trust_learned.json';
/** The newest signed key set accepted: `{ seq, iat, thumbprints, kids, accepted_at }`. */
export const SIGNED_SET_FILE = 'trust_signed_jwks.json';
export const THUMBPRINT_PATTERN = /^[A-Za-z0-9_-]{43}$/;

export interface TrustEntry {
  thumbprint: string;
  kid: string | null;
  added_at: string;
}

/** A signing key the server offered that no trust anchor vouches for. */
export class UntrustedKeyError extends AgentError {
  constructor(message: string, details?: unknown) {
    super('UNTRUSTED_KEY', message, { status: 502, details });
    this.name = 'UntrustedKeyError';
  }
}

/** Thumbprints of the Ed25519 keys in a JWKS (or of one JWK); throws why not when there are none. */
export function thumbprintsOfJwks(doc: unknown): Array<{ thumbprint: string; kid: string | null }> {
  const keys: unknown[] =
    doc !== null && typeof doc === 'object' && Array.isArray((doc as { keys?: unknown }).keys) ? (doc as { keys: unknown[] }).keys : [doc];
  const out = keys.filter(isEd25519PublicJwk).map((k) => ({ thumbprint: jwkThumbprint(k), kid: typeof (k as { kid?: unknown }).kid === 'string' ? (k as { kid: string }).kid : null }));
  if (out.length === 0) throw new Error('holds no Ed25519 public key (a JWKS {"keys":[…]} or one JWK)');
  return out;
}

function readJson(path: string): unknown | null {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  return JSON.parse(text) as unknown;
}

/** The entries of a trust.json (empty when there is none); a damaged one is an error, never "trust anything". */
export function readTrustFile(path: string): TrustEntry[] {
  const v = readJson(path);
  if (v === null) return [];
  const keys = (v as { keys?: unknown }).keys;
  if (!Array.isArray(keys) || !keys.every((k) => typeof (k as TrustEntry)?.thumbprint === 'string' && THUMBPRINT_PATTERN.test((k as TrustEntry).thumbprint))) {
    throw new AgentError('STATE_CORRUPT', `${path}: not a trust file ({"keys":[{"thumbprint":…}]})`);
  }
  return keys as TrustEntry[];
}

export function writeTrustFile(path: string, entries: TrustEntry[]): void {
  writeFileAtomic(path, JSON.stringify({ keys: entries }, null, 2) + '\n', 0o644);
}

export function readLearned(path: string): string[] {
  try {
    const v = readJson(path) as { thumbprints?: unknown } | null;
    return Array.isArray(v?.thumbprints) ? v.thumbprints.filter((t): t is string => typeof t === 'string' && THUMBPRINT_PATTERN.test(t)) : [];
  } catch {
    return []; // damaged: forget what was learned; the pins still stand
  }
}

export function writeLearned(path: string, thumbprints: string[]): void {
  writeFileAtomic(path, JSON.stringify({ thumbprints: [...new Set(thumbprints)] }, null, 2) + '\n', 0o600);
}

/** What this host remembers of the newest signed key set it accepted. */
export interface AcceptedKeySet {
  seq: number;
  iat: number;
  thumbprints: string[];
  kids: Array<string | null>;
  accepted_at: string;
}

/** A signed key set refused because it is not newer than the one held (a replay, or a keyring gone back). */
export class StaleKeySetError extends AgentError {
  constructor(message: string, details?: unknown) {
    super('STALE_KEY_SET', message, { status: 502, details });
    this.name = 'StaleKeySetError';
  }
}

/**
 * The newest accepted signed key set, or null when none was. A damaged file is an error,
 * never "no floor": forgetting it would let a replayed older set through.
 */
export function readAcceptedSet(path: string): AcceptedKeySet | null {
  let v: unknown;
  try {
    v = readJson(path);
  } catch (e) {
    throw new AgentError('STATE_CORRUPT', `${path}: not readable as JSON (${(e as Error).message}); remove it to accept the server's current signed key set again`);
  }
  if (v === null) return null;
  const o = v as Partial<AcceptedKeySet>;
  if (!Number.isSafeInteger(o.seq) || typeof o.iat !== 'number' || !Array.isArray(o.thumbprints) || !o.thumbprints.every((t) => typeof t === 'string')) {
    throw new AgentError('STATE_CORRUPT', `${path}: not a signed key set record ({"seq","iat","thumbprints"}); remove it to accept the server's current signed key set again`);
  }
  return { seq: o.seq!, iat: o.iat, thumbprints: o.thumbprints, kids: Array.isArray(o.kids) ? o.kids : [], accepted_at: typeof o.accepted_at === 'string' ? o.accepted_at : '' };
}

export function writeAcceptedSet(path: string, set: AcceptedKeySet): void {
  writeFileAtomic(path, JSON.stringify(set, null, 2) + '\n', 0o600);
}

/** What accepting a signed key set changed. */
export interface KeySetAcceptance {
  /** A newer set was accepted (false: the same set again, nothing changed). */
  newer: boolean;
  /** Learned keys the set no longer lists: forgotten. */
  forgotten: string[];
  /** Pinned keys the set no longer lists: kept, because the operator pinned them. */
  retiredPins: string[];
}

/** The anchors of one agent: fixed ones from its config, plus trust.json read on every use. */
export class TrustAnchors {
  private readonly fixed: Set<string>;

  constructor(
    config: { trusted_keys: string[]; trusted_jwks_path: string },
    private readonly stateDir: string,
  ) {
    this.fixed = new Set(config.trusted_keys);
    if (config.trusted_jwks_path) {
      try {
        const doc = readJson(config.trusted_jwks_path);
        if (doc === null) throw new Error('does not exist');
        for (const k of thumbprintsOfJwks(doc)) this.fixed.add(k.thumbprint);
      } catch (e) {
        throw new ConfigError([`trusted_jwks_path: ${config.trusted_jwks_path} ${(e as Error).message}`]);
      }
    }
  }

  get trustFile(): string {
    return join(this.stateDir, TRUST_FILE);
  }

  get learnedFile(): string {
    return join(this.stateDir, LEARNED_FILE);
  }

  /** Thumbprints pinned by the operator (config, installed JWKS, trust.json). */
  pinned(): Set<string> {
    const out = new Set(this.fixed);
    for (const e of readTrustFile(this.trustFile)) out.add(e.thumbprint);
    return out;
  }

  /** True when the operator pinned anything: from then on nothing is trusted on first use. */
  active(): boolean {
    return this.pinned().size > 0;
  }

  /** Pinned keys and the keys learned from key sets they signed. */
  trusted(): Set<string> {
    const out = this.pinned();
    for (const t of readLearned(this.learnedFile)) out.add(t);
    return out;
  }

  learn(thumbprints: string[]): void {
    writeLearned(this.learnedFile, [...readLearned(this.learnedFile), ...thumbprints]);
  }

  get signedSetFile(): string {
    return join(this.stateDir, SIGNED_SET_FILE);
  }

  /** The newest signed key set accepted (throws STATE_CORRUPT on a damaged record). */
  acceptedSet(): AcceptedKeySet | null {
    return readAcceptedSet(this.signedSetFile);
  }

  /**
   * Takes a verified signed key set in order: one older than the held one, or of the same
   * generation with other keys, is refused (StaleKeySetError); a newer one is saved, and
   * learned keys it no longer lists are forgotten. Pinned keys are never dropped here.
   */
  acceptSignedSet(set: { seq: number; iat: number; keys: Array<{ thumbprint: string; kid: string | null }> }): KeySetAcceptance {
    const held = this.acceptedSet();
    const thumbprints = [...new Set(set.keys.map((k) => k.thumbprint))].sort();
    if (held && set.seq < held.seq) {
      throw new StaleKeySetError(`refused a signed server key set older than the one accepted (generation ${set.seq} < ${held.seq}): a replay, or a server key directory restored from an older copy`, {
        seq: set.seq,
        held_seq: held.seq,
      });
    }
    if (held && set.seq === held.seq) {
      const same = thumbprints.length === held.thumbprints.length && thumbprints.every((t, i) => t === [...held.thumbprints].sort()[i]);
      if (!same) {
        throw new StaleKeySetError(`refused a signed server key set of generation ${set.seq} that lists other keys than the one accepted at that generation`, { seq: set.seq });
      }
      return { newer: false, forgotten: [], retiredPins: [] };
    }
    writeAcceptedSet(this.signedSetFile, { seq: set.seq, iat: set.iat, thumbprints, kids: set.keys.map((k) => k.kid), accepted_at: new Date().toISOString() });
    const listed = new Set(thumbprints);
    const learned = readLearned(this.learnedFile);
    const forgotten = learned.filter((t) => !listed.has(t));
    if (forgotten.length > 0) writeLearned(this.learnedFile, learned.filter((t) => listed.has(t)));
    const retiredPins = [...this.pinned()].filter((t) => !listed.has(t));
    return { newer: true, forgotten, retiredPins };
  }
}
