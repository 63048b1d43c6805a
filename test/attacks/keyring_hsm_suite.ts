/**
 * The PKCS#11 keyring (AEGIS_PKCS11_*) against Debian's SoftHSM, with tokens this suite
 * initialises in a temporary token directory: `aegis-server keys generate|rotate|retire|list`
 * on the token; tokens and the signed key set signed in the token verify with node:crypto
 * against the JWKS; the private key cannot be read out of the token (the attack: ask for
 * CKA_VALUE, flip CKA_EXTRACTABLE); two server processes on one database and one token
 * see each other's rotation without restart; the other secrets are sealed by the token;
 * a wrong PIN, a missing token or module, an exposed PIN file, a tampered sealed secret, a
 * kid missing from the token, an extractable or non-Ed25519 key, another token, or a
 * database of the KEK keyring are each a refusal to start with one clear line.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createPublicKey, randomBytes, verify as cryptoVerify } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { Test } from 'tap';
import pkcs11js from 'pkcs11js';
import { openDatabase } from '../../server/src/db/database.js';
import { migrateToLatest } from '../../server/src/db/migrations.js';
import { DbKeyring } from '../../server/src/keys/db_keyring.js';
import { CKK_EC_EDWARDS, CKM_EC_EDWARDS_KEY_PAIR_GEN, ED25519_EC_PARAMS, openPkcs11Keyring, tokenKeyRef, ulong, type Pkcs11Settings } from '../../server/src/keys/pkcs11_keyring.js';
import { PKI_CA, PKI_KIND, initPki } from '../../server/src/pki/authority.js';
import { freePort } from '../harness/postgres.js';
import { eventually } from '../harness/wait.js';
import { TestHost, startTestServer, type TestServer } from '../harness/server.js';
import { startSoftHsm, type SoftHsm } from '../harness/softhsm.js';

const CLI = resolve('dist/server/src/cli.js');

/** Polls every 50 ms: a keyring's poll and a replica's start are what these wait for. */
const until = <T>(what: string, fn: () => Promise<T | undefined | null | false>, timeoutMs = 15_000): Promise<T> => eventually(what, fn, timeoutMs, 50);

function kidOf(token: string): string {
  return (JSON.parse(Buffer.from(token.split('.')[0]!, 'base64url').toString()) as { kid: string }).kid;
}

/**
 * A raw PKCS#11 session on a token, as an attacker holding the PIN would have one. Only
 * while no keyring of this process has the module open: C_Finalize ends every session.
 */
function rawSession<T>(hsm: SoftHsm, label: string, pin: string, fn: (p11: pkcs11js.PKCS11, session: Buffer) => T): T {
  const p11 = new pkcs11js.PKCS11();
  p11.load(hsm.module);
  p11.C_Initialize();
  try {
    const slot = p11.C_GetSlotList(true).find((s) => p11.C_GetTokenInfo(s).label.trim() === label)!;
    const session = p11.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
    p11.C_Login(session, pkcs11js.CKU_USER, pin);
    return fn(p11, session);
  } finally {
    p11.C_Finalize();
    p11.close();
  }
}

function findAll(p11: pkcs11js.PKCS11, session: Buffer, template: pkcs11js.Template): Buffer[] {
  p11.C_FindObjectsInit(session, template);
  const out = p11.C_FindObjects(session, 100);
  p11.C_FindObjectsFinal(session);
  return out;
}

export function keyringHsmSuite(t: Test, newDatabase: () => Promise<string | undefined>): void {
  let dir: string;
  let hsm: SoftHsm;
  t.before(() => {
    dir = mkdtempSync(join(tmpdir(), 'aegis-keyring-hsm-'));
    hsm = startSoftHsm();
  });
  t.teardown(() => {
    rmSync(dir, { recursive: true, force: true });
    hsm?.close();
  });
  const fresh = async (): Promise<string> => (await newDatabase()) ?? `sqlite:${join(dir, `${randomBytes(6).toString('hex')}.db`)}`;
  const token = () => {
    const label = `aegis-${randomBytes(3).toString('hex')}`;
    const pin = `pin-${randomBytes(4).toString('hex')}`;
    const made = hsm.initToken(label, pin);
    return { label, pin, pinFile: made.pinFile, settings: { module: hsm.module, tokenLabel: label, pinFile: made.pinFile } as Pkcs11Settings };
  };
  const env = (databaseUrl: string, tok: { label: string; pinFile: string }, extra: Record<string, string> = {}) => ({
    ...process.env,
    DATABASE_URL: databaseUrl,
    AEGIS_KEYS_DIR: join(dir, 'unused-keys'),
    LOG_LEVEL: 'error',
    ...hsm.env(tok.label, tok.pinFile),
    ...extra,
  });
  const cli = (args: string[], e: NodeJS.ProcessEnv) => spawnSync(process.execPath, [CLI, ...args], { env: e, encoding: 'utf8' });
  const start = (databaseUrl: string, tok: { label: string; pinFile: string }, extra: Record<string, string> = {}) =>
    startTestServer({ databaseUrl, env: { ...hsm.env(tok.label, tok.pinFile), AEGIS_KEYRING_POLL_MS: '200', ...extra } });
  const license = async (s: TestServer) => {
    const c = await s.req('POST', '/api/v1/customers', { name: `c-${randomBytes(3).toString('hex')}` });
    const l = await s.req('POST', '/api/v1/licenses', { customer_id: c.body.id, tier: 'server', license_type: 'perpetual', max_machines: 50 });
    if (l.status !== 201) throw new Error(JSON.stringify(l.body));
    return l.body as { id: string; license_key: string };
  };
  const activate = async (url: string, licenseKey: string) => {
    const host = new TestHost(`h-${randomBytes(3).toString('hex')}`);
    const r = await fetch(url + '/api/v1/activations', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(host.activation(licenseKey)) });
    const body = (await r.json()) as { machine_id: string; license_token: string };
    if (r.status !== 201 && r.status !== 200) throw new Error(`activation: ${r.status} ${JSON.stringify(body)}`);
    return body;
  };
  const validate = async (url: string, tok: string) => {
    const r = await fetch(url + '/api/v1/licenses/validate', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token: tok }) });
    return (await r.json()) as { valid: boolean; code: string };
  };
  const jwksOf = async (url: string) => (await (await fetch(url + '/.well-known/jwks.json')).json()) as { keys: Array<{ kid: string; kty: string; crv: string; x: string }> };
  /** Verifies a compact JWS with node:crypto alone against the JWKS key of its kid. */
  const verifiesAgainstJwks = (compact: string, jwks: { keys: Array<{ kid: string; kty: string; crv: string; x: string }> }): boolean => {
    const [h, p, s] = compact.split('.') as [string, string, string];
    const jwk = jwks.keys.find((k) => k.kid === kidOf(compact));
    if (!jwk) return false;
    const pub = createPublicKey({ key: { kty: jwk.kty, crv: jwk.crv, x: jwk.x }, format: 'jwk' });
    return cryptoVerify(null, Buffer.from(`${h}.${p}`), pub, Buffer.from(s, 'base64url'));
  };

  t.test('keys generate/rotate/retire/list through the CLI on the token; HSM signatures verify against the JWKS; the private key cannot be read', { timeout: 180_000 }, async (t) => {
    const url = await fresh();
    const tok = token();
    const e = env(url, tok);
    const gen = cli(['keys', 'generate', '--kid', 'hsm-a'], e);
    t.equal(gen.status, 0, `keys generate: ${gen.stderr}`);
    t.match(gen.stdout, /generated hsm-a \(active\)/, 'the first generated key becomes active');
    const rot = cli(['keys', 'rotate'], e);
    t.equal(rot.status, 0, `keys rotate: ${rot.stderr}`);
    const rotated = /rotated: (\S+) now signs/.exec(rot.stdout)?.[1];
    t.ok(rotated && rotated !== 'hsm-a', `rotated to ${rotated}`);
    const refused = cli(['keys', 'retire', rotated!], e);
    t.equal(refused.status, 1, 'retiring the active key is refused');
    t.match(refused.stderr, /is the active signing key; run "keys rotate" first/);

    const s = await start(url, tok);
    let pubOfA: { kid: string; x: string } | undefined;
    try {
      t.match(s.app.ctx.keys.description, /PKCS#11 keyring \(token "aegis-/, 'AEGIS_PKCS11_* selects the PKCS#11 keyring');
      t.equal(s.app.ctx.keys.activeKid(), rotated, 'the server signs with the key the CLI rotated to');
      const lic = await license(s);
      const act = await activate(s.url, lic.license_key);
      t.equal(kidOf(act.license_token), rotated, 'the license token names the HSM key');
      const jwks = await jwksOf(s.url);
      t.same(jwks.keys.map((k) => k.kid).sort(), ['hsm-a', rotated!].sort(), 'the JWKS publishes both token keys');
      t.ok(verifiesAgainstJwks(act.license_token, jwks), 'the license token verifies with node:crypto against the JWKS public key');
      t.equal((await validate(s.url, act.license_token)).valid, true, 'and the server validates it');
      const signed = (await (await fetch(s.url + '/.well-known/jwks.signed')).json()) as { signatures: string[] };
      t.equal(signed.signatures.length, 2, 'the signed key set carries a signature by each token key');
      t.ok(signed.signatures.every((sig) => verifiesAgainstJwks(sig, jwks)), 'each verifies with node:crypto');
      pubOfA = jwks.keys.find((k) => k.kid === 'hsm-a');
      // Rows: the public key and a reference; no key material.
      const rows = await s.app.ctx.db.selectFrom('keyring_keys').selectAll().where('kind', '=', 'signing').execute();
      t.same(rows.map((r) => r.sealed).sort(), [tokenKeyRef('hsm-a'), tokenKeyRef(rotated!)].sort(), 'signing rows hold only a reference to the token object');
    } finally {
      await s.close();
    }
    const retired = cli(['keys', 'retire', 'hsm-a'], e);
    t.equal(retired.status, 0, `keys retire: ${retired.stderr}`);
    const list = JSON.parse(cli(['keys', 'list', '--json'], e).stdout) as Array<{ kid: string; active: boolean; retired: boolean; public_jwk: { x: string } }>;
    t.same(list.map((k) => [k.kid, k.active, k.retired]), [['hsm-a', false, true], [rotated, true, false]].sort(), 'keys list shows the token keyring');
    t.equal(list.find((k) => k.kid === 'hsm-a')?.public_jwk.x, pubOfA?.x, 'with the public keys the JWKS published');
    const out = join(dir, `backup-${randomBytes(3).toString('hex')}.aegis`);
    const backup = cli(['backup', '--out', out], e);
    t.equal(backup.status, 0, `backup: ${backup.stderr}`);
    const kids = ['hsm-a', rotated!].sort();
    t.match(backup.stderr, new RegExp(`the private signing keys \\(${kids.join(', ')}\\) and the sealing key .* are in PKCS#11 token "${tok.label}", not in this backup`), 'backup says the keys are in the token, not in it');
    const raw = readFileSync(out);
    const header = JSON.parse(raw.subarray(15, raw.indexOf(0x0a, 15)).toString()) as { pkcs11_token?: string; token_kids?: string[] };
    t.same([header.pkcs11_token, header.token_kids], [tok.label, kids], 'its header names the token and the kids it must hold');
    t.ok(raw.includes(Buffer.from(tokenKeyRef(rotated!))), 'the backup holds the keys\' metadata rows');

    // The attack: a session with the PIN asks the token for the private key.
    rawSession(hsm, tok.label, tok.pin, (p11, session) => {
      const privs = findAll(p11, session, [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY }, { type: pkcs11js.CKA_ID, value: Buffer.from(rotated!) }]);
      t.equal(privs.length, 1, 'the private key is a token object with CKA_ID = kid');
      const a = p11.C_GetAttributeValue(session, privs[0]!, [{ type: pkcs11js.CKA_LABEL }, { type: pkcs11js.CKA_SENSITIVE }, { type: pkcs11js.CKA_EXTRACTABLE }, { type: pkcs11js.CKA_KEY_TYPE }]);
      t.equal(a[0]!.value.toString(), rotated, 'CKA_LABEL = kid');
      t.equal(a[1]!.value[0], 1, 'CKA_SENSITIVE true');
      t.equal(a[2]!.value[0], 0, 'CKA_EXTRACTABLE false');
      t.equal(ulong(a[3]!.value), CKK_EC_EDWARDS, 'an EdDSA key');
      t.throws(() => p11.C_GetAttributeValue(session, privs[0]!, [{ type: pkcs11js.CKA_VALUE }]), /CKR_ATTRIBUTE_SENSITIVE/, 'reading CKA_VALUE is refused by the token');
      t.throws(() => p11.C_SetAttributeValue(session, privs[0]!, [{ type: pkcs11js.CKA_EXTRACTABLE, value: true }]), /CKR_ATTRIBUTE_READ_ONLY|CKR_ATTRIBUTE_VALUE_INVALID|CKR_ACTION_PROHIBITED/, 'and it cannot be made extractable');
      const seal = findAll(p11, session, [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY }]);
      t.equal(seal.length, 1, 'one AES sealing key in the token');
      t.throws(() => p11.C_GetAttributeValue(session, seal[0]!, [{ type: pkcs11js.CKA_VALUE }]), /CKR_ATTRIBUTE_SENSITIVE/, "the sealing key's value is refused too");
    });
  });

  t.test('two server processes on one database and one token: rotate on one, the other signs with the new key without restart', { timeout: 180_000 }, async (t) => {
    const url = await fresh();
    const tok = token();
    const a = await start(url, tok);
    const port = await freePort();
    let b: ChildProcess | null = null;
    try {
      const lic = await license(a);
      const before = await activate(a.url, lic.license_key);
      const oldKid = kidOf(before.license_token);
      t.equal(oldKid, a.app.ctx.keys.activeKid(), 'the first start generated a key in the token');
      b = spawn(process.execPath, [CLI, 'serve', '--listen', `127.0.0.1:${port}`], { env: env(url, tok, { AEGIS_KEYRING_POLL_MS: '200', AEGIS_HTTP_KEEPALIVE_TIMEOUT_MS: '65000' }), stdio: ['ignore', 'ignore', 'pipe'] });
      let bErr = '';
      b.stderr!.on('data', (d: Buffer) => (bErr += d.toString()));
      const bUrl = `http://127.0.0.1:${port}`;
      await until('replica B listening', async () => fetch(bUrl + '/health').then((r) => r.ok, () => false), 20_000).catch((e: Error) => {
        throw new Error(`${e.message}: ${bErr}`);
      });
      t.equal((await validate(bUrl, before.license_token)).valid, true, 'B verifies a token A signed (one keyring, one token)');
      // Rotate on replica A (in this process), B is another process with its own session.
      const rotated = await (a.app.ctx.keys as DbKeyring<never>).rotate();
      const newKid = rotated.kid;
      t.not(newKid, oldKid, `A rotated to ${newKid}`);
      await until('B publishes the new key', async () => (await jwksOf(bUrl)).keys.some((k) => k.kid === newKid));
      const fromB = await activate(bUrl, lic.license_key);
      t.equal(kidOf(fromB.license_token), newKid, 'B signs with the new token key, without a restart');
      t.ok(verifiesAgainstJwks(fromB.license_token, await jwksOf(a.url)), "B's token verifies with node:crypto against A's JWKS");
      for (const [name, u] of [['A', a.url], ['B', bUrl]] as const) {
        t.equal((await validate(u, before.license_token)).valid, true, `${name}: a token from before the rotation still verifies`);
        t.equal((await validate(u, fromB.license_token)).valid, true, `${name}: a token of the new key verifies`);
      }
      const refused = cli(['keys', 'retire', newKid], env(url, tok));
      t.match(refused.stderr, /is the active signing key/, 'retiring the active key is refused, as with the database keyring');
      const retired = cli(['keys', 'retire', oldKid], env(url, tok));
      t.equal(retired.status, 0, `keys retire through the CLI while both run: ${retired.stderr}`);
      for (const [name, u] of [['A', a.url], ['B', bUrl]] as const) {
        await until(`${name} refuses the retired key`, async () => (await validate(u, before.license_token)).code === 'UNKNOWN_KEY');
        t.pass(`${name}: the retired key's token no longer verifies`);
      }
      // A rotation by the CLI (a third process) reaches both.
      const r = cli(['keys', 'rotate'], env(url, tok));
      const third = /rotated: (\S+) now signs/.exec(r.stdout)?.[1];
      t.ok(third, `keys rotate: ${r.stderr}`);
      await until('A signs with the CLI rotation', async () => kidOf((await activate(a.url, lic.license_key)).license_token) === third);
      await until('B signs with the CLI rotation', async () => kidOf((await activate(bUrl, lic.license_key)).license_token) === third);
      t.pass('a CLI rotation is used by both replicas without restart');
    } finally {
      b?.kill('SIGTERM');
      if (b && b.exitCode === null) await new Promise((r) => b!.once('exit', r));
      await a.close();
    }
  });

  t.test('secrets sealed by the token; wrong PIN, no token, no module, exposed PIN file, tampered secret, a foreign token or keyring → start refuses', { timeout: 180_000 }, async (t) => {
    const url = await fresh();
    const tok = token();
    const s = await start(url, tok);
    const pkiDir = join(dir, `pki-${randomBytes(3).toString('hex')}`);
    try {
      const ring = s.app.ctx.keys as DbKeyring<never>;
      await initPki(pkiDir);
      const caKey = readFileSync(join(pkiDir, 'ca.key'));
      await ring.secrets.put(PKI_KIND, PKI_CA, caKey, readFileSync(join(pkiDir, 'ca.crt'), 'utf8'));
      t.same((await ring.secrets.get(PKI_KIND, PKI_CA))?.secret, caKey, 'a secret sealed by the token opens again');
      const row = await s.app.ctx.db.selectFrom('keyring_keys').selectAll().where('kind', '=', PKI_KIND).executeTakeFirstOrThrow();
      t.match(row.sealed, /^p11\.v1\./, 'the CA key row is sealed by the token');
      t.notMatch(row.sealed + row.public_pem, /PRIVATE KEY/, 'no PEM private key in the row');
      t.notOk(Buffer.from(row.sealed.slice(7), 'base64').includes(caKey.subarray(40, 72)), 'no CA key bytes in the row');
    } finally {
      await s.close();
    }
    const refuse = async (what: string, p: Promise<unknown>, pattern: RegExp) => t.rejects(p, pattern, what);
    await refuse('a wrong PIN', start(url, { label: tok.label, pinFile: hsm.pinFile('0000') }), /AEGIS_PKCS11_PIN_FILE holds the wrong PIN for PKCS#11 token "aegis-\w+" \(CKR_PIN_INCORRECT\); refusing to start/);
    await refuse('no token of that label', start(url, { label: 'absent-token', pinFile: tok.pinFile }), /no PKCS#11 token labelled "absent-token" in \/usr\/lib\/softhsm\/libsofthsm2\.so/);
    await refuse('a missing module', start(url, tok, { AEGIS_PKCS11_MODULE: join(dir, 'libnone.so') }), /AEGIS_PKCS11_MODULE .*libnone\.so does not exist/);
    const notALib = join(dir, 'not-a-lib.so');
    writeFileSync(notALib, 'hello');
    await refuse('a file that is not a PKCS#11 library', start(url, tok, { AEGIS_PKCS11_MODULE: notALib }), /is not a loadable PKCS#11 library/);
    const exposed = hsm.pinFile(tok.pin);
    chmodSync(exposed, 0o644);
    await refuse('a PIN file others can read', start(url, { label: tok.label, pinFile: exposed }), /AEGIS_PKCS11_PIN_FILE .* has mode 644; it must not be readable by group or others/);
    t.equal(cli(['keys', 'list'], env(url, { label: tok.label, pinFile: exposed })).status, 78, 'the CLI exits 78 (configuration) on an exposed PIN file');
    await refuse('a PIN in the environment', start(url, tok, { AEGIS_PKCS11_PIN: tok.pin }), /AEGIS_PKCS11_PIN is not read/);
    await refuse('both keyrings configured', start(url, tok, { AEGIS_KEK_FILE: join(dir, 'kek') }), /AEGIS_KEK_FILE and AEGIS_PKCS11_MODULE both name a keyring/);
    const cliWrong = cli(['keys', 'list'], env(url, { label: tok.label, pinFile: hsm.pinFile('0000') }));
    t.equal(cliWrong.status, 1, 'the CLI exits 1 on a wrong PIN');
    t.match(cliWrong.stderr, /^aegis-server: error: AEGIS_PKCS11_PIN_FILE holds the wrong PIN .*\n$/, 'with one line');

    // Another token (its own sealing key) on this database.
    const other = token();
    await refuse('another token', start(url, other), /PKCS#11 token "aegis-\w+" lacks the sealing key [0-9a-f]{32} this database's secrets are sealed under/);
    // The KEK keyring on this database, and this token on a KEK database.
    const kek = join(dir, `kek-${randomBytes(3).toString('hex')}`);
    writeFileSync(kek, randomBytes(32), { mode: 0o600 });
    await refuse('AEGIS_KEK_FILE on a token database', startTestServer({ databaseUrl: url, env: { AEGIS_KEK_FILE: kek } }), /this database's keyring is held in a PKCS#11 token/);
    const kekUrl = await fresh();
    await (await startTestServer({ databaseUrl: kekUrl, env: { AEGIS_KEK_FILE: kek } })).close();
    await refuse('a token on a KEK database', start(kekUrl, other), /this database's keyring is sealed under AEGIS_KEK_FILE, not held in a PKCS#11 token/);

    const { db, dialect } = openDatabase(url);
    try {
      await migrateToLatest(db, dialect);
      const row = await db.selectFrom('keyring_keys').selectAll().where('kind', '=', PKI_KIND).executeTakeFirstOrThrow();
      const flipped = Buffer.from(row.sealed.slice(7), 'base64');
      flipped[20] = flipped[20]! ^ 0x01;
      await db.updateTable('keyring_keys').set({ sealed: 'p11.v1.' + flipped.toString('base64') }).where('kind', '=', PKI_KIND).execute();
      await refuse('a tampered sealed CA key', start(url, tok), /keyring record pki\/ca does not open in PKCS#11 token "aegis-\w+" \(authentication failed/);
      await db.updateTable('keyring_keys').set({ sealed: row.sealed }).where('kind', '=', PKI_KIND).execute();
      // A genuine ciphertext moved to another row: the AAD (kind, kid) does not match.
      await db.insertInto('keyring_keys').values({ ...row, kind: 'nats', kid: 'operator' }).execute();
      const ring = await openPkcs11Keyring(db, tok.settings);
      try {
        await t.rejects(ring.secrets.get('nats', 'operator'), /keyring record nats\/operator does not open/, 'a sealed record moved to another row');
      } finally {
        ring.close();
      }
      await db.deleteFrom('keyring_keys').where('kind', '=', 'nats').execute();
      const check = await db.selectFrom('keyring_keys').selectAll().where('kind', '=', 'hsm').executeTakeFirstOrThrow();
      await db.updateTable('keyring_keys').set({ sealed: 'p11.v1.' + randomBytes(60).toString('base64') }).where('kind', '=', 'hsm').execute();
      await refuse('a tampered check record', start(url, tok), /the sealing key in PKCS#11 token "aegis-\w+" does not open this database's check record/);
      await db.updateTable('keyring_keys').set({ sealed: check.sealed }).where('kind', '=', 'hsm').execute();
      const s2 = await start(url, tok);
      await s2.close();
      t.pass('the restored rows open again');
    } finally {
      await db.destroy();
    }
  });

  t.test('a kid missing from the token, an extractable, a non-Ed25519 or a mismatched key → refused, fail closed', { timeout: 180_000 }, async (t) => {
    const url = await fresh();
    const tok = token();
    const s = await start(url, tok);
    const active = s.app.ctx.keys.activeKid()!;
    const leftover = `aegis-${new Date().getUTCFullYear()}-02`; // the next default kid after the first
    const activePem = (await s.app.ctx.db.selectFrom('keyring_keys').select('public_pem').where('kind', '=', 'signing').where('kid', '=', active).executeTakeFirstOrThrow()).public_pem!;
    await s.close();
    const { db, dialect } = openDatabase(url);
    const row = (kid: string, pem = activePem) => ({ kind: 'signing', kid, public_pem: pem, sealed: tokenKeyRef(kid), created_at: new Date().toISOString(), retired_at: null });
    try {
      await migrateToLatest(db, dialect);
      const open = () => openPkcs11Keyring(db, tok.settings).then((r) => r.close());
      await t.resolves(open(), 'the untouched keyring opens');
      // A row whose kid the token does not hold.
      await db.insertInto('keyring_keys').values(row('ghost')).execute();
      await t.rejects(open(), /the signing key ghost of the keyring is missing from PKCS#11 token "aegis-\w+"; refusing to start/, 'a kid in the database missing from the token');
      await t.rejects(start(url, tok), /signing key ghost .* is missing from PKCS#11 token/, 'the server refuses to start on it');
      await db.deleteFrom('keyring_keys').where('kid', '=', 'ghost').execute();
      // Keys put in the token by someone else under kids the database then lists.
      rawSession(hsm, tok.label, tok.pin, (p11, session) => {
        const pair = (id: string, mech: number, keyType: number, params: Buffer, extractable: boolean) =>
          p11.C_GenerateKeyPair(
            session,
            { mechanism: mech },
            [
              { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PUBLIC_KEY },
              { type: pkcs11js.CKA_KEY_TYPE, value: keyType },
              { type: pkcs11js.CKA_TOKEN, value: true },
              { type: pkcs11js.CKA_VERIFY, value: true },
              { type: pkcs11js.CKA_EC_PARAMS, value: params },
              { type: pkcs11js.CKA_ID, value: Buffer.from(id) },
            ],
            [
              { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY },
              { type: pkcs11js.CKA_KEY_TYPE, value: keyType },
              { type: pkcs11js.CKA_TOKEN, value: true },
              { type: pkcs11js.CKA_PRIVATE, value: true },
              { type: pkcs11js.CKA_SENSITIVE, value: true },
              { type: pkcs11js.CKA_EXTRACTABLE, value: extractable },
              { type: pkcs11js.CKA_SIGN, value: true },
              { type: pkcs11js.CKA_ID, value: Buffer.from(id) },
            ],
          );
        pair('extractable', CKM_EC_EDWARDS_KEY_PAIR_GEN, CKK_EC_EDWARDS, ED25519_EC_PARAMS, true);
        pair('p256', pkcs11js.CKM_EC_KEY_PAIR_GEN, pkcs11js.CKK_EC, Buffer.from('06082a8648ce3d030107', 'hex'), false);
        pair(leftover, CKM_EC_EDWARDS_KEY_PAIR_GEN, CKK_EC_EDWARDS, ED25519_EC_PARAMS, false);
      });
      await db.insertInto('keyring_keys').values(row('extractable')).execute();
      await t.rejects(open(), /the token key extractable is \(or was\) extractable .*refusing it/, 'a token key with CKA_EXTRACTABLE true');
      await db.deleteFrom('keyring_keys').where('kid', '=', 'extractable').execute();
      await db.insertInto('keyring_keys').values(row('p256')).execute();
      await t.rejects(open(), /the token key p256 is not an Ed25519 key; refusing it/, 'a P-256 key under a kid');
      await db.deleteFrom('keyring_keys').where('kid', '=', 'p256').execute();
      // An Ed25519 key of the token listed with another key's public half: the JWKS would publish a key nobody holds.
      await db.insertInto('keyring_keys').values(row(leftover)).execute();
      await t.rejects(open(), new RegExp(`keyring row signing/${leftover}: the public key does not belong to the token's private key`), "a row's public key that is not the token key's");
      await db.deleteFrom('keyring_keys').where('kid', '=', leftover).execute();
      // A KEK-sealed row (or anything but a reference) under the signing kind.
      await db.insertInto('keyring_keys').values({ ...row('copied'), sealed: 'v1.' + randomBytes(80).toString('base64') }).execute();
      await t.rejects(open(), /keyring row signing\/copied is not a reference to a PKCS#11 token key/, 'a row that is not a token reference');
      await db.deleteFrom('keyring_keys').where('kid', '=', 'copied').execute();
      // A leftover token object under a kid the database does not list is never overwritten.
      const ring = await openPkcs11Keyring(db, tok.settings);
      try {
        await t.rejects(ring.generate(leftover), new RegExp(`already holds an object with CKA_ID ${leftover} that the keyring does not list`), 'generate refuses a kid the token already holds');
        const next = await ring.rotate();
        t.equal(next.kid, `aegis-${new Date().getUTCFullYear()}-03`, `a default kid skips the token's leftover ${leftover}`);
        t.equal(ring.signingKey().kid, next.kid, 'and the rotated key signs');
        await t.rejects(ring.generate(next.kid), new RegExp(`key ${next.kid} already exists`), 'a kid is generated once');
        await t.rejects(ring.retire('nope'), /no key nope/, 'retiring an unknown kid is refused');
        await t.rejects(ring.retire(next.kid), /is the active signing key/, 'retiring the active key is refused');
        const tokenKids = ring.kids();
        t.ok(tokenKids.includes(active) && tokenKids.includes(next.kid), 'the keyring lists the first and the rotated key');
      } finally {
        ring.close();
      }
      await t.resolves(open(), 'the keyring opens again');
    } finally {
      await db.destroy();
    }
  });
}
