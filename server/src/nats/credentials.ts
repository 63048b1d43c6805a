/**
 * NATS decentralized auth for Aegis: aegis-server is the operator, so that per-host
 * permissions need no rendered password file and a deactivated machine can be cut off at
 * once. It owns three nkeys (operator, system account, the AEGIS account), renders the
 * operator-mode fragment of nats-server's config, and signs user JWTs: one for itself and
 * one per activated machine, whose permissions name only that host's subjects (the lists
 * of protocol's nats_permissions.ts, the same scripts/nats-config renders for deploy/nats).
 *
 * Revocation: a deactivated machine's user keys go into the account JWT's `revocations`
 * (user public key → time; a user JWT issued at or before it is refused). The new account
 * JWT reaches nats-server two ways: pushed live on $SYS.REQ.ACCOUNT.<account>.CLAIMS.UPDATE
 * through the system account (nats-server then closes the revoked user's connections), and
 * written into the config fragment so a restarted nats-server keeps it (`resolver: MEMORY`
 * forgets pushes on restart). A config reload (SIGHUP) applies the fragment too, but
 * nats-server 2.9.10 closes every JWT user's connection on any reload (they reconnect), so
 * the push is the way to revoke on a running server.
 *
 * Keys live in one directory (0700; seeds 0600, written atomically). The issued and
 * revoked user keys live in the database (`db`: table nats_users), so every replica
 * issuing users of the account knows every other's: a revocation on one replica is in the
 * account JWT any replica signs next, and sync() (run every few seconds) rebuilds and
 * pushes the account JWT when another replica changed the revocations. Without `db`
 * (tools, single-process tests) they live in `state.json` in the key directory, and a
 * state.json found when the database holds none is imported once.
 */
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import {
  createAccount,
  createOperator,
  createUser,
  decode,
  encodeAccount,
  encodeOperator,
  encodeUser,
  fmtCreds,
  fromSeed,
  type Account,
  type KeyPair,
  type Permissions,
} from '@nats-io/jwt';
import { connect, type NatsConnection } from 'nats';
import type { Kysely } from 'kysely';
import type { Database } from '../db/schema.js';
import { accountPushNatsPermissions, agentNatsPermissions, isMachineId, serverNatsPermissions, subjects } from '../../../protocol/src/index.js';
import { writeFileAtomic } from '../../../runtime/src/atomic_file.js';
import type { SecretStore } from '../keys/keyring.js';
import { authConnectOptions, describeError as describe, type NatsTlsOptions } from '../../../runtime/src/nats_connection.js';

export type NatsAuthorityErrorCode = 'NATS_KEYS' | 'NATS_INSECURE_KEY_FILE' | 'NATS_STATE' | 'NATS_BAD_ARGUMENT' | 'NATS_PUSH_FAILED';

/** Every failure the authority raises on purpose; the underlying error is kept in `cause`. */
export class NatsAuthorityError extends Error {
  readonly code: NatsAuthorityErrorCode;
  constructor(code: NatsAuthorityErrorCode, message: string, opts: { cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'NatsAuthorityError';
    this.code = code;
  }
}

/** TLS to nats-server, as nats.js takes it (files are read by the client). */
export type { NatsTlsOptions };

export interface NatsAuthorityOptions {
  /** Key directory, e.g. `<keys-dir>/nats`; created 0700 with fresh keys on first use. */
  dir: string;
  /**
   * Where to keep the operator-mode config fragment (nats-server `include`s it). Rewritten
   * on open and on every revocation, so a nats-server restarted or reloaded
   * (`nats-server --signal reload`) refuses revoked users too.
   */
  configPath?: string;
  /** nats-server to push account updates to (live revocation). Without it, only configPath is updated. */
  push?: { url: string | string[]; tls?: NatsTlsOptions; timeoutMs?: number };
  /** Names in the JWTs (shown by nats-server). */
  operatorName?: string;
  accountName?: string;
  /** The shared database: the issued and revoked users live there (nats_users), not in state.json. */
  db?: Kysely<Database>;
  /** A database keyring's sealed store: the seeds live there instead of in `dir`. */
  seeds?: SecretStore;
}

export interface IssuedCredentials {
  /** A standard NATS .creds file (user JWT + user nkey seed): a secret, store it 0600. */
  creds: string;
  /** The user's nkey public key (U...): what revokeAgent takes. */
  userPublicKey: string;
  /** When the user JWT stops being accepted; null when it does not expire. */
  expiresAt: Date | null;
}

export interface AgentCredentialsRequest {
  /** The activation's machine id: the <machine> token of its subjects, and what revokeAgent(machineId) finds. */
  machineId: string;
  /** Its fleet: the license subject aegis.license.<fleet>. */
  fleet: string;
  /** The machine's hostname, a label for the user JWT's name and the issued records. */
  hostname?: string;
  /** Lifetime of the user JWT; omitted or 0: no expiry (revocation is what ends it). */
  ttlSeconds?: number;
}

export interface RevokeResult {
  /** User public keys newly revoked (empty when they already were). */
  revoked: string[];
  /** True when a nats-server confirmed the new account JWT (live connections are closed). */
  pushed: boolean;
  /** Why a needed push did not happen or failed; the revocation is recorded anyway. */
  pushError?: string;
}

interface IssuedRecord {
  pub: string;
  machineId: string;
  host: string;
  iat: number;
  /** Unix seconds; 0 for no expiry. */
  exp: number;
}

interface StateFile {
  version: 1;
  issued: IssuedRecord[];
  /** user public key → { at: revocation time, exp: the JWT's expiry, 0 for none } */
  revoked: Record<string, { at: number; exp: number }>;
}

const USER_KEY = /^U[A-Z2-7]{55}$/;
/** Unlimited, as nsc writes it; the AEGIS account needs JetStream for the snapshot stream. */
const ACCOUNT_LIMITS = { subs: -1, data: -1, payload: -1, imports: -1, exports: -1, wildcards: true, conn: -1, leaf: -1 };
const JETSTREAM_LIMITS = { mem_storage: -1, disk_storage: -1, streams: -1, consumer: -1 };
const te = new TextEncoder();
const td = new TextDecoder();

function nowSeconds(): number {
  return Math.floor(Date.now() / 1000);
}

/**
 * The permissions of an agent user (protocol's agentNatsPermissions): its own and the
 * fleet-wide snapshots, its fleet's license, its own reports and replies on its own
 * inbox. A machine that is not a machine id (a hostname, "_all") or a fleet that cannot be a
 * subject token is NATS_BAD_ARGUMENT.
 */
export function agentPermissions(machineId: string, fleet: string): Permissions {
  try {
    return agentNatsPermissions(machineId, fleet);
  } catch (cause) {
    throw new NatsAuthorityError('NATS_BAD_ARGUMENT', describe(cause), { cause });
  }
}

/** The server user (protocol's serverNatsPermissions): the only publisher of snapshots and licenses; manages the stream; reads reports. */
export function serverPermissions(): Permissions {
  return serverNatsPermissions();
}

/** Reads a seed file, refusing one that group or others can read. */
function readSeed(path: string): KeyPair {
  const mode = statSync(path).mode;
  if ((mode & 0o077) !== 0) {
    throw new NatsAuthorityError('NATS_INSECURE_KEY_FILE', `nkey seed ${path} has mode ${(mode & 0o777).toString(8)}; it must not be readable by group or others (chmod 600 ${path})`);
  }
  try {
    return fromSeed(te.encode(readFileSync(path, 'utf8').trim()));
  } catch (cause) {
    throw new NatsAuthorityError('NATS_KEYS', `${path} does not hold a valid nkey seed; restore it from backup (a new key would invalidate every issued NATS credential)`, { cause });
  }
}

function loadOrCreateSeed(dir: string, name: string, create: () => KeyPair, prefix: string): KeyPair {
  const path = join(dir, `${name}.nk`);
  if (existsSync(path)) {
    const kp = readSeed(path);
    if (!kp.getPublicKey().startsWith(prefix)) throw new NatsAuthorityError('NATS_KEYS', `${path} is not a${prefix === 'O' ? 'n operator' : 'n account'} nkey seed`);
    return kp;
  }
  const kp = create();
  writeFileAtomic(path, td.decode(kp.getSeed()) + '\n', 0o600);
  return kp;
}

/**
 * The same seeds in a database keyring (AEGIS_KEK_FILE), sealed: replicas starting at once
 * agree on the first writer's; a file seed from before is imported once.
 */
async function loadOrCreateSealedSeed(seeds: SecretStore, dir: string, name: string, create: () => KeyPair, prefix: string): Promise<KeyPair> {
  let stored = await seeds.get('nats', name);
  if (!stored) {
    const file = join(dir, `${name}.nk`);
    const kp = existsSync(file) ? readSeed(file) : create();
    stored = await seeds.putIfAbsent('nats', name, Buffer.from(kp.getSeed()), kp.getPublicKey());
  }
  let kp: KeyPair;
  try {
    kp = fromSeed(new Uint8Array(stored.secret));
  } catch (cause) {
    throw new NatsAuthorityError('NATS_KEYS', `keyring record nats/${name} does not hold a valid nkey seed`, { cause });
  }
  if (!kp.getPublicKey().startsWith(prefix)) throw new NatsAuthorityError('NATS_KEYS', `keyring record nats/${name} is not a${prefix === 'O' ? 'n operator' : 'n account'} nkey seed`);
  return kp;
}

function sortKeys(o: Record<string, number>): Array<[string, number]> {
  return Object.entries(o).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

/**
 * The operator and system account JWTs are written once and reused: nats-server refuses a
 * config reload whose operator JWT differs from the running one, even by its issue time.
 */
async function loadOrEncodeJwt(path: string, fits: (c: { sub: string; iss: string; nats: unknown }) => boolean, encode: () => Promise<string>): Promise<string> {
  if (existsSync(path)) {
    const jwt = readFileSync(path, 'utf8').trim();
    try {
      if (fits(decode(jwt))) return jwt;
    } catch {
      /* not a JWT: re-encode */
    }
  }
  const jwt = await encode();
  writeFileAtomic(path, jwt + '\n', 0o644);
  return jwt;
}

function readState(path: string): StateFile {
  if (!existsSync(path)) return { version: 1, issued: [], revoked: {} };
  try {
    const s = JSON.parse(readFileSync(path, 'utf8')) as Partial<StateFile>;
    if (s.version !== 1 || !Array.isArray(s.issued) || typeof s.revoked !== 'object' || s.revoked === null) throw new Error('unexpected layout');
    return { version: 1, issued: s.issued, revoked: s.revoked };
  } catch (cause) {
    throw new NatsAuthorityError('NATS_STATE', `${path} is not a valid NATS credential state file (${describe(cause)}); restore it from backup`, { cause });
  }
}

/**
 * Operator, accounts and credentials of Aegis's nats-server. All methods that change state
 * are serialized; the state file is rewritten atomically after each change.
 */
export class NatsAuthority {
  private queue: Promise<unknown> = Promise.resolve();
  private accountJwt = '';

  private constructor(
    private readonly opts: NatsAuthorityOptions,
    private readonly operator: KeyPair,
    private readonly system: KeyPair,
    private readonly account: KeyPair,
    private readonly operatorJwt: string,
    private readonly systemJwt: string,
    private state: StateFile,
  ) {}

  /** Opens the key directory, creating keys on first use, and writes the config fragment if configPath is set. */
  static async open(opts: NatsAuthorityOptions): Promise<NatsAuthority> {
    const dir = opts.dir;
    try {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
    } catch (cause) {
      throw new NatsAuthorityError('NATS_KEYS', `cannot create the NATS key directory ${dir}: ${describe(cause)}`, { cause });
    }
    const seed = (name: string, create: () => KeyPair, prefix: string) => (opts.seeds ? loadOrCreateSealedSeed(opts.seeds, dir, name, create, prefix) : loadOrCreateSeed(dir, name, create, prefix));
    const operator = await seed('operator', createOperator, 'O');
    const system = await seed('system_account', createAccount, 'A');
    const account = await seed('account', createAccount, 'A');
    const operatorJwt = await loadOrEncodeJwt(join(dir, 'operator.jwt'), (c) => c.sub === operator.getPublicKey() && (c.nats as { system_account?: string }).system_account === system.getPublicKey(), () =>
      encodeOperator(opts.operatorName ?? 'aegis', operator, { system_account: system.getPublicKey() }),
    );
    const systemJwt = await loadOrEncodeJwt(join(dir, 'system_account.jwt'), (c) => c.sub === system.getPublicKey() && c.iss === operator.getPublicKey(), () =>
      encodeAccount('SYS', system, { limits: ACCOUNT_LIMITS }, { signer: operator }),
    );
    const fileState = opts.db && !existsSync(join(dir, 'state.json')) ? { version: 1 as const, issued: [], revoked: {} } : readState(join(dir, 'state.json'));
    const a = new NatsAuthority(opts, operator, system, account, operatorJwt, systemJwt, fileState);
    a.prune();
    if (opts.db) await a.importAndLoad(fileState);
    const accountPath = join(dir, 'account.jwt');
    const stored = existsSync(accountPath) ? readFileSync(accountPath, 'utf8').trim() : '';
    if (stored && a.accountJwtCurrent(stored)) {
      a.accountJwt = stored;
      if (opts.configPath) writeFileAtomic(opts.configPath, a.renderServerConfig(), 0o644);
    } else {
      await a.rebuildAccount();
    }
    return a;
  }

  get operatorPublicKey(): string {
    return this.operator.getPublicKey();
  }
  get accountPublicKey(): string {
    return this.account.getPublicKey();
  }
  get systemAccountPublicKey(): string {
    return this.system.getPublicKey();
  }
  /** The current AEGIS account JWT (with the revocation list). */
  get currentAccountJwt(): string {
    return this.accountJwt;
  }

  /** Revoked user keys and since when (unix seconds), as in the account JWT. */
  revocations(): Record<string, number> {
    return Object.fromEntries(Object.entries(this.state.revoked).map(([k, v]) => [k, v.at]));
  }

  /**
   * The operator-mode part of nats-server's config: trusted operator, system account and
   * both account JWTs preloaded into a memory resolver. Public material only (JWTs carry
   * no secrets). Put it next to listen/jetstream/tls, or `include` the configPath file.
   */
  renderServerConfig(): string {
    return [
      `# Aegis NATS operator mode, written by aegis-server (NatsAuthority); do not edit.`,
      `# Public JWTs only. Revocations change the account JWT: a restart or reload picks them up.`,
      `operator: ${this.operatorJwt}`,
      `system_account: ${this.system.getPublicKey()}`,
      `resolver: MEMORY`,
      `resolver_preload: {`,
      `  # SYS`,
      `  ${this.system.getPublicKey()}: ${this.systemJwt}`,
      `  # ${this.opts.accountName ?? 'AEGIS'}`,
      `  ${this.account.getPublicKey()}: ${this.accountJwt}`,
      `}`,
      '',
    ].join('\n');
  }

  /** Credentials for aegis-server's own connection (ServerBus); no expiry unless ttlSeconds. */
  async issueServerCredentials(opts: { ttlSeconds?: number; name?: string } = {}): Promise<IssuedCredentials> {
    return this.issue(opts.name ?? 'aegis-server', serverPermissions(), opts.ttlSeconds, null);
  }

  /**
   * Credentials for one activated machine: a fresh user key whose JWT allows only the
   * host's own subjects (agentPermissions). Hand `creds` to the agent (it is a secret)
   * and keep `userPublicKey` with the activation to revoke it later.
   */
  async issueAgentCredentials(req: AgentCredentialsRequest): Promise<IssuedCredentials> {
    if (!isMachineId(req.machineId)) {
      throw new NatsAuthorityError('NATS_BAD_ARGUMENT', `machineId ${JSON.stringify(req.machineId)} is not a machine id (a lowercase UUID): it names the user's subjects`);
    }
    const perms = agentPermissions(req.machineId, req.fleet);
    const host = req.hostname ?? req.machineId;
    return this.issue(`agent ${host} (${req.machineId})`, perms, req.ttlSeconds, { machineId: req.machineId, host });
  }

  /**
   * Whether machine `machineId` should get fresh credentials: it holds none that are
   * unrevoked and more than half their lifetime from expiry (renewing only then keeps a
   * handful of live users per machine however often it refreshes).
   */
  async needsRenewal(machineId: string): Promise<boolean> {
    if (this.opts.db) await this.load();
    const now = nowSeconds();
    return !this.state.issued.some(
      (r) => r.machineId === machineId && this.state.revoked[r.pub] === undefined && (r.exp === 0 || r.exp - now > (r.exp - r.iat) / 2),
    );
  }

  private async issue(name: string, perms: Permissions, ttlSeconds: number | undefined, agent: { machineId: string; host: string } | null): Promise<IssuedCredentials> {
    if (ttlSeconds !== undefined && (!Number.isSafeInteger(ttlSeconds) || ttlSeconds < 0)) {
      throw new NatsAuthorityError('NATS_BAD_ARGUMENT', `ttlSeconds must be a non-negative integer, got ${ttlSeconds}`);
    }
    const user = createUser();
    const exp = ttlSeconds ? nowSeconds() + ttlSeconds : 0;
    const jwt = await encodeUser(
      name,
      user,
      this.account,
      { ...perms, bearer_token: false, allowed_connection_types: ['STANDARD'] },
      exp ? { exp } : {},
    );
    const pub = user.getPublicKey();
    if (agent) {
      const iat = decode(jwt).iat;
      await this.serialized(async () => {
        this.prune();
        const rec = { pub, machineId: agent.machineId, host: agent.host, iat, exp };
        this.state.issued.push(rec);
        if (this.opts.db) {
          await this.opts.db.insertInto('nats_users').values({ user_key: pub, machine_id: rec.machineId, host: rec.host, issued_at: iat, expires_at: exp, revoked_at: null }).execute();
        } else this.saveState();
      });
    }
    return { creds: td.decode(fmtCreds(jwt, user)), userPublicKey: pub, expiresAt: exp ? new Date(exp * 1000) : null };
  }

  /**
   * Revokes a machine's NATS users: by user public key (U...), or by machine id (every key
   * issued to it). The account JWT is re-signed with the revocation, written to configPath
   * and pushed to nats-server, which then refuses the user and closes its connections. A
   * failed push is reported in the result, not thrown: the revocation stands and reaches
   * nats-server on the next pushAccount() or config reload.
   */
  async revokeAgent(userPublicKeyOrMachineId: string): Promise<RevokeResult> {
    const target = userPublicKeyOrMachineId;
    const revoked = await this.serialized(async () => {
      if (this.opts.db) return this.revokeInDb(target);
      let keys: Array<{ pub: string; exp: number }>;
      if (USER_KEY.test(target)) {
        const rec = this.state.issued.find((r) => r.pub === target);
        keys = [{ pub: target, exp: rec?.exp ?? 0 }];
      } else {
        // A machine with no credentials (activated before NATS credentials existed, or
        // already revoked) has nothing to revoke: deactivation must not fail on it.
        keys = this.state.issued.filter((r) => r.machineId === target).map((r) => ({ pub: r.pub, exp: r.exp }));
      }
      const at = nowSeconds();
      const fresh = keys.filter((k) => this.state.revoked[k.pub] === undefined);
      for (const k of fresh) this.state.revoked[k.pub] = { at, exp: k.exp };
      this.state.issued = this.state.issued.filter((r) => this.state.revoked[r.pub] === undefined);
      this.prune();
      this.saveState();
      if (fresh.length > 0) await this.rebuildAccount();
      return fresh.map((k) => k.pub);
    });
    if (revoked.length === 0) return { revoked, pushed: false };
    if (!this.opts.push) return { revoked, pushed: false, pushError: 'no nats-server to push to (push option not set)' };
    try {
      await this.pushAccount();
      return { revoked, pushed: true };
    } catch (err) {
      return { revoked, pushed: false, pushError: describe(err) };
    }
  }

  /**
   * Sends the current account JWT to nats-server through the system account and waits for
   * its confirmation. Call it after nats-server restarts from an older config fragment.
   */
  async pushAccount(): Promise<void> {
    const push = this.opts.push;
    if (!push) throw new NatsAuthorityError('NATS_PUSH_FAILED', 'no nats-server to push to (push option not set)');
    const user = createUser();
    const jwt = await encodeUser('aegis-server account push', user, this.system, accountPushNatsPermissions(), { exp: nowSeconds() + 300 });
    const timeout = push.timeoutMs ?? 5000;
    let nc: NatsConnection;
    try {
      nc = await connect({
        servers: push.url,
        ...authConnectOptions({ creds: td.decode(fmtCreds(jwt, user)) }, push.tls),
        name: 'aegis-server account push',
        maxReconnectAttempts: 0,
        timeout,
      });
    } catch (cause) {
      throw new NatsAuthorityError('NATS_PUSH_FAILED', `cannot connect to nats-server as the system account to push the account JWT: ${describe(cause)}`, { cause });
    }
    try {
      const subject = subjects.accountClaimsUpdate(this.account.getPublicKey());
      const reply = await nc.request(subject, te.encode(this.accountJwt), { timeout });
      const body = JSON.parse(td.decode(reply.data)) as { data?: { code?: number; message?: string }; error?: { code?: number; description?: string } };
      if (body.error || body.data?.code !== 200) {
        throw new Error(body.error?.description ?? body.data?.message ?? td.decode(reply.data));
      }
    } catch (cause) {
      if (cause instanceof NatsAuthorityError) throw cause;
      throw new NatsAuthorityError('NATS_PUSH_FAILED', `nats-server did not accept the account JWT: ${describe(cause)}`, { cause });
    } finally {
      await nc.close();
    }
  }

  /**
   * Revokes in the database: the UPDATE .. WHERE revoked_at IS NULL decides which keys
   * this call newly revoked (two replicas revoking the same machine do not both count it);
   * then the account JWT is rebuilt from every replica's revocations.
   */
  private async revokeInDb(target: string): Promise<string[]> {
    const db = this.opts.db!;
    const at = nowSeconds();
    let fresh: string[];
    if (USER_KEY.test(target)) {
      await db.insertInto('nats_users').values({ user_key: target, machine_id: '', host: '', issued_at: at, expires_at: 0, revoked_at: null }).onConflict((oc) => oc.column('user_key').doNothing()).execute();
      fresh = (await db.updateTable('nats_users').set({ revoked_at: at }).where('user_key', '=', target).where('revoked_at', 'is', null).returning('user_key').execute()).map((r) => r.user_key);
    } else {
      fresh = (await db.updateTable('nats_users').set({ revoked_at: at }).where('machine_id', '=', target).where('revoked_at', 'is', null).returning('user_key').execute()).map((r) => r.user_key);
    }
    await this.load();
    if (fresh.length > 0 || !this.accountJwtCurrent(this.accountJwt)) await this.rebuildAccount();
    return fresh;
  }

  /** Reads the unexpired issued and revoked users from the database into the cache. */
  private async load(): Promise<void> {
    const now = nowSeconds();
    const rows = await this.opts
      .db!.selectFrom('nats_users')
      .selectAll()
      .where((eb) => eb.or([eb('expires_at', '=', 0), eb('expires_at', '>', now)]))
      .execute();
    const issued: IssuedRecord[] = [];
    const revoked: StateFile['revoked'] = {};
    for (const r of rows) {
      const exp = Number(r.expires_at);
      if (r.revoked_at === null) issued.push({ pub: r.user_key, machineId: r.machine_id, host: r.host, iat: Number(r.issued_at), exp });
      else revoked[r.user_key] = { at: Number(r.revoked_at), exp };
    }
    this.state = { version: 1, issued, revoked };
  }

  /** On open with a database: a state.json of before takes the database's place once, then the database is read. */
  private async importAndLoad(file: StateFile): Promise<void> {
    const db = this.opts.db!;
    const any = await db.selectFrom('nats_users').select('user_key').limit(1).executeTakeFirst();
    if (!any && (file.issued.length > 0 || Object.keys(file.revoked).length > 0)) {
      await db.transaction().execute(async (tx) => {
        for (const r of file.issued) await tx.insertInto('nats_users').values({ user_key: r.pub, machine_id: r.machineId, host: r.host, issued_at: r.iat, expires_at: r.exp, revoked_at: null }).onConflict((oc) => oc.column('user_key').doNothing()).execute();
        for (const [k, v] of Object.entries(file.revoked)) {
          await tx.insertInto('nats_users').values({ user_key: k, machine_id: '', host: '', issued_at: v.at, expires_at: v.exp, revoked_at: v.at }).onConflict((oc) => oc.column('user_key').doUpdateSet({ revoked_at: v.at })).execute();
        }
      });
    }
    await this.load();
  }

  /**
   * Catches up with the other replicas (database only): when the revocations in the
   * database are not those of the current account JWT, re-signs it, writes the config
   * fragment and pushes it. Forgets expired users. Whether it changed anything.
   */
  async sync(): Promise<boolean> {
    const db = this.opts.db;
    if (!db) return false;
    return this.serialized(async () => {
      const now = nowSeconds();
      await db.deleteFrom('nats_users').where('expires_at', '<>', 0).where('expires_at', '<=', now).execute();
      await this.load();
      if (this.accountJwtCurrent(this.accountJwt)) return false;
      await this.rebuildAccount();
      if (this.opts.push) await this.pushAccount();
      return true;
    });
  }

  /** True when `jwt` is this account's, signed by this operator, with exactly the current revocations. */
  private accountJwtCurrent(jwt: string): boolean {
    try {
      const c = decode<Account>(jwt);
      const rev = c.nats.revocations ?? {};
      return c.sub === this.account.getPublicKey() && c.iss === this.operator.getPublicKey() && JSON.stringify(sortKeys(rev)) === JSON.stringify(sortKeys(this.revocations()));
    } catch {
      return false;
    }
  }

  private async rebuildAccount(): Promise<void> {
    const account: Partial<Account> = { limits: { ...ACCOUNT_LIMITS, ...JETSTREAM_LIMITS } };
    const rev = this.revocations();
    if (Object.keys(rev).length > 0) account.revocations = rev;
    this.accountJwt = await encodeAccount(this.opts.accountName ?? 'AEGIS', this.account, account, { signer: this.operator });
    writeFileAtomic(join(this.opts.dir, 'account.jwt'), this.accountJwt + '\n', 0o644);
    if (this.opts.configPath) writeFileAtomic(this.opts.configPath, this.renderServerConfig(), 0o644);
  }

  /** Forgets expired records: an expired user JWT is refused without a revocation entry (the database's are dropped by sync()). */
  private prune(): void {
    const now = nowSeconds();
    this.state.issued = this.state.issued.filter((r) => r.exp === 0 || r.exp > now);
    for (const [k, v] of Object.entries(this.state.revoked)) if (v.exp !== 0 && v.exp <= now) delete this.state.revoked[k];
  }

  private saveState(): void {
    try {
      writeFileAtomic(join(this.opts.dir, 'state.json'), JSON.stringify(this.state, null, 1) + '\n', 0o600);
    } catch (cause) {
      throw new NatsAuthorityError('NATS_STATE', `cannot write ${join(this.opts.dir, 'state.json')}: ${describe(cause)}`, { cause });
    }
  }

  private serialized<T>(fn: () => T | Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }
}
