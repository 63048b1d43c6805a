/**
 * The database keyring: every replica's signing keys, and the other secrets (NATS seeds,
 * the CA key), in `keyring_keys`, each private part sealed with AES-256-GCM under the
 * key-encryption key (KEK) read from AEGIS_KEK_FILE. The KEK is never stored.
 *
 * A sealed record is `v1.` + base64(nonce(12) ‖ ciphertext ‖ tag(16)), a fresh random nonce
 * per write, with the record's identity (kind, kid) as additional authenticated data: a
 * ciphertext moved to another row, tampered with, or opened under another KEK fails to
 * decrypt, and the keyring refuses it (fail closed). A `kek/check` record, written with
 * the first key, makes a wrong KEK a refusal at start even before any key is needed.
 *
 * `keyring_state` (one row) holds the active kid and a generation counter bumped by every
 * change. Each replica serves signing and verification from memory and re-reads the rows
 * when the generation it polls (every AEGIS_KEYRING_POLL_MS) has moved, or at once (in the
 * background) when asked for a kid it does not know. So a rotation on one replica is used
 * by the others within one poll interval, without a restart.
 *
 * What holds the private halves is a `KeyVault`: the KEK here (`KekVault`), or a PKCS#11
 * token (pkcs11_keyring.ts), where the row keeps only a reference and the key never leaves
 * the token. State, generation, polling and the secrets' rows are the same for both.
 */
import { createCipheriv, createDecipheriv, createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { sql, type Kysely } from 'kysely';
import { AegisError, publicJwkOf } from '../../../protocol/src/index.js';
import type { Database } from '../db/schema.js';
import type { Jwks, Keyring, SecretStore } from './keyring.js';
import { KID_PATTERN, softwareSigningKey, type KeyInfo, type SigningKey, type SoftwareSigningKey } from './keystore.js';

export const KEK_BYTES = 32;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
export const SIGNING = 'signing';
const KEK_CHECK = { kind: 'kek', kid: 'check', plaintext: 'aegis keyring kek check v1' };
/** Kinds of the one check record per database, one per vault: kid `check`, never a secret. */
export const CHECK_KINDS = ['kek', 'hsm'] as const;

/**
 * Reads the KEK: exactly 32 bytes, in a regular file owned by this process's user and
 * readable by nobody else. Anything else is a refusal to start.
 */
export function loadKek(path: string): Buffer {
  let st;
  try {
    st = statSync(path);
  } catch (cause) {
    throw new AegisError('SIGNING_KEY_UNAVAILABLE', `AEGIS_KEK_FILE ${path} cannot be read: ${(cause as Error).message}`, { cause });
  }
  if (!st.isFile()) throw new AegisError('SIGNING_KEY_UNAVAILABLE', `AEGIS_KEK_FILE ${path} is not a regular file`);
  if ((st.mode & 0o077) !== 0) {
    throw new AegisError(
      'INSECURE_KEY_FILE',
      `AEGIS_KEK_FILE ${path} has mode ${(st.mode & 0o777).toString(8)}; it must not be readable by group or others (chmod 600 ${path})`,
    );
  }
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid) {
    throw new AegisError('INSECURE_KEY_FILE', `AEGIS_KEK_FILE ${path} is owned by uid ${st.uid}, not by the server's user (uid ${uid}); chown it`);
  }
  const kek = readFileSync(path);
  if (kek.length !== KEK_BYTES) {
    throw new AegisError('SIGNING_KEY_UNAVAILABLE', `AEGIS_KEK_FILE ${path} holds ${kek.length} bytes; it must hold exactly ${KEK_BYTES} random bytes (head -c 32 /dev/urandom)`);
  }
  return kek;
}

function aad(kind: string, kid: string): Buffer {
  return Buffer.from(`aegis-keyring/v1\0${kind}\0${kid}`, 'utf8');
}

export function seal(kek: Buffer, kind: string, kid: string, plaintext: Buffer): string {
  const nonce = randomBytes(NONCE_BYTES);
  const c = createCipheriv('aes-256-gcm', kek, nonce);
  c.setAAD(aad(kind, kid));
  const body = Buffer.concat([c.update(plaintext), c.final()]);
  return 'v1.' + Buffer.concat([nonce, body, c.getAuthTag()]).toString('base64');
}

export function unseal(kek: Buffer, kind: string, kid: string, sealed: string): Buffer {
  const refuse = (why: string) =>
    new AegisError(
      'SIGNING_KEY_UNAVAILABLE',
      `keyring record ${kind}/${kid} does not decrypt (${why}): tampered with, moved from another row, or sealed under another AEGIS_KEK_FILE; refusing it`,
    );
  if (typeof sealed !== 'string' || !sealed.startsWith('v1.')) throw refuse('unknown format');
  const raw = Buffer.from(sealed.slice(3), 'base64');
  if (raw.length < NONCE_BYTES + TAG_BYTES + 1) throw refuse('too short');
  const d = createDecipheriv('aes-256-gcm', kek, raw.subarray(0, NONCE_BYTES));
  d.setAAD(aad(kind, kid));
  d.setAuthTag(raw.subarray(raw.length - TAG_BYTES));
  try {
    return Buffer.concat([d.update(raw.subarray(NONCE_BYTES, raw.length - TAG_BYTES)), d.final()]);
  } catch {
    throw refuse('authentication failed');
  }
}

/**
 * Where a database keyring's private halves are: sealed in the row under a KEK, or in a
 * PKCS#11 token (the row then names the token object). Secrets are sealed by the vault.
 */
export interface KeyVault<K extends SigningKey> {
  readonly description: string;
  /** The kind of this vault's check record (one of CHECK_KINDS). */
  readonly checkKind: (typeof CHECK_KINDS)[number];
  /** Checks this vault against the database's check record, writing it on first use. */
  check(db: Kysely<Database>): Promise<void>;
  seal(kind: string, kid: string, plaintext: Buffer): string;
  unseal(kind: string, kid: string, sealed: string): Buffer;
  /** A new Ed25519 pair named kid: its public half, what the row stores, and how to undo it if the row is not written. */
  createSigningKey(kid: string): { publicKey: KeyObject; sealed: string; discard(): void };
  /** The signer of a row; throws (fail closed) when it does not open or its public half is not `publicKey`. */
  openSigningKey(kid: string, publicKey: KeyObject, sealed: string): K;
  /** Kids the vault holds keys under besides the rows' (leftovers of a crash): never reused for a new key. */
  heldKids(): Set<string>;
  close(): void;
}

/** The KEK vault: each private key sealed (AES-256-GCM) in its row. */
export class KekVault implements KeyVault<SoftwareSigningKey> {
  readonly description = 'database keyring (AEGIS_KEK_FILE)';
  readonly checkKind = 'kek';
  constructor(private readonly kek: Buffer) {
    if (kek.length !== KEK_BYTES) throw new AegisError('SIGNING_KEY_UNAVAILABLE', `the KEK must be ${KEK_BYTES} bytes`);
  }

  /** The check record: written once, then every open must decrypt it. */
  async check(db: Kysely<Database>): Promise<void> {
    const row = await db.selectFrom('keyring_keys').select('sealed').where('kind', '=', KEK_CHECK.kind).where('kid', '=', KEK_CHECK.kid).executeTakeFirst();
    if (!row) {
      await db
        .insertInto('keyring_keys')
        .values({ kind: KEK_CHECK.kind, kid: KEK_CHECK.kid, public_pem: null, sealed: this.seal(KEK_CHECK.kind, KEK_CHECK.kid, Buffer.from(KEK_CHECK.plaintext)), created_at: new Date().toISOString(), retired_at: null })
        .onConflict((oc) => oc.columns(['kind', 'kid']).doNothing())
        .execute();
      return this.check(db);
    }
    let plain: Buffer;
    try {
      plain = this.unseal(KEK_CHECK.kind, KEK_CHECK.kid, row.sealed);
    } catch {
      throw new AegisError('SIGNING_KEY_UNAVAILABLE', "AEGIS_KEK_FILE is not this database's key-encryption key (its check record does not decrypt); refusing to start");
    }
    if (plain.toString() !== KEK_CHECK.plaintext) throw new AegisError('SIGNING_KEY_UNAVAILABLE', 'the keyring check record is corrupt; refusing to start');
  }

  seal(kind: string, kid: string, plaintext: Buffer): string {
    return seal(this.kek, kind, kid, plaintext);
  }
  unseal(kind: string, kid: string, sealed: string): Buffer {
    return unseal(this.kek, kind, kid, sealed);
  }

  createSigningKey(kid: string): { publicKey: KeyObject; sealed: string; discard(): void } {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    return { publicKey, sealed: this.seal(SIGNING, kid, privateKey.export({ type: 'pkcs8', format: 'der' })), discard: () => {} };
  }

  openSigningKey(kid: string, publicKey: KeyObject, sealed: string): SoftwareSigningKey {
    const privateKey = createPrivateKey({ key: this.unseal(SIGNING, kid, sealed), format: 'der', type: 'pkcs8' });
    const derived = createPublicKey(privateKey).export({ format: 'der', type: 'spki' });
    if (privateKey.asymmetricKeyType !== 'ed25519' || !derived.equals(publicKey.export({ format: 'der', type: 'spki' }))) {
      throw new AegisError('SIGNING_KEY_UNAVAILABLE', `keyring row ${SIGNING}/${kid}: the public key does not belong to the sealed private key; refusing it`);
    }
    return softwareSigningKey(kid, privateKey);
  }

  heldKids(): Set<string> {
    return new Set();
  }
  close(): void {}
}

interface Entry<K> {
  kid: string;
  publicKey: KeyObject;
  signer: K | null; // null once retired (never opened again)
  createdAt: string;
  retiredAt: string | null;
}

interface Snapshot<K> {
  generation: number;
  active: string | null;
  entries: Map<string, Entry<K>>;
}

export interface DbKeyringOptions {
  /** How often to poll the generation (ms); 0: never (CLI use). */
  pollMs?: number;
  /** Told about a failed background refresh (the old keys stay in use). */
  onError?: (err: unknown) => void;
}

export class DbKeyring<K extends SigningKey = SoftwareSigningKey> implements Keyring {
  readonly secrets: SecretStore;
  private snap: Snapshot<K>;
  private timer: NodeJS.Timeout | null = null;
  private refreshing: Promise<void> | null = null;
  private lastUnknownRefresh = 0;

  private constructor(
    private readonly db: Kysely<Database>,
    private readonly vault: KeyVault<K>,
    snap: Snapshot<K>,
    private readonly opts: DbKeyringOptions,
  ) {
    this.snap = snap;
    this.secrets = {
      get: (kind, name) => this.getSecret(kind, name),
      putIfAbsent: (kind, name, secret, pub) => this.putSecret(kind, name, secret, pub, false),
      put: async (kind, name, secret, pub) => {
        await this.putSecret(kind, name, secret, pub, true);
      },
    };
  }

  get description(): string {
    return this.vault.description;
  }

  /** Opens the keyring in a migrated database, checking the KEK against it. */
  static async open(db: Kysely<Database>, kek: Buffer, opts: DbKeyringOptions = {}): Promise<DbKeyring<SoftwareSigningKey>> {
    return DbKeyring.openWith(db, new KekVault(kek), opts);
  }

  /** Opens the keyring with its private halves in `vault` (checked against the database first). */
  static async openWith<K extends SigningKey>(db: Kysely<Database>, vault: KeyVault<K>, opts: DbKeyringOptions = {}): Promise<DbKeyring<K>> {
    const other = await db.selectFrom('keyring_keys').select('kind').where('kind', 'in', CHECK_KINDS.filter((k) => k !== vault.checkKind)).where('kid', '=', 'check').executeTakeFirst();
    if (other) {
      throw new AegisError(
        'SIGNING_KEY_UNAVAILABLE',
        other.kind === 'hsm'
          ? "this database's keyring is held in a PKCS#11 token: configure AEGIS_PKCS11_MODULE, AEGIS_PKCS11_TOKEN_LABEL and AEGIS_PKCS11_PIN_FILE, not AEGIS_KEK_FILE; refusing to start"
          : "this database's keyring is sealed under AEGIS_KEK_FILE, not held in a PKCS#11 token; refusing to start",
      );
    }
    await vault.check(db);
    const ring = new DbKeyring<K>(db, vault, await DbKeyring.load(db, vault), opts);
    if (opts.pollMs && opts.pollMs > 0) {
      ring.timer = setInterval(() => void ring.refreshIfChanged(), opts.pollMs);
      ring.timer.unref();
    }
    return ring;
  }

  private static async load<K extends SigningKey>(db: Kysely<Database>, vault: KeyVault<K>): Promise<Snapshot<K>> {
    const state = await db.selectFrom('keyring_state').selectAll().where('id', '=', 1).executeTakeFirst();
    const rows = await db.selectFrom('keyring_keys').selectAll().where('kind', '=', SIGNING).orderBy('kid').execute();
    const entries = new Map<string, Entry<K>>();
    for (const r of rows) {
      if (!KID_PATTERN.test(r.kid) || r.public_pem === null) throw new AegisError('SIGNING_KEY_UNAVAILABLE', `keyring row ${r.kind}/${r.kid} is malformed`);
      const publicKey = createPublicKey(r.public_pem);
      // Fail closed: a non-retired key whose private half does not open stops the load.
      const signer = r.retired_at === null ? vault.openSigningKey(r.kid, publicKey, r.sealed) : null;
      entries.set(r.kid, { kid: r.kid, publicKey, signer, createdAt: r.created_at, retiredAt: r.retired_at });
    }
    const active = state?.active_kid ?? null;
    if (active !== null && !entries.get(active)?.signer) throw new AegisError('SIGNING_KEY_UNAVAILABLE', `the active key ${active} is missing from the keyring`);
    return { generation: Number(state?.generation ?? 0), active, entries };
  }

  /** One cheap read of the generation; a full reload only when it moved. */
  async refreshIfChanged(): Promise<void> {
    if (this.refreshing) return this.refreshing;
    this.refreshing = (async () => {
      try {
        const state = await this.db.selectFrom('keyring_state').select('generation').where('id', '=', 1).executeTakeFirst();
        if (Number(state?.generation ?? 0) !== this.snap.generation) this.snap = await DbKeyring.load(this.db, this.vault);
      } catch (err) {
        this.opts.onError?.(err);
      } finally {
        this.refreshing = null;
      }
    })();
    return this.refreshing;
  }

  /** Re-reads everything now (after this replica changed it, or for a test). */
  async reload(): Promise<void> {
    this.snap = await DbKeyring.load(this.db, this.vault);
  }

  generation(): number {
    return this.snap.generation;
  }
  kids(): string[] {
    return [...this.snap.entries.keys()].sort();
  }
  activeKid(): string | null {
    return this.snap.active;
  }
  isRetired(kid: string): boolean {
    return this.snap.entries.get(kid)?.retiredAt != null;
  }
  info(kid: string): KeyInfo {
    const e = this.snap.entries.get(kid);
    if (!e) throw new AegisError('NOT_FOUND', `no key ${kid}`);
    return {
      kid,
      active: this.snap.active === kid,
      retired: e.retiredAt !== null,
      retired_at: e.retiredAt,
      created_at: e.createdAt,
      public_jwk: publicJwkOf(e.publicKey),
    };
  }
  list(): KeyInfo[] {
    return this.kids().map((k) => this.info(k));
  }

  verificationKey(kid: string): KeyObject | null {
    const e = this.snap.entries.get(kid);
    return e && e.retiredAt === null ? e.publicKey : null;
  }

  /**
   * A kid this replica does not know: perhaps another replica rotated since the last poll.
   * Looks now, at most once a second, so a flood of made-up kids costs one query a second.
   */
  async refreshForUnknownKid(kid: string): Promise<void> {
    if (this.snap.entries.has(kid) || !KID_PATTERN.test(kid) || Date.now() - this.lastUnknownRefresh < 1000) return;
    this.lastUnknownRefresh = Date.now();
    await this.refreshIfChanged();
  }

  signingKey(): K {
    const kid = this.snap.active;
    const e = kid === null ? undefined : this.snap.entries.get(kid);
    if (!e?.signer) throw new AegisError('SIGNING_KEY_UNAVAILABLE', `no signing key in the ${this.vault.description}; run "aegis-server keys generate"`);
    return e.signer;
  }

  verifyingSigningKeys(): K[] {
    const active = this.snap.active;
    const all = [...this.snap.entries.values()].flatMap((e) => (e.signer !== null ? [e.signer] : []));
    return [...all.filter((k) => k.kid === active), ...all.filter((k) => k.kid !== active)];
  }

  jwks(): Jwks {
    return {
      keys: this.kids()
        .filter((k) => !this.isRetired(k))
        .map((kid) => ({ ...publicJwkOf(this.snap.entries.get(kid)!.publicKey), kid, alg: 'EdDSA' as const, use: 'sig' as const })),
    };
  }

  /**
   * One change to the key set, in a transaction that first bumps the generation (so on
   * PostgreSQL concurrent changes queue on the state row's lock), then reloads.
   */
  private async change(fn: (trx: Kysely<Database>, state: { active: string | null }, undo: Array<() => void>) => Promise<string>): Promise<KeyInfo> {
    // A key made in the vault (a token object) whose row does not commit is destroyed again.
    const undo: Array<() => void> = [];
    const kid = await this.db.transaction().execute(async (trx) => {
      await trx
        .insertInto('keyring_state')
        .values({ id: 1, generation: 0, active_kid: null })
        .onConflict((oc) => oc.column('id').doNothing())
        .execute();
      await trx.updateTable('keyring_state').set({ generation: sql`generation + 1` }).where('id', '=', 1).execute();
      const state = await trx.selectFrom('keyring_state').select('active_kid').where('id', '=', 1).executeTakeFirstOrThrow();
      return fn(trx, { active: state.active_kid }, undo);
    }).catch((err: unknown) => {
      for (const discard of undo) discard();
      throw err;
    });
    await this.reload();
    return this.info(kid);
  }

  private async nextKid(trx: Kysely<Database>, now = new Date()): Promise<string> {
    const year = now.getUTCFullYear();
    const taken = new Set([...(await trx.selectFrom('keyring_keys').select('kid').where('kind', '=', SIGNING).execute()).map((r) => r.kid), ...this.vault.heldKids()]);
    for (let n = 1; n < 100; n++) {
      const kid = `aegis-${year}-${String(n).padStart(2, '0')}`;
      if (!taken.has(kid)) return kid;
    }
    throw new AegisError('CONFLICT', `no free kid left for ${year}`);
  }

  private async insertNew(trx: Kysely<Database>, kid: string | undefined, undo: Array<() => void>): Promise<string> {
    const id = kid ?? (await this.nextKid(trx));
    if (!KID_PATTERN.test(id)) throw new AegisError('BAD_REQUEST', `invalid kid ${JSON.stringify(id)}: use letters, digits, '.', '_' and '-'`);
    const exists = await trx.selectFrom('keyring_keys').select('kid').where('kind', '=', SIGNING).where('kid', '=', id).executeTakeFirst();
    if (exists) throw new AegisError('CONFLICT', `key ${id} already exists`);
    const made = this.vault.createSigningKey(id);
    undo.push(made.discard);
    await trx
      .insertInto('keyring_keys')
      .values({
        kind: SIGNING,
        kid: id,
        public_pem: made.publicKey.export({ type: 'spki', format: 'pem' }) as string,
        sealed: made.sealed,
        created_at: new Date().toISOString(),
        retired_at: null,
      })
      .execute();
    return id;
  }

  /** Generates a key pair; the first one becomes active. */
  generate(kid?: string): Promise<KeyInfo> {
    return this.change(async (trx, state, undo) => {
      const id = await this.insertNew(trx, kid, undo);
      if (state.active === null) await trx.updateTable('keyring_state').set({ active_kid: id }).where('id', '=', 1).execute();
      return id;
    });
  }

  /** Generates a key and makes it the signing key, unless `onlyIfNone` and one is active (first start of several replicas). */
  rotate(kid?: string, onlyIfNone = false): Promise<KeyInfo> {
    return this.change(async (trx, state, undo) => {
      if (onlyIfNone && state.active !== null) return state.active;
      const id = await this.insertNew(trx, kid, undo);
      await trx.updateTable('keyring_state').set({ active_kid: id }).where('id', '=', 1).execute();
      return id;
    });
  }

  /** Retires a key: it leaves the JWKS, stops verifying, and its sealed half is never opened again. */
  retire(kid: string): Promise<KeyInfo> {
    return this.change(async (trx, state) => {
      const row = await trx.selectFrom('keyring_keys').select(['kid', 'retired_at']).where('kind', '=', SIGNING).where('kid', '=', kid).executeTakeFirst();
      if (!row) throw new AegisError('NOT_FOUND', `no key ${kid}`);
      if (state.active === kid) throw new AegisError('CONFLICT', `${kid} is the active signing key; run "keys rotate" first`);
      if (row.retired_at === null) await trx.updateTable('keyring_keys').set({ retired_at: new Date().toISOString() }).where('kind', '=', SIGNING).where('kid', '=', kid).execute();
      return kid;
    });
  }

  private async getSecret(kind: string, name: string): Promise<{ secret: Buffer; public: string | null } | null> {
    const row = await this.db.selectFrom('keyring_keys').select(['sealed', 'public_pem']).where('kind', '=', kind).where('kid', '=', name).executeTakeFirst();
    if (!row) return null;
    return { secret: this.vault.unseal(kind, name, row.sealed), public: row.public_pem };
  }

  private async putSecret(kind: string, name: string, secret: Buffer, pub: string | null, replace: boolean): Promise<{ secret: Buffer; public: string | null }> {
    if (kind === SIGNING || (CHECK_KINDS as readonly string[]).includes(kind)) throw new AegisError('BAD_REQUEST', `${kind} records are not secrets`);
    const values = { kind, kid: name, public_pem: pub, sealed: this.vault.seal(kind, name, secret), created_at: new Date().toISOString(), retired_at: null };
    await this.db
      .insertInto('keyring_keys')
      .values(values)
      .onConflict((oc) => (replace ? oc.columns(['kind', 'kid']).doUpdateSet({ public_pem: pub, sealed: values.sealed, created_at: values.created_at }) : oc.columns(['kind', 'kid']).doNothing()))
      .execute();
    const stored = await this.getSecret(kind, name);
    if (!stored) throw new AegisError('SIGNING_KEY_UNAVAILABLE', `keyring record ${kind}/${name} vanished`);
    return stored;
  }

  /** Stops polling and closes the vault (a token session). */
  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.vault.close();
  }
}
