/**
 * The signing keyring: Ed25519 keys as PEM files in one directory
 * (`<kid>.private.pem` 0600, `<kid>.public.pem`), plus `keyring.json` naming the active
 * kid and the retired ones. The active key signs; every non-retired key verifies and is
 * published in the JWKS, so tokens of a rotated-out key stay valid until retired.
 * `generation` in keyring.json counts changes to the key set (generate, rotate, retire):
 * it orders the signed key sets, and replicas sharing the directory agree on it.
 */
import { generateKeyPairSync, createPrivateKey, createPublicKey, sign as cryptoSign, type KeyObject } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { AegisError, publicJwkOf, type Ed25519PublicJwk } from '../../../protocol/src/index.js';
import { writeFileAtomic } from '../../../runtime/src/atomic_file.js';
import type { Keyring } from './keyring.js';

export const KID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

interface KeyringFile {
  active: string | null;
  retired: Record<string, string>; // kid -> ISO time of retirement
  /** Bumped on every change to the key set; absent in keyrings written before it existed. */
  generation?: number;
}

export interface KeyInfo {
  kid: string;
  active: boolean;
  retired: boolean;
  retired_at: string | null;
  created_at: string;
  public_jwk: Ed25519PublicJwk;
}

/**
 * A key that signs: `sign` answers the raw Ed25519 signature of `data`, synchronously. A
 * PKCS#11 keyring's key signs inside the token and has no private key here.
 */
export interface SigningKey {
  kid: string;
  sign(data: Uint8Array): Buffer;
}

/** A signing key held in this process (key directory, database keyring). */
export interface SoftwareSigningKey extends SigningKey {
  privateKey: KeyObject;
}

/** The signer of a private key held in memory. */
export function softwareSigningKey(kid: string, privateKey: KeyObject): SoftwareSigningKey {
  return { kid, privateKey, sign: (data) => cryptoSign(null, data, privateKey) };
}

function readRing(ringPath: string): KeyringFile {
  if (!existsSync(ringPath)) return { active: null, retired: {} };
  try {
    const parsed = JSON.parse(readFileSync(ringPath, 'utf8')) as Partial<KeyringFile>;
    return {
      active: typeof parsed.active === 'string' ? parsed.active : null,
      retired: parsed.retired ?? {},
      ...(Number.isSafeInteger(parsed.generation) ? { generation: parsed.generation } : {}),
    };
  } catch (cause) {
    throw new AegisError('SIGNING_KEY_UNAVAILABLE', `keyring ${ringPath} is not valid JSON; fix or remove it`, { cause });
  }
}

function mtimeOf(path: string): number {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return 0;
  }
}

export class KeyStore implements Keyring {
  readonly dir: string;
  readonly secrets = null;
  get description(): string {
    return `key directory ${this.dir}`;
  }
  close(): void {}
  private ring: KeyringFile;
  private ringMtime: number;
  private readonly publicKeys = new Map<string, KeyObject>();
  private signing: { kid: string; key: SoftwareSigningKey } | null = null;

  private constructor(dir: string, ring: KeyringFile) {
    this.dir = dir;
    this.ring = ring;
    this.ringMtime = mtimeOf(join(dir, 'keyring.json'));
  }

  /**
   * Picks up `keys rotate` / `keys retire` run by another process (the CLI next to a
   * running server): one stat per call, a re-read only when keyring.json changed.
   */
  private reloadIfChanged(): void {
    const path = join(this.dir, 'keyring.json');
    const m = mtimeOf(path);
    if (m === this.ringMtime) return;
    this.ring = readRing(path);
    this.ringMtime = m;
    this.publicKeys.clear();
    this.signing = null;
  }

  /** Opens (creating if needed) the keys directory. Does not require a key to exist. */
  static open(dir: string): KeyStore {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const store = new KeyStore(dir, readRing(join(dir, 'keyring.json')));
    // A keyring without an active key but with key files (e.g. keys copied in by hand):
    // adopt the newest non-retired one rather than refusing to start.
    if (store.ring.active === null) {
      const candidates = store.kids().filter((k) => !(k in store.ring.retired));
      if (candidates.length > 0) {
        store.ring.active = candidates[candidates.length - 1]!;
        store.saveChangedRing();
      }
    }
    return store;
  }

  /**
   * The key set's generation: the stored counter, or for a keyring from before it, the
   * number of keys plus the number retired (what the changes so far would have counted).
   */
  generation(): number {
    this.reloadIfChanged();
    if (this.ring.generation !== undefined) return this.ring.generation;
    const retired = Object.keys(this.ring.retired);
    return new Set([...this.kids(), ...retired]).size + retired.length;
  }

  /** Saves a change to the key set: a new generation, so newer signed sets order after older ones. */
  private saveChangedRing(): void {
    this.ring.generation = this.generation() + 1;
    this.saveRing();
  }

  private saveRing(): void {
    const path = join(this.dir, 'keyring.json');
    writeFileAtomic(path, JSON.stringify(this.ring, null, 2) + '\n', 0o600);
    this.ringMtime = mtimeOf(path);
    this.signing = null;
  }

  private privatePath(kid: string): string {
    return join(this.dir, `${kid}.private.pem`);
  }

  private publicPath(kid: string): string {
    return join(this.dir, `${kid}.public.pem`);
  }

  /** All kids with a public key file, sorted (kids are date-ordered by construction). */
  kids(): string[] {
    return readdirSync(this.dir)
      .filter((f) => f.endsWith('.public.pem'))
      .map((f) => f.slice(0, -'.public.pem'.length))
      .filter((k) => KID_PATTERN.test(k))
      .sort();
  }

  /** The next free kid of the form aegis-YYYY-NN. */
  nextKid(now = new Date()): string {
    const year = now.getUTCFullYear();
    const taken = new Set(this.kids());
    for (let n = 1; n < 100; n++) {
      const kid = `aegis-${year}-${String(n).padStart(2, '0')}`;
      if (!taken.has(kid)) return kid;
    }
    throw new AegisError('CONFLICT', `no free kid left for ${year}`);
  }

  /** Generates a key pair. The first key generated becomes active. */
  generate(kid?: string): KeyInfo {
    const id = kid ?? this.nextKid();
    if (!KID_PATTERN.test(id)) throw new AegisError('BAD_REQUEST', `invalid kid ${JSON.stringify(id)}: use letters, digits, '.', '_' and '-'`);
    if (existsSync(this.privatePath(id)) || existsSync(this.publicPath(id))) {
      throw new AegisError('CONFLICT', `key ${id} already exists`);
    }
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    writeFileAtomic(this.privatePath(id), privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, 0o600);
    writeFileAtomic(this.publicPath(id), publicKey.export({ type: 'spki', format: 'pem' }) as string, 0o644);
    if (this.ring.active === null) this.ring.active = id;
    this.saveChangedRing(); // a new key is published: a new generation
    return this.info(id);
  }

  /** Generates a new key and makes it the signing key; older keys keep verifying. */
  rotate(kid?: string): KeyInfo {
    const info = this.generate(kid);
    this.ring.active = info.kid;
    this.saveChangedRing();
    return this.info(info.kid);
  }

  /** Retires a key: it leaves the JWKS and no longer verifies. The active key cannot be retired. */
  retire(kid: string): KeyInfo {
    if (!this.kids().includes(kid)) throw new AegisError('NOT_FOUND', `no key ${kid}`);
    if (this.ring.active === kid) {
      throw new AegisError('CONFLICT', `${kid} is the active signing key; run "keys rotate" first`);
    }
    if (!(kid in this.ring.retired)) {
      this.ring.retired[kid] = new Date().toISOString();
      this.saveChangedRing();
    }
    this.publicKeys.delete(kid);
    return this.info(kid);
  }

  isRetired(kid: string): boolean {
    this.reloadIfChanged();
    return kid in this.ring.retired;
  }

  activeKid(): string | null {
    this.reloadIfChanged();
    return this.ring.active;
  }

  info(kid: string): KeyInfo {
    const st = statSync(this.publicPath(kid));
    return {
      kid,
      active: this.ring.active === kid,
      retired: this.isRetired(kid),
      retired_at: this.ring.retired[kid] ?? null,
      created_at: st.mtime.toISOString(),
      public_jwk: publicJwkOf(this.loadPublic(kid)),
    };
  }

  list(): KeyInfo[] {
    return this.kids().map((k) => this.info(k));
  }

  private loadPublic(kid: string): KeyObject {
    let key = this.publicKeys.get(kid);
    if (!key) {
      key = createPublicKey(readFileSync(this.publicPath(kid)));
      if (key.asymmetricKeyType !== 'ed25519') throw new AegisError('SIGNING_KEY_UNAVAILABLE', `${kid} is not an Ed25519 key`);
      this.publicKeys.set(kid, key);
    }
    return key;
  }

  /** A verification key by kid, or null when unknown or retired. */
  verificationKey(kid: string): KeyObject | null {
    if (!KID_PATTERN.test(kid) || this.isRetired(kid) || !existsSync(this.publicPath(kid))) return null;
    return this.loadPublic(kid);
  }

  /**
   * Loads the active private key, refusing one whose file other users can read: a signing
   * key that has leaked is worse than a server that does not start.
   */
  signingKey(): SoftwareSigningKey {
    this.reloadIfChanged();
    const kid = this.ring.active;
    if (kid === null) {
      throw new AegisError('SIGNING_KEY_UNAVAILABLE', `no signing key in ${this.dir}; run "aegis-server keys generate"`);
    }
    const path = this.privatePath(kid);
    let mode: number;
    try {
      mode = statSync(path).mode;
    } catch (cause) {
      throw new AegisError('SIGNING_KEY_UNAVAILABLE', `private key ${path} is missing`, { cause });
    }
    if ((mode & 0o077) !== 0) {
      throw new AegisError(
        'INSECURE_KEY_FILE',
        `private key ${path} has mode ${(mode & 0o777).toString(8)}; it must not be readable by group or others (chmod 600 ${path})`,
      );
    }
    // The mode is checked on every call (a stat), the PEM parsed once per active kid.
    if (this.signing?.kid === kid) return this.signing.key;
    const privateKey = createPrivateKey(readFileSync(path));
    if (privateKey.asymmetricKeyType !== 'ed25519') throw new AegisError('SIGNING_KEY_UNAVAILABLE', `${kid} is not an Ed25519 key`);
    this.signing = { kid, key: softwareSigningKey(kid, privateKey) };
    return this.signing.key;
  }

  /**
   * The private key of every non-retired key (the signing key first), for signing the key
   * set itself; each file is held to the same 0600 rule as the signing key.
   */
  verifyingSigningKeys(): SoftwareSigningKey[] {
    this.reloadIfChanged();
    const out: SoftwareSigningKey[] = [];
    for (const kid of this.kids().filter((k) => !this.isRetired(k))) {
      const path = this.privatePath(kid);
      if (!existsSync(path)) continue; // a public key copied in without its private half cannot sign
      if ((statSync(path).mode & 0o077) !== 0) {
        throw new AegisError('INSECURE_KEY_FILE', `private key ${path} must not be readable by group or others (chmod 600 ${path})`);
      }
      const privateKey = createPrivateKey(readFileSync(path));
      if (privateKey.asymmetricKeyType !== 'ed25519') throw new AegisError('SIGNING_KEY_UNAVAILABLE', `${kid} is not an Ed25519 key`);
      out.push(softwareSigningKey(kid, privateKey));
    }
    return out;
  }

  /** The JWKS document: every non-retired public key. */
  jwks(): { keys: Array<Ed25519PublicJwk & { kid: string; alg: 'EdDSA'; use: 'sig' }> } {
    return {
      keys: this.kids()
        .filter((k) => !this.isRetired(k))
        .map((kid) => ({ ...publicJwkOf(this.loadPublic(kid)), kid, alg: 'EdDSA' as const, use: 'sig' as const })),
    };
  }
}
