/**
 * The database keyring (AEGIS_KEK_FILE) and the operations around it, against real
 * servers on one database (SQLite file or the harness's PostgreSQL): keys are stored
 * sealed (the raw rows hold no private key), a tampered, moved or foreign ciphertext and
 * a wrong or exposed KEK are refused; a rotation by `aegis-server keys rotate` is used by
 * a second server process without restart while tokens from before still verify until
 * retirement; backup, wipe, restore brings every license, machine and key back; hostile
 * backup files are refused with nothing written; every migration goes down and up again.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { Test } from 'tap';
import { sql } from 'kysely';
import { openDatabase } from '../../server/src/db/database.js';
import { migrateToLatest, migrationNames } from '../../server/src/db/migrations.js';
import { DbKeyring, seal } from '../../server/src/keys/db_keyring.js';
import { NatsAuthority } from '../../server/src/nats/credentials.js';
import { migrateDownOne, migrationStatus } from '../../server/src/ops/migrate.js';
import { backupDatabase, restoreDatabase } from '../../server/src/ops/backup.js';
import { CertificateAuthority, PKI_CA, PKI_KIND, initPki } from '../../server/src/pki/authority.js';
import { freePort } from '../harness/postgres.js';
import { eventually } from '../harness/wait.js';
import { TestHost, startTestServer, type TestServer } from '../harness/server.js';

const CLI = resolve('dist/server/src/cli.js');

/** Polls every 50 ms: a keyring's poll and a replica's start are what these wait for. */
const until = <T>(what: string, fn: () => Promise<T | undefined | null | false>, timeoutMs = 15_000): Promise<T> => eventually(what, fn, timeoutMs, 50);

function kidOf(token: string): string {
  return (JSON.parse(Buffer.from(token.split('.')[0]!, 'base64url').toString()) as { kid: string }).kid;
}

export function keyringSuite(t: Test, newDatabase: () => Promise<string | undefined>): void {
  let dir: string;
  t.before(() => {
    dir = mkdtempSync(join(tmpdir(), 'aegis-keyring-'));
  });
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const fresh = async (): Promise<string> => (await newDatabase()) ?? `sqlite:${join(dir, `${randomBytes(6).toString('hex')}.db`)}`;
  const newKek = (mode = 0o600): string => {
    const path = join(dir, `kek-${randomBytes(4).toString('hex')}`);
    writeFileSync(path, randomBytes(32), { mode });
    chmodSync(path, mode);
    return path;
  };
  const env = (databaseUrl: string, kek: string, extra: Record<string, string> = {}) => ({
    ...process.env,
    DATABASE_URL: databaseUrl,
    AEGIS_KEK_FILE: kek,
    AEGIS_KEYS_DIR: join(dir, 'unused-keys'),
    LOG_LEVEL: 'error',
    ...extra,
  });
  const cli = (args: string[], e: NodeJS.ProcessEnv) => spawnSync(process.execPath, [CLI, ...args], { env: e, encoding: 'utf8' });
  const start = (databaseUrl: string, kek: string, extra: Record<string, string> = {}) =>
    startTestServer({ databaseUrl, env: { AEGIS_KEK_FILE: kek, AEGIS_KEYRING_POLL_MS: '200', ...extra } });
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
  const validate = async (url: string, token: string) => {
    const r = await fetch(url + '/api/v1/licenses/validate', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token }) });
    return (await r.json()) as { valid: boolean; code: string };
  };

  t.test('the KEK file: wrong mode, wrong owner, wrong length or missing → the server refuses to start', { timeout: 180_000 }, async (t) => {
    const url = await fresh();
    await t.rejects(start(url, newKek(0o644)), /has mode 644; it must not be readable by group or others/, 'mode 0644');
    await t.rejects(start(url, newKek(0o640)), /has mode 640/, 'mode 0640');
    const foreign = newKek();
    chownSync(foreign, 65534, 65534); // the suite runs as root (CI): a KEK owned by another user
    await t.rejects(start(url, foreign), /owned by uid 65534, not by the server's user/, 'another owner');
    const short = join(dir, 'short');
    writeFileSync(short, randomBytes(31), { mode: 0o600 });
    await t.rejects(start(url, short), /holds 31 bytes; it must hold exactly 32/, '31 bytes');
    await t.rejects(start(url, join(dir, 'absent')), /AEGIS_KEK_FILE .* cannot be read/, 'missing');
    const r = cli(['keys', 'list'], env(url, newKek(0o644)));
    t.equal(r.status, 78, 'the CLI exits 78 (configuration) on an exposed KEK');
    t.match(r.stderr, /must not be readable by group or others/);
  });

  t.test('keys are stored sealed: the raw rows hold no private key; CA key and NATS seeds too', { timeout: 180_000 }, async (t) => {
    const url = await fresh();
    const kek = newKek();
    const s = await start(url, kek);
    try {
      const ring = s.app.ctx.keys as DbKeyring;
      t.ok(ring instanceof DbKeyring, 'AEGIS_KEK_FILE selects the database keyring');
      await ring.rotate();
      const lic = await license(s);
      const act = await activate(s.url, lic.license_key);
      t.equal(kidOf(act.license_token), ring.activeKid(), 'tokens are signed by the active database key');
      // The CA: imported from files once, then served from the database alone.
      const pkiDir = join(dir, `pki-${randomBytes(3).toString('hex')}`);
      await initPki(pkiDir);
      const caFromFiles = await CertificateAuthority.open(pkiDir, ring.secrets);
      rmSync(pkiDir, { recursive: true });
      const caFromDb = await CertificateAuthority.open(pkiDir, ring.secrets);
      t.equal(caFromDb?.caPem, caFromFiles?.caPem, 'the CA opens from the database keyring with no files left');
      // NATS seeds: two authorities with two empty directories share the database's operator.
      const n1 = await NatsAuthority.open({ dir: join(dir, `nats-${randomBytes(3).toString('hex')}`), seeds: ring.secrets });
      const natsDir = join(dir, `nats-${randomBytes(3).toString('hex')}`);
      const n2 = await NatsAuthority.open({ dir: natsDir, seeds: ring.secrets });
      t.equal(n2.operatorPublicKey, n1.operatorPublicKey, 'replicas share the operator key through the database');
      t.equal(n2.accountPublicKey, n1.accountPublicKey, 'and the account key');
      t.notOk(existsSync(join(natsDir, 'operator.nk')), 'no seed file is written');

      const rows = await s.app.ctx.db.selectFrom('keyring_keys').selectAll().execute();
      t.ok(rows.some((r) => r.kind === 'pki' && r.kid === 'ca') && rows.filter((r) => r.kind === 'nats').length === 3 && rows.filter((r) => r.kind === 'signing').length === 2, 'signing keys, CA key and three NATS seeds are rows');
      const secrets: Buffer[] = [];
      for (const k of ring.verifyingSigningKeys()) {
        const der = k.privateKey.export({ type: 'pkcs8', format: 'der' });
        secrets.push(der, der.subarray(der.length - 32));
      }
      const ca = await ring.secrets.get(PKI_KIND, PKI_CA);
      secrets.push(ca!.secret);
      for (const name of ['operator', 'account', 'system_account']) secrets.push((await ring.secrets.get('nats', name))!.secret);
      const nonces = new Set<string>();
      for (const r of rows) {
        const text = JSON.stringify(r);
        t.notMatch(text, /PRIVATE KEY|SUAA|SOAA/, `${r.kind}/${r.kid}: no PEM private key or nkey seed in the row`);
        const raw = Buffer.from(r.sealed.slice(3), 'base64');
        for (const sec of secrets) if (raw.includes(sec) || Buffer.from(text).includes(sec)) t.fail(`${r.kind}/${r.kid} holds private key bytes`);
        nonces.add(raw.subarray(0, 12).toString('hex'));
      }
      t.equal(nonces.size, rows.length, 'every record has its own nonce');
    } finally {
      await s.close();
    }
  });

  t.test('tampered ciphertext, swapped rows, a mismatched public key or a wrong KEK → refused, fail closed', { timeout: 180_000 }, async (t) => {
    const url = await fresh();
    const kek = newKek();
    const s = await start(url, kek);
    const ring = s.app.ctx.keys as DbKeyring;
    await ring.rotate();
    await s.close();
    const { db, dialect } = openDatabase(url);
    try {
      await migrateToLatest(db, dialect);
      const kekBytes = readFileSync(kek);
      const rows = await db.selectFrom('keyring_keys').selectAll().where('kind', '=', 'signing').orderBy('kid').execute();
      t.equal(rows.length, 2);
      const [a, b] = rows as [(typeof rows)[0], (typeof rows)[0]];
      const setSealed = (kid: string, sealed: string) => db.updateTable('keyring_keys').set({ sealed }).where('kind', '=', 'signing').where('kid', '=', kid).execute();
      const setPublic = (kid: string, pem: string) => db.updateTable('keyring_keys').set({ public_pem: pem }).where('kind', '=', 'signing').where('kid', '=', kid).execute();

      await t.resolves(DbKeyring.open(db, kekBytes), 'the untouched keyring opens');
      await t.rejects(DbKeyring.open(db, randomBytes(32)), /AEGIS_KEK_FILE is not this database's key-encryption key/, 'a wrong KEK');
      await t.rejects(start(url, newKek()), /not this database's key-encryption key/, 'a server with another KEK refuses to start');

      const flipped = Buffer.from(b.sealed.slice(3), 'base64');
      flipped[20] = flipped[20]! ^ 0x01;
      await setSealed(b.kid, 'v1.' + flipped.toString('base64'));
      await t.rejects(DbKeyring.open(db, kekBytes), new RegExp(`keyring record signing/${b.kid} does not decrypt \\(authentication failed\\)`), 'one flipped ciphertext bit');
      await t.rejects(start(url, kek), /does not decrypt/, 'the server refuses to start on it');

      // Each ciphertext is genuine, but in the other row: the AAD (kind, kid) no longer matches.
      await setSealed(a.kid, b.sealed);
      await setSealed(b.kid, a.sealed);
      await t.rejects(DbKeyring.open(db, kekBytes), /does not decrypt \(authentication failed\)/, 'ciphertexts swapped between rows');
      // A valid sealing of the right kid with another kind's AAD (a NATS seed moved into signing).
      await setSealed(a.kid, a.sealed);
      await setSealed(b.kid, seal(kekBytes, 'nats', b.kid, Buffer.from('x')));
      await t.rejects(DbKeyring.open(db, kekBytes), /does not decrypt/, 'a record sealed for another kind');
      await setSealed(b.kid, b.sealed);
      // The public half replaced by another key's: the JWKS would publish a key nobody holds.
      await setPublic(b.kid, a.public_pem!);
      await t.rejects(DbKeyring.open(db, kekBytes), /the public key does not belong to the sealed private key/, 'a swapped public key');
      await setPublic(b.kid, b.public_pem!);
      await t.rejects(DbKeyring.open(db, kekBytes.subarray(0, 16)), /must be 32 bytes/, 'a short KEK');
      const ok = await DbKeyring.open(db, kekBytes);
      t.equal(ok.activeKid(), b.kid, 'restored rows open again');
      // A background refresh that meets a tampered row keeps the keys it had (never the tampered one).
      const errors: unknown[] = [];
      const live = await DbKeyring.open(db, kekBytes, { onError: (e) => errors.push(e) });
      await setSealed(b.kid, 'v1.' + flipped.toString('base64'));
      await db.updateTable('keyring_state').set({ generation: sql`generation + 1` }).where('id', '=', 1).execute();
      await live.refreshIfChanged();
      t.equal(errors.length, 1, 'the refresh reports the refusal');
      t.equal(live.signingKey().kid, b.kid, 'and keeps signing with the key it had verified');
    } finally {
      await db.destroy();
    }
  });

  t.test('two server processes on one database: rotate through the CLI, the other signs with the new key without restart', { timeout: 180_000 }, async (t) => {
    const url = await fresh();
    const kek = newKek();
    const a = await start(url, kek);
    const port = await freePort();
    let b: ChildProcess | null = null;
    try {
      const lic = await license(a);
      const before = await activate(a.url, lic.license_key);
      const oldKid = kidOf(before.license_token);
      b = spawn(process.execPath, [CLI, 'serve', '--listen', `127.0.0.1:${port}`], { env: env(url, kek, { AEGIS_KEYRING_POLL_MS: '200', AEGIS_HTTP_KEEPALIVE_TIMEOUT_MS: '65000' }), stdio: ['ignore', 'ignore', 'pipe'] });
      let bErr = '';
      b.stderr!.on('data', (d: Buffer) => (bErr += d.toString()));
      const bUrl = `http://127.0.0.1:${port}`;
      await until('replica B listening', async () => fetch(bUrl + '/health').then((r) => r.ok, () => false), 20_000).catch((e: Error) => {
        throw new Error(`${e.message}: ${bErr}`);
      });
      t.equal((await validate(bUrl, before.license_token)).valid, true, 'B verifies a token A signed (one keyring)');
      const rotated = cli(['keys', 'rotate'], env(url, kek));
      t.equal(rotated.status, 0, `keys rotate: ${rotated.stderr}`);
      const newKid = /rotated: (\S+) now signs/.exec(rotated.stdout)?.[1];
      t.ok(newKid && newKid !== oldKid, `a new key ${newKid}`);
      const t0 = Date.now();
      const jwksKids = async (u: string) => ((await (await fetch(u + '/.well-known/jwks.json')).json()) as { keys: Array<{ kid: string }> }).keys.map((k) => k.kid);
      await until('B publishes the new key', async () => (await jwksKids(bUrl)).includes(newKid!));
      t.comment(`B had the new key ${Date.now() - t0} ms after the rotation command returned`);
      const fromB = await activate(bUrl, lic.license_key);
      t.equal(kidOf(fromB.license_token), newKid, 'B signs with the new key, without a restart');
      await until('A publishes the new key', async () => (await jwksKids(a.url)).includes(newKid!));
      t.equal(kidOf((await activate(a.url, lic.license_key)).license_token), newKid, 'A signs with it too');
      for (const [name, u] of [['A', a.url], ['B', bUrl]] as const) {
        t.equal((await validate(u, before.license_token)).valid, true, `${name}: a token from before the rotation still verifies`);
        t.equal((await validate(u, fromB.license_token)).valid, true, `${name}: a token of the new key verifies`);
      }
      t.same((await jwksKids(bUrl)).sort(), [oldKid, newKid].sort(), "B's JWKS publishes both keys");
      const retired = cli(['keys', 'retire', oldKid], env(url, kek));
      t.equal(retired.status, 0, `keys retire: ${retired.stderr}`);
      for (const [name, u] of [['A', a.url], ['B', bUrl]] as const) {
        await until(`${name} refuses the retired key`, async () => (await validate(u, before.license_token)).code === 'UNKNOWN_KEY');
        t.pass(`${name}: the retired key's token no longer verifies`);
        t.equal((await validate(u, fromB.license_token)).valid, true, `${name}: the new key's token still does`);
      }
      const list = cli(['keys', 'list', '--json'], env(url, kek));
      const keys = JSON.parse(list.stdout) as Array<{ kid: string; active: boolean; retired: boolean }>;
      t.same(keys.map((k) => [k.kid, k.active, k.retired]), [[oldKid, false, true], [newKid, true, false]].sort(), 'keys list shows the database keyring');
    } finally {
      b?.kill('SIGTERM');
      if (b && b.exitCode === null) await new Promise((r) => b!.once('exit', r));
      await a.close();
    }
  });

  t.test('backup, wipe, restore: every license, machine and key back; tokens from before verify', { timeout: 180_000 }, async (t) => {
    const url = await fresh();
    const kek = newKek();
    const s = await start(url, kek);
    const out = join(dir, `backup-${randomBytes(3).toString('hex')}.aegis`);
    let tokens: string[] = [];
    let licenses: string[] = [];
    let machines: string[] = [];
    let kids: string[] = [];
    try {
      const ring = s.app.ctx.keys as DbKeyring;
      for (let i = 0; i < 3; i++) {
        const lic = await license(s);
        licenses.push(lic.id);
        const act = await activate(s.url, lic.license_key);
        machines.push(act.machine_id);
        tokens.push(act.license_token);
        if (i === 0) await ring.rotate(); // tokens of two keys
      }
      kids = ring.kids();
      const r = cli(['backup', '--out', out], env(url, kek));
      t.equal(r.status, 0, `backup: ${r.stderr}`);
      const bytes = readFileSync(out);
      t.notMatch(bytes.toString('latin1'), /PRIVATE KEY/, 'no PEM private key in the backup');
      for (const k of ring.verifyingSigningKeys()) {
        const der = k.privateKey.export({ type: 'pkcs8', format: 'der' });
        t.notOk(bytes.includes(der.subarray(der.length - 32)), `the backup does not hold ${k.kid}'s private key`);
      }
    } finally {
      await s.close();
    }
    // Wipe.
    const { db, dialect } = openDatabase(url);
    if (dialect === 'postgres') {
      await sql`drop schema public cascade`.execute(db);
      await sql`create schema public`.execute(db);
      await db.destroy();
    } else {
      await db.destroy();
      const file = url.slice('sqlite:'.length);
      for (const f of [file, `${file}-wal`, `${file}-shm`]) rmSync(f, { force: true });
    }
    await t.rejects(restoreDatabase(url, out, randomBytes(32), migrationNames(dialect)), /MAC does not verify under this AEGIS_KEK_FILE/, 'restore under another KEK is refused');
    const r = cli(['restore', out], env(url, kek));
    t.equal(r.status, 0, `restore: ${r.stderr}`);
    const s2 = await start(url, kek);
    try {
      for (const id of licenses) t.equal((await s2.req('GET', `/api/v1/licenses/${id}`)).status, 200, `license ${id} is back`);
      for (const id of machines) t.equal((await s2.req('GET', `/api/v1/machines/${id}`)).status, 200, `machine ${id} is back`);
      t.same(s2.app.ctx.keys.kids(), kids, 'every key is back');
      for (const tok of tokens) t.equal((await validate(s2.url, tok)).valid, true, `a token of ${kidOf(tok)} from before the backup verifies`);
    } finally {
      await s2.close();
    }
  });

  t.test('hostile backup files are refused with a clear error and nothing written', { timeout: 180_000 }, async (t) => {
    const url = await fresh();
    const kek = newKek();
    const s = await start(url, kek);
    const lic = await license(s);
    await s.close();
    const kekBytes = readFileSync(kek);
    const good = join(dir, `good-${randomBytes(3).toString('hex')}`);
    await backupDatabase(url, good, kekBytes);
    const raw = readFileSync(good);
    const names = migrationNames(url.startsWith('postgres') ? 'postgres' : 'sqlite');
    const nl = raw.indexOf(0x0a, 15);
    const header = JSON.parse(raw.subarray(15, nl).toString()) as Record<string, unknown>;
    const withHeader = (h: Record<string, unknown>, payload: Buffer) => Buffer.concat([Buffer.from('AEGIS-BACKUP 1\n' + JSON.stringify(h) + '\n'), payload]);
    const payload = raw.subarray(nl + 1);
    const flippedPayload = Buffer.from(payload);
    flippedPayload[Math.floor(payload.length / 2)] = flippedPayload[Math.floor(payload.length / 2)]! ^ 0xff;
    const cases: Array<[string, Buffer, RegExp, Buffer | null]> = [
      ['an empty file', Buffer.alloc(0), /not an Aegis backup/, kekBytes],
      ['random bytes', randomBytes(4096), /not an Aegis backup/, kekBytes],
      ['a bare SQLite database', Buffer.concat([Buffer.from('SQLite format 3\0'), randomBytes(100)]), /not an Aegis backup/, kekBytes],
      ['truncated in the header', raw.subarray(0, 40), /header is missing or oversized/, kekBytes],
      ['truncated in the payload', raw.subarray(0, raw.length - 100), /the payload is \d+ bytes, the header says \d+ \(truncated or padded\)/, kekBytes],
      ['padded', Buffer.concat([raw, Buffer.from('x')]), /truncated or padded/, kekBytes],
      ['a flipped payload byte', withHeader(header, flippedPayload), /does not match its SHA-256 \(corrupt\)/, kekBytes],
      ['a header that is not JSON', Buffer.concat([Buffer.from('AEGIS-BACKUP 1\n{"engine":\n'), payload]), /header is not valid JSON/, kekBytes],
      ['a header without fields', withHeader({ engine: 'sqlite' }, payload), /header lacks/, kekBytes],
      ['another keyring (forged MAC)', withHeader({ ...header, mac: 'AAAA' }, payload), /MAC does not verify/, kekBytes],
      ['a keyring backup restored without a KEK', raw, /set AEGIS_KEK_FILE/, null],
      ['a header stripped of its MAC', withHeader({ ...header, migrations: [...(header.migrations as string[]), '9999_future'], mac: undefined }, payload), /made without AEGIS_KEK_FILE/, kekBytes],
    ];
    // Without a KEK (key-directory mode): envelopes with a correct digest but hostile contents.
    const { createHash } = await import('node:crypto');
    const envelope = (engine: string, body: Buffer, migrations = header.migrations) =>
      withHeader({ engine, created_at: new Date().toISOString(), migrations, payload_bytes: body.length, payload_sha256: createHash('sha256').update(body).digest('hex') }, body);
    const engine = header.engine as string;
    cases.push(
      ['a whole envelope around garbage', envelope(engine, randomBytes(2048)), engine === 'sqlite' ? /not a sound SQLite database/ : /not a pg_dump archive/, null],
      ['an envelope of the other engine', envelope(engine === 'sqlite' ? 'postgres' : 'sqlite', payload), /backup and the database is/, null],
      ['migrations unknown to this server', envelope(engine, payload, [...(header.migrations as string[]), '9999_future']), /made by a newer server \(migrations 9999_future unknown here\)/, null],
    );
    const count = async () => {
      const { db } = openDatabase(url);
      try {
        return (await db.selectFrom('licenses').select('id').execute()).map((r) => r.id);
      } finally {
        await db.destroy();
      }
    };
    const sqliteFile = url.startsWith('sqlite:') ? url.slice('sqlite:'.length) : null;
    const fileBefore = sqliteFile ? readFileSync(sqliteFile) : null;
    for (const [name, bytes, pattern, k] of cases) {
      const f = join(dir, `hostile-${randomBytes(3).toString('hex')}`);
      writeFileSync(f, bytes);
      await t.rejects(restoreDatabase(url, f, k, names), pattern, name);
    }
    if (sqliteFile) t.ok(readFileSync(sqliteFile).equals(fileBefore!), 'the SQLite file is byte for byte what it was');
    t.same(await count(), [lic.id], 'the database still holds exactly its license');
    const f = join(dir, 'cli-hostile');
    writeFileSync(f, raw.subarray(0, raw.length - 1));
    const r = cli(['restore', f], env(url, kek));
    t.equal(r.status, 1, 'the CLI exits 1');
    t.match(r.stderr, /aegis-server: error: refusing the backup: .*truncated or padded.*nothing was written/, 'with one clear line');
    await t.resolves(restoreDatabase(url, good, kekBytes, names), 'the untouched backup restores');
    t.same(await count(), [lic.id]);
  });

  t.test('every migration goes down and up again', { timeout: 180_000 }, async (t) => {
    const url = await fresh();
    const { db, dialect } = openDatabase(url);
    try {
      await migrateToLatest(db, dialect);
      const all = migrationNames(dialect);
      const reverted: string[] = [];
      for (;;) {
        const name = await migrateDownOne(db, dialect);
        if (name === null) break;
        reverted.push(name);
      }
      t.same(reverted, [...all].reverse(), 'each down ran, last first');
      t.ok((await migrationStatus(db, dialect)).every((m) => m.executed_at === null), 'nothing is executed');
      const tables = (await db.introspection.getTables()).map((x) => x.name).filter((n) => !n.startsWith('kysely_'));
      t.same(tables, [], 'every table is gone');
      t.same((await migrateToLatest(db, dialect)).applied, all, 'and every migration applies again');
      // Rolling upgrade: a newer server ran a migration this one does not know; this one still starts.
      await sql`insert into kysely_migration (name, timestamp) values ('9999_from_a_newer_server', '2026-12-01T00:00:00.000Z')`.execute(db);
      t.same((await migrateToLatest(db, dialect)).applied, [], 'a server of the previous version runs on the newer, additive schema');
      await sql`delete from kysely_migration where name = '9999_from_a_newer_server'`.execute(db);
    } finally {
      await db.destroy();
    }
    const kek = newKek();
    const s = await start(url, kek);
    await s.close();
    const last = migrationNames('sqlite').at(-1)!;
    const down = cli(['migrate', 'down'], env(url, kek));
    t.match(down.stdout, new RegExp(`reverted ${last}`), 'migrate down reverts the last one');
    const status = cli(['migrate', 'status'], env(url, kek));
    t.match(status.stdout, new RegExp(`${last}\\s+pending`), 'migrate status shows it pending');
    t.match(status.stdout, /0017_rules_alerts\s+\d{4}-/, 'and the others executed');
    const { db: db2, dialect: d2 } = openDatabase(url);
    try {
      t.same((await migrateToLatest(db2, d2)).applied, [last], 'and it applies again');
    } finally {
      await db2.destroy();
    }
  });
}
