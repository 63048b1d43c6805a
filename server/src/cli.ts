#!/usr/bin/env node
/**
 * aegis-server: the license authority. `aegis-server` (or `serve`) runs it; the other
 * commands manage its database, signing keys and admin API keys.
 */
import { Command, Option } from 'commander';
import { AegisError } from '../../protocol/src/index.js';
import { ApiKeys, SCOPES } from './api_keys.js';
import { SERVER_VERSION } from './version.js';
import { systemClock } from './clock.js';
import { loadConfig, type ConfigFlags, type ServerConfig } from './config.js';
import { openDatabase } from './db/database.js';
import { migrateToLatest, migrationNames } from './db/migrations.js';
import { DbKeyring, loadKek } from './keys/db_keyring.js';
import type { Keyring } from './keys/keyring.js';
import { migrateDownOne, migrationStatus } from './ops/migrate.js';
import { KeyStore } from './keys/keystore.js';
import { FleetKeys, fleetExists, type FleetKey } from './rollout/fleet_keys.js';
import { DEFAULT_TRUST_DOMAIN, PKI_CA, PKI_KIND } from './pki/names.js';
import { readFileSync, rmSync } from 'node:fs';

function configOf(cmd: Command): ServerConfig {
  return loadConfig(cmd.optsWithGlobals<ConfigFlags>());
}

async function withDatabase<T>(config: ServerConfig, fn: (keys: ApiKeys) => Promise<T>): Promise<T> {
  const { db, dialect } = openDatabase(config.databaseUrl);
  try {
    await migrateToLatest(db, dialect);
    return await fn(new ApiKeys(db, systemClock));
  } finally {
    await db.destroy();
  }
}

async function withFleetKeys<T>(config: ServerConfig, fn: (keys: FleetKeys, db: ReturnType<typeof openDatabase>['db']) => Promise<T>): Promise<T> {
  const master = config.fleetKey;
  if (!master) throw new AegisError('BAD_REQUEST', 'no master fleet key: set AEGIS_FLEET_KEY or AEGIS_FLEET_KEY_FILE as the server has it');
  const { db, dialect } = openDatabase(config.databaseUrl);
  try {
    await migrateToLatest(db, dialect);
    return await fn(new FleetKeys(db, master, systemClock), db);
  } finally {
    await db.destroy();
  }
}

/** The keyring the server uses: the database's with AEGIS_KEK_FILE or AEGIS_PKCS11_*, else the key directory. */
async function withKeyring<T>(config: ServerConfig, fn: (keys: Keyring) => Promise<T> | T): Promise<T> {
  if (!config.kekFile && !config.pkcs11) return fn(KeyStore.open(config.keysDir));
  const kek = config.kekFile ? loadKek(config.kekFile) : null;
  const { db, dialect } = openDatabase(config.databaseUrl);
  let ring: Keyring | null = null;
  try {
    await migrateToLatest(db, dialect);
    ring = kek ? await DbKeyring.open(db, kek) : await (await import('./keys/pkcs11_keyring.js')).openPkcs11Keyring(db, config.pkcs11!);
    return await fn(ring);
  } finally {
    ring?.close();
    await db.destroy();
  }
}

/** The fleet key alone on stdout (for a 0600 file), what it is on stderr; or JSON. */
function printFleetKey(k: FleetKey, json: boolean, note: string): void {
  const key = k.key.toString('base64');
  if (json) {
    process.stdout.write(JSON.stringify({ fleet: k.fleet, generation: k.generation, key }) + '\n');
    return;
  }
  process.stdout.write(key + '\n');
  process.stderr.write(`fleet ${k.fleet}, key generation ${k.generation}: install it as fleet_key_file (0600) on this fleet's hosts only. ${note}\n`);
}

function printAdminKey(k: { name: string; scopes: string[]; customer_id?: string | null; key: string }): void {
  process.stdout.write(
    [
      '',
      `  Admin API key "${k.name}" (scopes: ${k.scopes.join(', ')}; ${k.customer_id ? `limited to customer ${k.customer_id}` : 'every customer'})`,
      '',
      `    ${k.key}`,
      '',
      '  It is shown only this once; the server keeps only a hash. Use it as',
      '  X-API-Key or "Authorization: Bearer ..." (aegisctl reads AEGIS_API_KEY).',
      '',
    ].join('\n') + '\n',
  );
}

async function serve(config: ServerConfig): Promise<void> {
  // A database keyring makes its first key in startApp (once, whichever replica is first).
  const keys = config.kekFile || config.pkcs11 ? null : KeyStore.open(config.keysDir);
  if (keys && keys.activeKid() === null) {
    const k = keys.generate();
    process.stderr.write(`aegis-server: first run: generated signing key ${k.kid} in ${config.keysDir}\n`);
  }
  // The app and what only some commands use are loaded when needed: every aegis-server
  // command would otherwise pay for loading the whole server first.
  const { startApp } = await import('./app.js');
  const app = await startApp(config);
  if ((await app.apiKeys.count()) === 0) {
    printAdminKey(await app.apiKeys.create('bootstrap-admin', [...SCOPES]));
  }
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    app.log.info('shutting down', { signal });
    const force = setTimeout(() => process.exit(1), 5000);
    force.unref();
    void app.close().then(() => process.exit(0));
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}

const program = new Command('aegis-server')
  .description('Aegis license authority and control plane')
  .version(SERVER_VERSION)
  .addOption(new Option('--listen <host:port>', 'address to listen on (env AEGIS_LISTEN)'))
  .addOption(new Option('--database <url>', 'sqlite:<path> or postgres://… (env DATABASE_URL)'))
  .addOption(new Option('--keys-dir <dir>', 'signing keys directory (env AEGIS_KEYS_DIR)'))
  .addOption(new Option('--nats-url <url>', 'NATS for snapshot and license distribution (env NATS_URL); none: HTTP only'))
  .addOption(new Option('--pki-dir <dir>', 'CA and server certificate directory (env AEGIS_PKI_DIR; default <keys-dir>/pki)'))
  .addOption(new Option('--agent-listen <host:port>', 'mTLS agent listener address (env AEGIS_AGENT_LISTEN; default 127.0.0.1:8443)'))
  .addOption(new Option('--ssl-cert <path>', 'agent listener certificate; enables mTLS (env SERVER_CERT_PATH)'))
  .addOption(new Option('--ssl-key <path>', 'agent listener private key; enables mTLS (env SERVER_KEY_PATH)'))
  .addOption(new Option('--tls-cert <path>', 'serve the main listener over HTTPS with this certificate (PEM; env AEGIS_TLS_CERT)'))
  .addOption(new Option('--tls-key <path>', 'private key of --tls-cert (PEM, mode 0600; env AEGIS_TLS_KEY)'))
  .addOption(new Option('--mtls-ca <path>', 'CA that client certificates must chain to; enables mTLS (env CLIENT_CA_CERT_PATH)'))
  .showHelpAfterError();

program
  .command('serve', { isDefault: true })
  .description('run the server (migrates first; generates a signing key and an admin key on first run)')
  .action(async (_o, cmd: Command) => serve(configOf(cmd)));

program
  .command('migrate [action]')
  .description('apply database migrations (default), "status": list them, "down": revert the last one')
  .action(async (action: string | undefined, _o, cmd: Command) => {
    const config = configOf(cmd);
    if (action !== undefined && !['up', 'status', 'down'].includes(action)) throw new AegisError('BAD_REQUEST', `unknown migrate action ${JSON.stringify(action)}: use up, status or down`);
    const { db, dialect, description } = openDatabase(config.databaseUrl);
    try {
      if (action === 'status') {
        for (const m of await migrationStatus(db, dialect)) process.stdout.write(`${m.name.padEnd(32)} ${m.executed_at ?? 'pending'}\n`);
      } else if (action === 'down') {
        const name = await migrateDownOne(db, dialect);
        process.stdout.write(name ? `reverted ${name} on ${description}\n` : `${description} has no migration to revert\n`);
      } else {
        const { applied } = await migrateToLatest(db, dialect);
        process.stdout.write(applied.length > 0 ? `applied ${applied.join(', ')} to ${description}\n` : `${description} is up to date\n`);
      }
    } finally {
      await db.destroy();
    }
  });

program
  .command('backup')
  .description('write a backup of the database (SQLite online backup, or pg_dump); keys only as sealed keyring rows')
  .requiredOption('--out <file>', 'where to write it (0600)')
  .action(async (o: { out: string }, cmd: Command) => {
    const config = configOf(cmd);
    // PKCS#11: the metadata is in the database (kids, states, public keys, sealed secrets); the keys are not.
    const token = config.pkcs11 ? await withKeyring(config, (ring) => ({ label: config.pkcs11!.tokenLabel, kids: ring.kids() })) : null;
    const { backupDatabase } = await import('./ops/backup.js');
    const h = await backupDatabase(config.databaseUrl, o.out, config.kekFile ? loadKek(config.kekFile) : null, token ? { pkcs11_token: token.label, token_kids: token.kids } : {});
    process.stdout.write(`backed up ${h.engine} (${h.migrations.length} migrations, ${h.payload_bytes} bytes) to ${o.out}\n`);
    if (token) {
      process.stderr.write(
        `note: the private signing keys (${token.kids.join(', ') || 'none'}) and the sealing key of the NATS seeds and CA key are in PKCS#11 token "${token.label}", not in this backup; it holds their metadata and the sealed secrets only. Back the token up as its vendor documents (SoftHSM: its token directory)\n`,
      );
    } else if (!config.kekFile) process.stderr.write(`note: without AEGIS_KEK_FILE the signing keys are in ${config.keysDir}, not in this backup; back that directory up separately\n`);
  });

program
  .command('restore <file>')
  .description('replace the database with a backup (stop every server first); refuses a corrupt, truncated or foreign file and then writes nothing')
  .action(async (file: string, _o, cmd: Command) => {
    const config = configOf(cmd);
    const dialect = config.databaseUrl.startsWith('postgres') ? 'postgres' : 'sqlite';
    const { restoreDatabase } = await import('./ops/backup.js');
    const h = await restoreDatabase(config.databaseUrl, file, config.kekFile ? loadKek(config.kekFile) : null, migrationNames(dialect));
    process.stdout.write(`restored the ${h.engine} backup of ${h.created_at} (${h.migrations.length} migrations); start the servers (they apply newer migrations)\n`);
  });

const keys = program.command('keys').description('manage Ed25519 signing keys');
keys
  .command('generate')
  .description('generate a key pair (the first one becomes the signing key)')
  .option('--kid <id>', 'key id (default aegis-YYYY-NN)')
  .action(async (o: { kid?: string }, cmd: Command) => {
    const k = await withKeyring(configOf(cmd), (ring) => ring.generate(o.kid));
    process.stdout.write(`generated ${k.kid}${k.active ? ' (active)' : ''}\n`);
  });
keys
  .command('rotate')
  .description('generate a new key and sign with it; older keys keep verifying until retired')
  .option('--kid <id>', 'key id (default aegis-YYYY-NN)')
  .action(async (o: { kid?: string }, cmd: Command) => {
    const k = await withKeyring(configOf(cmd), (ring) => ring.rotate(o.kid));
    process.stdout.write(`rotated: ${k.kid} now signs\n`);
  });
keys
  .command('list')
  .description('list keys')
  .option('--json', 'machine-readable output')
  .action(async (o: { json?: boolean }, cmd: Command) => {
    const list = await withKeyring(configOf(cmd), (ring) => ring.list());
    if (o.json) {
      process.stdout.write(JSON.stringify(list, null, 2) + '\n');
      return;
    }
    if (list.length === 0) process.stdout.write('no keys; run "aegis-server keys generate"\n');
    for (const k of list) {
      const state = k.active ? 'active' : k.retired ? `retired ${k.retired_at}` : 'verifying';
      process.stdout.write(`${k.kid.padEnd(20)} ${state.padEnd(32)} x=${k.public_jwk.x}\n`);
    }
  });
keys
  .command('retire <kid>')
  .description('stop publishing and accepting a key')
  .action(async (kid: string, _o, cmd: Command) => {
    await withKeyring(configOf(cmd), (ring) => ring.retire(kid));
    process.stdout.write(`retired ${kid}: it is no longer in the JWKS and its tokens no longer verify\n`);
  });

const pki = program.command('pki').description('the certificate authority for agent mTLS');
pki
  .command('init')
  .description('create an Ed25519 CA and the agent listener certificate (keys 0600)')
  .option('--trust-domain <name>', 'SPIFFE trust domain of machine certificates', DEFAULT_TRUST_DOMAIN)
  .option('--dir <dir>', 'where to write (default: --pki-dir, or <keys-dir>/pki)')
  .option('--dns <names>', 'comma-separated DNS names for the server certificate', 'localhost')
  .option('--ip <addresses>', 'comma-separated IP addresses for the server certificate', '127.0.0.1')
  .option('--force', 'replace an existing CA (certificates it issued stop verifying)')
  .action(async (o: { trustDomain: string; dir?: string; dns: string; ip: string; force?: boolean }, cmd: Command) => {
    const dir = o.dir ?? configOf(cmd).pkiDir;
    const list = (v: string) => v.split(',').map((x) => x.trim()).filter(Boolean);
    const config = configOf(cmd);
    const { initPki } = await import('./pki/authority.js');
    const r = await initPki(dir, { trustDomain: o.trustDomain, dnsNames: list(o.dns), ips: list(o.ip), force: o.force ?? false });
    if (config.kekFile || config.pkcs11) {
      // Database keyring: the CA key goes into it sealed, and the plaintext file goes away.
      await withKeyring(config, async (ring) => ring.secrets!.put(PKI_KIND, PKI_CA, readFileSync(r.paths.caKey), readFileSync(r.paths.caCert, 'utf8')));
      rmSync(r.paths.caKey);
      process.stdout.write(`The CA key is sealed in the ${config.kekFile ? 'database keyring (AEGIS_KEK_FILE)' : 'database under the PKCS#11 token\'s key'}; no ca.key file is kept.\n`);
    }
    process.stdout.write(
      [
        `PKI initialised in ${dir} (trust domain ${r.trustDomain})`,
        `  CA certificate      ${r.paths.caCert}  (sha256 ${r.caFingerprint})`,
        `  CA key              ${r.paths.caKey}  (0600)`,
        `  server certificate  ${r.paths.serverCert}  (${r.serverSans.join(', ')})`,
        `  server key          ${r.paths.serverKey}  (0600)`,
        'Start the server with ENABLE_MTLS=true (or --ssl-cert/--ssl-key/--mtls-ca) to open the agent listener.',
        '',
      ].join('\n'),
    );
  });

const fleetKey = program.command('fleet-key').description("per-fleet license envelope keys (derived from AEGIS_FLEET_KEY)");
fleetKey
  .command('show <fleet>')
  .description("print the fleet's current key (base64), for fleet_key / fleet_key_file on its hosts")
  .option('--json', 'print {fleet, generation, key}')
  .action(async (fleet: string, o: { json?: boolean }, cmd: Command) => {
    const [k, known] = await withFleetKeys(configOf(cmd), async (keys, db) => [await keys.current(fleet), await fleetExists(db, fleet)] as const);
    printFleetKey(k, o.json ?? false, known ? '' : 'No license names this fleet yet.');
  });
fleetKey
  .command('rotate <fleet>')
  .description('move the fleet to a new key generation; envelopes sealed from now on open only with the new key')
  .option('--json', 'print {fleet, generation, key}')
  .action(async (fleet: string, o: { json?: boolean }, cmd: Command) => {
    const k = await withFleetKeys(configOf(cmd), (keys) => keys.rotate(fleet));
    printFleetKey(k, o.json ?? false, "The server seals with it from its next envelope (a license change, a host's request, or the 5-minute publish); hosts keep their held license until they get the new key.");
  });

const admin = program.command('admin').description('manage admin API keys');
admin
  .command('create-key')
  .description('create an API key and print it once')
  .requiredOption('--name <name>', 'who or what the key is for')
  .requiredOption('--scopes <list>', `comma-separated scopes: ${SCOPES.join(', ')}`)
  .option('--customer <id>', "limit the key to one customer's machines, licenses, snapshots and audit rows")
  .action(async (o: { name: string; scopes: string; customer?: string }, cmd: Command) => {
    const scopes = o.scopes.split(',').map((s) => s.trim()).filter(Boolean);
    const created = await withDatabase(configOf(cmd), (k) => k.create(o.name, scopes, o.customer ?? null));
    printAdminKey(created);
  });
admin
  .command('list-keys')
  .description('list API keys (never the keys themselves)')
  .action(async (_o, cmd: Command) => {
    const list = await withDatabase(configOf(cmd), (k) => k.list());
    for (const k of list) {
      const tenant = k.customer_id ? `customer ${k.customer_id}` : 'all customers';
      process.stdout.write(`${k.id}  ${k.key_prefix}…  ${k.name}  [${k.scopes.join(',')}]  ${tenant}${k.revoked_at ? `  revoked ${k.revoked_at}` : ''}\n`);
    }
  });
admin
  .command('revoke-key <id>')
  .description('revoke an API key')
  .action(async (id: string, _o, cmd: Command) => {
    const done = await withDatabase(configOf(cmd), (k) => k.revoke(id));
    if (!done) throw new AegisError('NOT_FOUND', `no active API key ${id}`);
    process.stdout.write(`revoked ${id}\n`);
  });

const intel = program.command('intel').description('package vulnerability intelligence (offline-first)');
intel
  .command('match')
  .description('match a dpkg status file against vulnerability feeds (no database, no agent); exit 3 when part of the status file could not be read')
  .requiredOption('--dpkg-status <file>', 'the dpkg status file (/var/lib/dpkg/status)')
  .requiredOption('--release <codename>', 'the Debian release the host runs (bookworm, or 12)')
  .option('--feed <file|dir|url>', 'an OSV record, array, directory or all.zip, or the Debian tracker JSON (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
  .option('--json', 'print the findings as a JSON array')
  .action(async (o: { dpkgStatus: string; release: string; feed: string[]; json?: boolean }) => {
    const { formatFindings, runMatch } = await import('./intel/intel_cli.js');
    const { findings, inventory } = await runMatch(o.dpkgStatus, o.release, o.feed);
    process.stdout.write(o.json ? JSON.stringify(findings, null, 2) + '\n' : formatFindings(findings));
    for (const p of inventory.problems) process.stderr.write(`aegis-server: ${o.dpkgStatus}: paragraph ${p.paragraph} (line ${p.line}) skipped: ${p.code}: ${p.message}\n`);
    if (inventory.problems.length > 0) process.exitCode = 3;
  });

intel
  .command('import <feed...>')
  .description('import vulnerability feeds (file, directory of OSV records, all.zip, Debian tracker JSON, or http(s) URL) into the database; each feed in one transaction, and a refused feed changes nothing')
  .option('--json', 'print each import summary as JSON')
  .action(async (feeds: string[], o: { json?: boolean }, cmd: Command) => {
    const config = configOf(cmd);
    const { formatImport, importFeed } = await import('./intel/feed_import.js');
    const { IntelStore } = await import('./intel/intel_store.js');
    const { db, dialect } = openDatabase(config.databaseUrl);
    try {
      await migrateToLatest(db, dialect);
      const store = new IntelStore(db, systemClock);
      for (const f of feeds) {
        if (!o.json) process.stderr.write(`importing ${f}…\n`);
        const outcome = await importFeed(store, f);
        process.stdout.write(o.json ? JSON.stringify(outcome) + '\n' : formatImport(outcome));
      }
    } finally {
      await db.destroy();
    }
  });

program.parseAsync(process.argv).catch((err: unknown) => {
  // Operator mistakes get one clear line, not a stack trace.
  const message = err instanceof AegisError || (err instanceof Error && !(err instanceof TypeError)) ? err.message : String(err);
  process.stderr.write(`aegis-server: error: ${message}\n`);
  if (!(err instanceof AegisError) && process.env.AEGIS_DEBUG) console.error(err);
  process.exit(err instanceof AegisError && err.code === 'INSECURE_KEY_FILE' ? 78 : 1);
});
