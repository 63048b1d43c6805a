/**
 * The server signing keys this host was told to trust, out of band: thumbprints in the
 * agent config (trusted_keys), a JWKS file installed with the agent (trusted_jwks_path),
 * and <state>/trust.json kept by `aegisctl trust add|remove`. When any is set the agent
 * adopts a key from the network only if it is pinned here or arrives in a key set signed
 * by a key it already trusts (those are remembered in <state>/trust_learned.json). With
 * none set, the agent trusts what the server sends (trust on first use).
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
}
