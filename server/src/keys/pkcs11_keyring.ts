/**
 * The keyring held in an HSM through PKCS#11 (tested with Debian's SoftHSM): a `KeyVault`
 * for the database keyring (db_keyring.ts), so state, generation, polling and the
 * replicas' view of a rotation are the database keyring's, unchanged.
 *
 * - Signing keys are Ed25519 pairs generated in the token (CKM_EC_EDWARDS_KEY_PAIR_GEN),
 *   the private half CKA_SENSITIVE, not CKA_EXTRACTABLE, CKA_ID and CKA_LABEL = kid; every
 *   signature is C_Sign with CKM_EDDSA. The private key never leaves the token, and the
 *   database row holds only the public key and a reference (`pkcs11:id=<kid>`).
 * - The other secrets (NATS seeds, the CA key) are sealed in their rows with AES-256-GCM
 *   done by the token (CKM_AES_GCM) under one non-extractable AES key generated in it; the
 *   `hsm/check` row names that key (its CKA_ID) and holds a sealed check text, so a token
 *   without it, or with another key, is a refusal at start.
 *
 * Why the key state (active, retired, created) stays in the database and not in token
 * attributes: a rotation changes the active kid, the generation every replica polls and
 * the new key's row in one transaction, which token attributes cannot join; replicas poll
 * one database row cheaply, and a backup then carries the metadata (the keys themselves
 * stay in the token, see ops/backup.ts).
 *
 * Fail closed, one line each: a missing module, no token of the label, a wrong PIN, a key
 * that is extractable, was ever extractable or not sensitive, one that is not Ed25519, a
 * kid of the database missing from the token, a pair whose private half does not sign for
 * the row's public key, a sealed record that does not open.
 *
 * All calls are the binding's synchronous ones: JavaScript never interleaves two
 * operations on the one session (C_SignInit/C_Sign, C_FindObjects*) this process uses.
 */
import { createPublicKey, randomBytes, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import type { Kysely } from 'kysely';
import pkcs11js from 'pkcs11js';
import { AegisError } from '../../../protocol/src/index.js';
import type { Database } from '../db/schema.js';
import { DbKeyring, SIGNING, type DbKeyringOptions, type KeyVault } from './db_keyring.js';
import { KID_PATTERN, type SigningKey } from './keystore.js';

/** PKCS#11 3.0 values the binding's typings do not name (SoftHSM 2.6 implements them). */
export const CKK_EC_EDWARDS = 0x40;
export const CKM_EC_EDWARDS_KEY_PAIR_GEN = 0x1055;
export const CKM_EDDSA = 0x1057;
/** DER of the Ed25519 OID 1.3.101.112, CKA_EC_PARAMS of an Ed25519 key. */
export const ED25519_EC_PARAMS = Buffer.from('06032b6570', 'hex');
/** The other encoding RFC 8410 tokens use for it: PrintableString "edwards25519". */
const ED25519_EC_PARAMS_NAME = Buffer.concat([Buffer.from([0x13, 12]), Buffer.from('edwards25519')]);

const SEAL_LABEL = 'aegis-seal';
const CHECK = { kind: 'hsm', kid: 'check', plaintext: 'aegis keyring pkcs11 check v1' };
const IV_BYTES = 12;
const TAG_BYTES = 16;

export interface Pkcs11Settings {
  /** AEGIS_PKCS11_MODULE: the PKCS#11 library (e.g. /usr/lib/softhsm/libsofthsm2.so). */
  module: string;
  /** AEGIS_PKCS11_TOKEN_LABEL: the token's label. */
  tokenLabel: string;
  /** AEGIS_PKCS11_PIN_FILE: the user PIN, in a 0600 file owned by the server's user. */
  pinFile: string;
}

function unavailable(message: string, cause?: unknown): AegisError {
  return new AegisError('SIGNING_KEY_UNAVAILABLE', message, cause === undefined ? undefined : { cause });
}

/** The PKCS#11 return code's name (CKR_PIN_INCORRECT...), for one-line errors. */
function ckr(err: unknown): string {
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'number') {
    for (const [name, value] of Object.entries(pkcs11js)) if (name.startsWith('CKR_') && value === code) return name;
    return `CKR 0x${code.toString(16)}`;
  }
  return (err as Error).message ?? String(err);
}

function isCkr(err: unknown, name: string): boolean {
  return (err as { code?: unknown }).code === (pkcs11js as unknown as Record<string, number>)[name];
}

/** Reads the PIN: a regular file of the server's user that nobody else can read. */
export function loadPinFile(path: string): string {
  let st;
  try {
    st = statSync(path);
  } catch (cause) {
    throw unavailable(`AEGIS_PKCS11_PIN_FILE ${path} cannot be read: ${(cause as Error).message}`, cause);
  }
  if (!st.isFile()) throw unavailable(`AEGIS_PKCS11_PIN_FILE ${path} is not a regular file`);
  if ((st.mode & 0o077) !== 0) {
    throw new AegisError('INSECURE_KEY_FILE', `AEGIS_PKCS11_PIN_FILE ${path} has mode ${(st.mode & 0o777).toString(8)}; it must not be readable by group or others (chmod 600 ${path})`);
  }
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid) throw new AegisError('INSECURE_KEY_FILE', `AEGIS_PKCS11_PIN_FILE ${path} is owned by uid ${st.uid}, not by the server's user (uid ${uid}); chown it`);
  const pin = readFileSync(path, 'utf8').replace(/\r?\n$/, '');
  if (pin.length === 0 || pin.length > 256 || /[\r\n]/.test(pin)) throw unavailable(`AEGIS_PKCS11_PIN_FILE ${path} must hold the PIN on one line`);
  return pin;
}

/**
 * One loaded module per path in this process: C_Initialize and C_Login are per process
 * (per token), so two keyrings in one process share them; the last close finalizes.
 */
interface LoadedModule {
  p11: pkcs11js.PKCS11;
  refs: number;
  /** Token label → the PIN the token was logged in with (a second login cannot re-check it). */
  logins: Map<string, string>;
}
const modules = new Map<string, LoadedModule>();

function loadModule(path: string): LoadedModule {
  const known = modules.get(path);
  if (known) {
    known.refs++;
    return known;
  }
  if (!existsSync(path)) throw unavailable(`AEGIS_PKCS11_MODULE ${path} does not exist (Debian: apt-get install softhsm2 for /usr/lib/softhsm/libsofthsm2.so)`);
  const p11 = new pkcs11js.PKCS11();
  try {
    p11.load(path);
  } catch (cause) {
    throw unavailable(`AEGIS_PKCS11_MODULE ${path} is not a loadable PKCS#11 library: ${(cause as Error).message}`, cause);
  }
  try {
    p11.C_Initialize();
  } catch (cause) {
    if (!isCkr(cause, 'CKR_CRYPTOKI_ALREADY_INITIALIZED')) throw unavailable(`AEGIS_PKCS11_MODULE ${path}: C_Initialize failed (${ckr(cause)})`, cause);
  }
  const m = { p11, refs: 1, logins: new Map<string, string>() };
  modules.set(path, m);
  return m;
}

function releaseModule(path: string): void {
  const m = modules.get(path);
  if (!m || --m.refs > 0) return;
  modules.delete(path);
  try {
    m.p11.C_Finalize();
  } catch {
    // already finalized or the token went away: nothing left to release
  }
  m.p11.close();
}

function attrs(p11: pkcs11js.PKCS11, session: Buffer, object: Buffer, types: number[]): Map<number, Buffer> {
  const out = new Map<number, Buffer>();
  for (const a of p11.C_GetAttributeValue(session, object, types.map((type) => ({ type })))) out.set(a.type, a.value);
  return out;
}

const bool = (b: Buffer | undefined): boolean => b !== undefined && b.length > 0 && b[0] !== 0;
/** A CK_ULONG attribute (8 bytes on 64-bit Linux, host order), or -1 when absent. */
export function ulong(b: Buffer | undefined): number {
  if (b === undefined || b.length === 0) return -1;
  return b.length === 8 ? Number(b.readBigUInt64LE()) : b.readUIntLE(0, Math.min(b.length, 6));
}

/** CKA_EC_POINT of an Ed25519 public key: a DER OCTET STRING of the 32 bytes, or (some tokens) the bytes. */
function rawEdPoint(point: Buffer): Buffer {
  if (point.length === 34 && point[0] === 0x04 && point[1] === 32) return point.subarray(2);
  if (point.length === 32) return point;
  throw unavailable(`the token answered an Ed25519 public point of ${point.length} bytes`);
}

function ed25519PublicKey(raw: Buffer): KeyObject {
  return createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: raw.toString('base64url') }, format: 'jwk' });
}

function aad(kind: string, kid: string): Buffer {
  return Buffer.from(`aegis-keyring-pkcs11/v1\0${kind}\0${kid}`, 'utf8');
}

/** What a signing row's `sealed` holds in a token keyring: a reference, no key material. */
export function tokenKeyRef(kid: string): string {
  return `pkcs11:id=${encodeURIComponent(kid)}`;
}

export class Pkcs11Vault implements KeyVault<SigningKey> {
  readonly checkKind = 'hsm';
  readonly description: string;
  private sealKey: Buffer | null = null;
  private closed = false;

  private constructor(
    private readonly settings: Pkcs11Settings,
    private readonly p11: pkcs11js.PKCS11,
    private readonly session: Buffer,
  ) {
    this.description = `PKCS#11 keyring (token "${settings.tokenLabel}")`;
  }

  /** Loads the module, finds the token by label and logs in with the PIN file's PIN. */
  static open(settings: Pkcs11Settings): Pkcs11Vault {
    const pin = loadPinFile(settings.pinFile);
    const m = loadModule(settings.module);
    try {
      const { p11 } = m;
      const slots = p11.C_GetSlotList(true);
      const labels: string[] = [];
      const matching = slots.filter((slot) => {
        const label = p11.C_GetTokenInfo(slot).label.trim();
        labels.push(JSON.stringify(label));
        return label === settings.tokenLabel;
      });
      if (matching.length === 0) {
        throw unavailable(`no PKCS#11 token labelled "${settings.tokenLabel}" in ${settings.module} (tokens: ${labels.join(', ') || 'none'}); initialise it (softhsm2-util --init-token) or fix AEGIS_PKCS11_TOKEN_LABEL`);
      }
      if (matching.length > 1) throw unavailable(`${matching.length} PKCS#11 tokens are labelled "${settings.tokenLabel}" in ${settings.module}; relabel them so the label names one`);
      const slot = matching[0]!;
      const mechanisms = new Set(p11.C_GetMechanismList(slot));
      for (const [name, mech] of [['CKM_EC_EDWARDS_KEY_PAIR_GEN', CKM_EC_EDWARDS_KEY_PAIR_GEN], ['CKM_EDDSA', CKM_EDDSA], ['CKM_AES_GCM', pkcs11js.CKM_AES_GCM], ['CKM_AES_KEY_GEN', pkcs11js.CKM_AES_KEY_GEN]] as const) {
        if (!mechanisms.has(mech)) throw unavailable(`PKCS#11 token "${settings.tokenLabel}" does not offer ${name}; Aegis needs Ed25519 (CKM_EDDSA) and AES-GCM in the token`);
      }
      const session = p11.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
      const loggedInWith = m.logins.get(settings.tokenLabel);
      try {
        p11.C_Login(session, pkcs11js.CKU_USER, pin);
        m.logins.set(settings.tokenLabel, pin);
      } catch (cause) {
        // Logged in by another keyring of this process, whose PIN the token did check.
        if (isCkr(cause, 'CKR_USER_ALREADY_LOGGED_IN') && loggedInWith === pin) return new Pkcs11Vault(settings, p11, session);
        p11.C_CloseSession(session);
        if (isCkr(cause, 'CKR_USER_ALREADY_LOGGED_IN')) throw unavailable(`AEGIS_PKCS11_PIN_FILE holds the wrong PIN for PKCS#11 token "${settings.tokenLabel}"; refusing to start`);
        if (isCkr(cause, 'CKR_PIN_INCORRECT')) throw unavailable(`AEGIS_PKCS11_PIN_FILE holds the wrong PIN for PKCS#11 token "${settings.tokenLabel}" (CKR_PIN_INCORRECT); refusing to start`, cause);
        if (isCkr(cause, 'CKR_PIN_LOCKED')) throw unavailable(`the user PIN of PKCS#11 token "${settings.tokenLabel}" is locked (CKR_PIN_LOCKED): unlock it with the SO PIN`, cause);
        throw unavailable(`logging in to PKCS#11 token "${settings.tokenLabel}" failed (${ckr(cause)})`, cause);
      }
      return new Pkcs11Vault(settings, p11, session);
    } catch (err) {
      releaseModule(settings.module);
      throw err;
    }
  }

  private find(template: pkcs11js.Template): Buffer[] {
    this.p11.C_FindObjectsInit(this.session, template);
    try {
      const out: Buffer[] = [];
      for (;;) {
        const batch = this.p11.C_FindObjects(this.session, 64);
        out.push(...batch);
        if (batch.length < 64) return out;
      }
    } finally {
      this.p11.C_FindObjectsFinal(this.session);
    }
  }

  /** The AES key the check record names; refuses one that is not a sensitive, non-extractable AES-256 key. */
  private findSealKey(id: Buffer): Buffer {
    const found = this.find([
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
      { type: pkcs11js.CKA_ID, value: id },
    ]);
    if (found.length !== 1) {
      throw unavailable(
        `PKCS#11 token "${this.settings.tokenLabel}" ${found.length === 0 ? 'lacks' : 'holds more than one'} the sealing key ${id.toString('hex')} this database's secrets are sealed under (another token, or the key was deleted); refusing to start`,
      );
    }
    const a = attrs(this.p11, this.session, found[0]!, [pkcs11js.CKA_KEY_TYPE, pkcs11js.CKA_VALUE_LEN, pkcs11js.CKA_SENSITIVE, pkcs11js.CKA_EXTRACTABLE, pkcs11js.CKA_NEVER_EXTRACTABLE]);
    if (ulong(a.get(pkcs11js.CKA_KEY_TYPE)) !== pkcs11js.CKK_AES || ulong(a.get(pkcs11js.CKA_VALUE_LEN)) !== 32) {
      throw unavailable(`the sealing key ${id.toString('hex')} in PKCS#11 token "${this.settings.tokenLabel}" is not an AES-256 key; refusing it`);
    }
    if (!bool(a.get(pkcs11js.CKA_SENSITIVE)) || bool(a.get(pkcs11js.CKA_EXTRACTABLE)) || !bool(a.get(pkcs11js.CKA_NEVER_EXTRACTABLE))) {
      throw unavailable(`the sealing key ${id.toString('hex')} in PKCS#11 token "${this.settings.tokenLabel}" is (or was) extractable or not sensitive; refusing it`);
    }
    return found[0]!;
  }

  private generateSealKey(id: Buffer): Buffer {
    return this.p11.C_GenerateKey(this.session, { mechanism: pkcs11js.CKM_AES_KEY_GEN }, [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
      { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_AES },
      { type: pkcs11js.CKA_VALUE_LEN, value: 32 },
      { type: pkcs11js.CKA_TOKEN, value: true },
      { type: pkcs11js.CKA_PRIVATE, value: true },
      { type: pkcs11js.CKA_SENSITIVE, value: true },
      { type: pkcs11js.CKA_EXTRACTABLE, value: false },
      { type: pkcs11js.CKA_ENCRYPT, value: true },
      { type: pkcs11js.CKA_DECRYPT, value: true },
      { type: pkcs11js.CKA_WRAP, value: false },
      { type: pkcs11js.CKA_UNWRAP, value: false },
      { type: pkcs11js.CKA_LABEL, value: SEAL_LABEL },
      { type: pkcs11js.CKA_ID, value: id },
    ]);
  }

  /**
   * The `hsm/check` row names the sealing key (hex CKA_ID, in public_pem) and holds a
   * text sealed under it. The first replica to write it wins; a replica that lost the
   * race destroys the key it made and uses the winner's.
   */
  async check(db: Kysely<Database>): Promise<void> {
    const row = await db.selectFrom('keyring_keys').select(['sealed', 'public_pem']).where('kind', '=', CHECK.kind).where('kid', '=', CHECK.kid).executeTakeFirst();
    if (!row) {
      const id = randomBytes(16);
      const key = this.generateSealKey(id);
      this.sealKey = key;
      const values = { kind: CHECK.kind, kid: CHECK.kid, public_pem: id.toString('hex'), sealed: this.seal(CHECK.kind, CHECK.kid, Buffer.from(CHECK.plaintext)), created_at: new Date().toISOString(), retired_at: null };
      await db.insertInto('keyring_keys').values(values).onConflict((oc) => oc.columns(['kind', 'kid']).doNothing()).execute();
      const stored = await db.selectFrom('keyring_keys').select('public_pem').where('kind', '=', CHECK.kind).where('kid', '=', CHECK.kid).executeTakeFirst();
      if (stored?.public_pem !== values.public_pem) this.p11.C_DestroyObject(this.session, key);
      this.sealKey = null;
      return this.check(db);
    }
    if (typeof row.public_pem !== 'string' || !/^[0-9a-f]{32}$/.test(row.public_pem)) throw unavailable('the keyring check record hsm/check is corrupt; refusing to start');
    this.sealKey = this.findSealKey(Buffer.from(row.public_pem, 'hex'));
    let plain: Buffer;
    try {
      plain = this.unseal(CHECK.kind, CHECK.kid, row.sealed);
    } catch {
      throw unavailable(`the sealing key in PKCS#11 token "${this.settings.tokenLabel}" does not open this database's check record; refusing to start`);
    }
    if (plain.toString() !== CHECK.plaintext) throw unavailable('the keyring check record hsm/check is corrupt; refusing to start');
  }

  private gcm(iv: Buffer, kind: string, kid: string): pkcs11js.Mechanism {
    const parameter: pkcs11js.GcmParams = { type: pkcs11js.CK_PARAMS_AES_GCM, iv, ivBits: IV_BYTES * 8, aad: aad(kind, kid), tagBits: TAG_BYTES * 8 };
    return { mechanism: pkcs11js.CKM_AES_GCM, parameter };
  }

  /** `p11.v1.` + base64(iv(12) ‖ ciphertext ‖ tag(16)), encrypted by the token. */
  seal(kind: string, kid: string, plaintext: Buffer): string {
    if (!this.sealKey) throw unavailable('the PKCS#11 keyring is not checked against the database yet');
    const iv = randomBytes(IV_BYTES);
    this.p11.C_EncryptInit(this.session, this.gcm(iv, kind, kid), this.sealKey);
    const body = this.p11.C_Encrypt(this.session, plaintext, Buffer.alloc(plaintext.length + TAG_BYTES + 16));
    return 'p11.v1.' + Buffer.concat([iv, body]).toString('base64');
  }

  unseal(kind: string, kid: string, sealed: string): Buffer {
    const refuse = (why: string) =>
      unavailable(`keyring record ${kind}/${kid} does not open in PKCS#11 token "${this.settings.tokenLabel}" (${why}): tampered with, moved from another row, or sealed under another token's key; refusing it`);
    if (!this.sealKey) throw unavailable('the PKCS#11 keyring is not checked against the database yet');
    if (typeof sealed !== 'string' || !sealed.startsWith('p11.v1.')) throw refuse('unknown format');
    const raw = Buffer.from(sealed.slice('p11.v1.'.length), 'base64');
    if (raw.length < IV_BYTES + TAG_BYTES) throw refuse('too short');
    try {
      this.p11.C_DecryptInit(this.session, this.gcm(raw.subarray(0, IV_BYTES), kind, kid), this.sealKey);
      return Buffer.from(this.p11.C_Decrypt(this.session, raw.subarray(IV_BYTES), Buffer.alloc(raw.length)));
    } catch (err) {
      throw refuse(`authentication failed: ${ckr(err)}`);
    }
  }

  createSigningKey(kid: string): { publicKey: KeyObject; sealed: string; discard(): void } {
    const id = Buffer.from(kid, 'utf8');
    if (this.find([{ type: pkcs11js.CKA_ID, value: id }]).length > 0) {
      throw new AegisError(
        'CONFLICT',
        `PKCS#11 token "${this.settings.tokenLabel}" already holds an object with CKA_ID ${kid} that the keyring does not list (left by an interrupted generate?); delete it from the token or pick another --kid`,
      );
    }
    let pair: pkcs11js.KeyPair;
    try {
      pair = this.p11.C_GenerateKeyPair(
        this.session,
        { mechanism: CKM_EC_EDWARDS_KEY_PAIR_GEN },
        [
          { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PUBLIC_KEY },
          { type: pkcs11js.CKA_KEY_TYPE, value: CKK_EC_EDWARDS },
          { type: pkcs11js.CKA_TOKEN, value: true },
          { type: pkcs11js.CKA_VERIFY, value: true },
          { type: pkcs11js.CKA_EC_PARAMS, value: ED25519_EC_PARAMS },
          { type: pkcs11js.CKA_LABEL, value: kid },
          { type: pkcs11js.CKA_ID, value: id },
        ],
        [
          { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY },
          { type: pkcs11js.CKA_KEY_TYPE, value: CKK_EC_EDWARDS },
          { type: pkcs11js.CKA_TOKEN, value: true },
          { type: pkcs11js.CKA_PRIVATE, value: true },
          { type: pkcs11js.CKA_SENSITIVE, value: true },
          { type: pkcs11js.CKA_EXTRACTABLE, value: false },
          { type: pkcs11js.CKA_SIGN, value: true },
          { type: pkcs11js.CKA_LABEL, value: kid },
          { type: pkcs11js.CKA_ID, value: id },
        ],
      );
    } catch (cause) {
      throw unavailable(`generating an Ed25519 key in PKCS#11 token "${this.settings.tokenLabel}" failed (${ckr(cause)})`, cause);
    }
    const discard = () => {
      for (const h of [pair.privateKey, pair.publicKey]) {
        try {
          this.p11.C_DestroyObject(this.session, h);
        } catch {
          // best effort: a leftover is refused by name at the next generate of this kid
        }
      }
    };
    try {
      const point = attrs(this.p11, this.session, pair.publicKey, [pkcs11js.CKA_EC_POINT]).get(pkcs11js.CKA_EC_POINT)!;
      return { publicKey: ed25519PublicKey(rawEdPoint(point)), sealed: tokenKeyRef(kid), discard };
    } catch (err) {
      discard();
      throw err;
    }
  }

  /**
   * The token's private key of the row, checked: Ed25519, sensitive, never extractable,
   * and signing for the row's public key (a test signature verified here).
   */
  openSigningKey(kid: string, publicKey: KeyObject, sealed: string): SigningKey {
    if (sealed !== tokenKeyRef(kid)) throw unavailable(`keyring row ${SIGNING}/${kid} is not a reference to a PKCS#11 token key (a row of another keyring?); refusing it`);
    const found = this.find([
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY },
      { type: pkcs11js.CKA_ID, value: Buffer.from(kid, 'utf8') },
    ]);
    if (found.length === 0) throw unavailable(`the signing key ${kid} of the keyring is missing from PKCS#11 token "${this.settings.tokenLabel}"; refusing to start`);
    if (found.length > 1) throw unavailable(`PKCS#11 token "${this.settings.tokenLabel}" holds ${found.length} private keys with CKA_ID ${kid}; refusing them`);
    const handle = found[0]!;
    const a = attrs(this.p11, this.session, handle, [pkcs11js.CKA_KEY_TYPE, pkcs11js.CKA_EC_PARAMS, pkcs11js.CKA_SENSITIVE, pkcs11js.CKA_EXTRACTABLE, pkcs11js.CKA_NEVER_EXTRACTABLE, pkcs11js.CKA_ALWAYS_SENSITIVE, pkcs11js.CKA_SIGN]);
    const params = a.get(pkcs11js.CKA_EC_PARAMS) ?? Buffer.alloc(0);
    if (ulong(a.get(pkcs11js.CKA_KEY_TYPE)) !== CKK_EC_EDWARDS || !(params.equals(ED25519_EC_PARAMS) || params.equals(ED25519_EC_PARAMS_NAME))) {
      throw unavailable(`the token key ${kid} is not an Ed25519 key; refusing it`);
    }
    if (bool(a.get(pkcs11js.CKA_EXTRACTABLE)) || !bool(a.get(pkcs11js.CKA_NEVER_EXTRACTABLE))) {
      throw unavailable(`the token key ${kid} is (or was) extractable (CKA_EXTRACTABLE/CKA_NEVER_EXTRACTABLE): it may exist outside the token; refusing it`);
    }
    if (!bool(a.get(pkcs11js.CKA_SENSITIVE)) || !bool(a.get(pkcs11js.CKA_ALWAYS_SENSITIVE))) throw unavailable(`the token key ${kid} is not (always) sensitive; refusing it`);
    if (!bool(a.get(pkcs11js.CKA_SIGN))) throw unavailable(`the token key ${kid} may not sign (CKA_SIGN false); refusing it`);
    const key: SigningKey = { kid, sign: (data) => this.signWith(kid, handle, data) };
    const probe = Buffer.from(`aegis keyring pkcs11 pair check\0${kid}`);
    if (!cryptoVerify(null, probe, publicKey, key.sign(probe))) {
      throw unavailable(`keyring row ${SIGNING}/${kid}: the public key does not belong to the token's private key; refusing it`);
    }
    return key;
  }

  private signWith(kid: string, handle: Buffer, data: Uint8Array): Buffer {
    if (this.closed) throw unavailable('the PKCS#11 keyring is closed');
    try {
      this.p11.C_SignInit(this.session, { mechanism: CKM_EDDSA }, handle);
      return Buffer.from(this.p11.C_Sign(this.session, Buffer.from(data), Buffer.alloc(64)));
    } catch (cause) {
      throw unavailable(`signing with ${kid} in PKCS#11 token "${this.settings.tokenLabel}" failed (${ckr(cause)})`, cause);
    }
  }

  heldKids(): Set<string> {
    const out = new Set<string>();
    for (const h of this.find([{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY }])) {
      const id = attrs(this.p11, this.session, h, [pkcs11js.CKA_ID]).get(pkcs11js.CKA_ID)?.toString('utf8');
      if (id && KID_PATTERN.test(id)) out.add(id);
    }
    return out;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.p11.C_CloseSession(this.session);
    } catch {
      // the token may be gone already
    }
    releaseModule(this.settings.module);
  }
}

/** Opens the database keyring whose keys are in the PKCS#11 token of `settings`. */
export async function openPkcs11Keyring(db: Kysely<Database>, settings: Pkcs11Settings, opts: DbKeyringOptions = {}): Promise<DbKeyring<SigningKey>> {
  const vault = Pkcs11Vault.open(settings);
  try {
    return await DbKeyring.openWith(db, vault, opts);
  } catch (err) {
    vault.close();
    throw err;
  }
}
