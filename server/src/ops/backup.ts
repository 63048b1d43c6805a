/**
 * `aegis-server backup --out FILE` and `aegis-server restore FILE`.
 *
 * A backup file is an envelope around the engine's own dump:
 *   line 1  `AEGIS-BACKUP 1`
 *   line 2  a JSON header {engine, created_at, migrations, payload_bytes, payload_sha256, mac?}
 *   then    the payload: an SQLite database made by SQLite's online backup API, or a
 *           `pg_dump --format=custom` archive.
 * Keys are in it only as the database keyring's sealed rows (with AEGIS_KEK_FILE); in
 * key-directory mode the keys are not in the database and so not in the backup. With a
 * KEK, `mac` is an HMAC-SHA256 of the header and payload under a key derived from it, so
 * a backup of another keyring is refused before anything is written. With the PKCS#11
 * keyring the private keys are in the token, never in a backup: the header names the token
 * and the kids whose keys it must hold (`pkcs11_token`, `token_kids`), and the database
 * in it carries their metadata and the secrets sealed under the token's key.
 *
 * Restore checks everything first (magic, header, length, digest, mac, engine, that this
 * server knows every migration the backup ran, that the payload is a sound database or
 * archive), and only then replaces the database: SQLite by an atomic rename of a checked
 * copy, PostgreSQL by one pg_restore transaction (--single-transaction --exit-on-error).
 * The server must be stopped while restoring.
 */
import { spawnSync } from 'node:child_process';
import { createHash, createHmac, hkdfSync } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, mkdtempSync, openSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import { AegisError } from '../../../protocol/src/index.js';
import { writeFileAtomic } from '../../../runtime/src/atomic_file.js';
import { openDatabase, type Dialect } from '../db/database.js';
import { migratorFor } from '../db/migrations.js';

const MAGIC = 'AEGIS-BACKUP 1\n';
const MAX_HEADER = 64 * 1024;

export interface BackupHeader {
  engine: Dialect;
  created_at: string;
  migrations: string[];
  payload_bytes: number;
  payload_sha256: string;
  mac?: string;
  /** PKCS#11 keyring: the token holding the keys (not in this backup), and their kids. */
  pkcs11_token?: string;
  token_kids?: string[];
}

function refuse(message: string): AegisError {
  return new AegisError('BAD_REQUEST', `refusing the backup: ${message}; nothing was written`);
}

function macKey(kek: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', kek, Buffer.alloc(0), 'aegis-backup-mac/v1', 32));
}

function macOf(kek: Buffer, header: Omit<BackupHeader, 'mac'>): string {
  const canonical = JSON.stringify([header.engine, header.created_at, header.migrations, header.payload_bytes, header.payload_sha256]);
  return createHmac('sha256', macKey(kek)).update(canonical).digest('base64url');
}

function sqlitePath(url: string): string {
  const path = url.startsWith('sqlite:') ? url.slice('sqlite:'.length) : url;
  if (path === ':memory:' || path.length === 0) throw new AegisError('BAD_REQUEST', 'an in-memory SQLite database cannot be backed up or restored');
  return resolve(path);
}

function engineOf(url: string): Dialect {
  return url.startsWith('postgres://') || url.startsWith('postgresql://') ? 'postgres' : 'sqlite';
}

function run(cmd: string, args: string[], what: string): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.error) throw new AegisError('INTERNAL', `${what}: cannot run ${cmd}: ${r.error.message} (apt-get install postgresql-client)`);
  if (r.status !== 0) throw new AegisError('INTERNAL', `${what} failed (${cmd} exit ${r.status}): ${(r.stderr || r.stdout).trim().split('\n').slice(-3).join(' / ')}`);
}

async function executedMigrations(url: string): Promise<string[]> {
  const { db, dialect } = openDatabase(url);
  try {
    return (await migratorFor(db, dialect).getMigrations()).filter((m) => m.executedAt !== undefined).map((m) => m.name);
  } finally {
    await db.destroy();
  }
}

/** Writes a backup of the database at `url` to `out` (0600, atomically). */
export async function backupDatabase(url: string, out: string, kek: Buffer | null, token: Pick<BackupHeader, 'pkcs11_token' | 'token_kids'> = {}): Promise<BackupHeader> {
  const engine = engineOf(url);
  const migrations = await executedMigrations(url);
  if (migrations.length === 0) throw new AegisError('BAD_REQUEST', 'the database has no Aegis schema; nothing to back up');
  const tmp = mkdtempSync(join(tmpdir(), 'aegis-backup-'));
  let payload: Buffer;
  try {
    const file = join(tmp, 'payload');
    if (engine === 'sqlite') {
      // SQLite's online backup: a consistent copy while the server keeps writing.
      const handle = new SqliteDatabase(sqlitePath(url), { fileMustExist: true });
      try {
        await handle.backup(file);
      } finally {
        handle.close();
      }
    } else {
      run('pg_dump', ['--format=custom', '--no-owner', '--no-privileges', `--file=${file}`, `--dbname=${url}`], 'pg_dump');
    }
    payload = readFileSync(file);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  const base = { engine, created_at: new Date().toISOString(), migrations, payload_bytes: payload.length, payload_sha256: createHash('sha256').update(payload).digest('hex'), ...token };
  const header: BackupHeader = kek ? { ...base, mac: macOf(kek, base) } : base;
  writeFileAtomic(out, Buffer.concat([Buffer.from(MAGIC + JSON.stringify(header) + '\n'), payload]), 0o600);
  return header;
}

/** Parses and checks a backup file; throws a clear refusal for anything that is not a whole, known backup. */
export function readBackup(file: string, kek: Buffer | null, knownMigrations: string[]): { header: BackupHeader; payload: Buffer } {
  let raw: Buffer;
  try {
    raw = readFileSync(file);
  } catch (cause) {
    throw new AegisError('BAD_REQUEST', `cannot read ${file}: ${(cause as Error).message}`, { cause });
  }
  if (raw.length < MAGIC.length || raw.subarray(0, MAGIC.length).toString('latin1') !== MAGIC) throw refuse(`${file} is not an Aegis backup (no AEGIS-BACKUP 1 header)`);
  const end = raw.indexOf(0x0a, MAGIC.length);
  if (end < 0 || end - MAGIC.length > MAX_HEADER) throw refuse('its header is missing or oversized (truncated?)');
  let header: BackupHeader;
  try {
    header = JSON.parse(raw.subarray(MAGIC.length, end).toString('utf8')) as BackupHeader;
  } catch {
    throw refuse('its header is not valid JSON');
  }
  const h = header as unknown as Record<string, unknown>;
  if (
    (h.engine !== 'sqlite' && h.engine !== 'postgres') ||
    typeof h.created_at !== 'string' ||
    !Array.isArray(h.migrations) ||
    !h.migrations.every((m) => typeof m === 'string') ||
    !Number.isSafeInteger(h.payload_bytes) ||
    typeof h.payload_sha256 !== 'string' ||
    (h.mac !== undefined && typeof h.mac !== 'string')
  ) {
    throw refuse('its header lacks engine, created_at, migrations, payload_bytes or payload_sha256');
  }
  const payload = raw.subarray(end + 1);
  if (payload.length !== header.payload_bytes) throw refuse(`the payload is ${payload.length} bytes, the header says ${header.payload_bytes} (truncated or padded)`);
  if (createHash('sha256').update(payload).digest('hex') !== header.payload_sha256) throw refuse('the payload does not match its SHA-256 (corrupt)');
  if (kek) {
    if (header.mac === undefined) throw refuse('it was made without AEGIS_KEK_FILE, but this server runs a database keyring; restore it without AEGIS_KEK_FILE');
    const { mac: _m, ...base } = header;
    if (macOf(kek, base) !== header.mac) throw refuse("its MAC does not verify under this AEGIS_KEK_FILE (another keyring's backup, or altered)");
  } else if (header.mac !== undefined) {
    throw refuse('it holds a database keyring: set AEGIS_KEK_FILE to the key-encryption key it was made under');
  }
  const unknown = header.migrations.filter((m) => !knownMigrations.includes(m));
  if (unknown.length > 0) throw refuse(`it was made by a newer server (migrations ${unknown.join(', ')} unknown here)`);
  return { header, payload };
}

function fsyncPath(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Replaces the database at `url` with the backup in `file` (the server must be stopped). */
export async function restoreDatabase(url: string, file: string, kek: Buffer | null, knownMigrations: string[]): Promise<BackupHeader> {
  const { header, payload } = readBackup(file, kek, knownMigrations);
  const engine = engineOf(url);
  if (header.engine !== engine) throw refuse(`it is a ${header.engine} backup and the database is ${engine}`);
  if (engine === 'sqlite') {
    const target = sqlitePath(url);
    const staged = `${target}.restore-${process.pid}`;
    writeFileAtomic(staged, payload, 0o600);
    try {
      const check = new SqliteDatabase(staged, { fileMustExist: true });
      try {
        const ok = check.pragma('integrity_check', { simple: true });
        if (ok !== 'ok') throw refuse(`its SQLite database fails integrity_check (${String(ok)})`);
        const names = (check.prepare('select name from kysely_migration order by name').all() as Array<{ name: string }>).map((r) => r.name);
        if (names.join(',') !== header.migrations.join(',')) throw refuse('its database does not hold the migrations its header lists');
        check.pragma('journal_mode = DELETE');
      } catch (err) {
        throw err instanceof AegisError ? err : refuse(`its payload is not a sound SQLite database (${(err as Error).message})`);
      } finally {
        check.close();
      }
      // Fold the old database's write-ahead log in and drop it, so it cannot replay onto the restored file.
      if (existsSync(target)) {
        const old = new SqliteDatabase(target, { fileMustExist: true });
        try {
          old.pragma('wal_checkpoint(TRUNCATE)');
        } finally {
          old.close();
        }
      }
      for (const side of ['-wal', '-shm']) rmSync(target + side, { force: true });
      fsyncPath(staged);
      renameSync(staged, target);
      fsyncPath(dirname(target));
    } finally {
      rmSync(staged, { force: true });
    }
    return header;
  }
  const tmp = mkdtempSync(join(tmpdir(), 'aegis-restore-'));
  try {
    const archive = join(tmp, 'payload.dump');
    writeFileAtomic(archive, payload, 0o600);
    const listed = spawnSync('pg_restore', ['--list', archive], { encoding: 'utf8' });
    if (listed.error || listed.status !== 0) throw refuse(`its payload is not a pg_dump archive (${(listed.stderr || String(listed.error)).trim().split('\n')[0]})`);
    // One transaction: either the whole backup replaces the schema, or nothing changes.
    run('pg_restore', ['--single-transaction', '--exit-on-error', '--clean', '--if-exists', '--no-owner', '--no-privileges', `--dbname=${url}`, archive], 'pg_restore');
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return header;
}
