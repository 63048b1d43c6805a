/** The mTLS suite on SQLite, plus `aegis-server pki init` run as a person would. */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { mtlsSuite } from './mtls_suite.js';
import { certificateValidity } from '../../agent/src/csr.js';
import { x509 } from '../src/pki/x509.js';

const CLI = fileURLToPath(new URL('../src/cli.js', import.meta.url));

t.test('aegis-server pki init: CA and server certificate, keys 0600, no overwrite without --force', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-pki-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const env = { ...process.env, AEGIS_KEYS_DIR: join(dir, 'keys') };
  const run = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env });
  const r = run('pki', 'init', '--trust-domain', 'corp.example', '--dns', 'aegis.corp.example,localhost', '--ip', '127.0.0.1,10.0.0.5');
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /PKI initialised in .*keys\/pki \(trust domain corp\.example\)/);
  const pki = join(dir, 'keys', 'pki');
  t.equal(statSync(join(pki, 'ca.key')).mode & 0o777, 0o600, 'CA key 0600');
  t.equal(statSync(join(pki, 'server.key')).mode & 0o777, 0o600, 'server key 0600');
  const server = new x509.X509Certificate(readFileSync(join(pki, 'server.crt'), 'utf8'));
  const san = server.getExtension(x509.SubjectAlternativeNameExtension)!;
  t.same(san.names.toJSON().map((n) => `${n.type}:${n.value}`), ['dns:aegis.corp.example', 'dns:localhost', 'ip:127.0.0.1', 'ip:10.0.0.5']);
  t.equal(server.publicKey.algorithm.name, 'Ed25519');
  t.ok(await server.verify({ publicKey: new x509.X509Certificate(readFileSync(join(pki, 'ca.crt'), 'utf8')) }), 'server certificate signed by the CA');
  t.ok(certificateValidity(readFileSync(join(pki, 'ca.crt'), 'utf8')));

  const again = run('pki', 'init');
  t.equal(again.status, 1);
  t.match(again.stderr, /already exists.*--force/);
  t.notMatch(again.stderr, /at .*\.js:\d+/, 'no stack trace');
  t.equal(run('pki', 'init', '--ip', 'not-an-ip', '--dir', join(dir, 'other')).status, 1);
  const forced = run('pki', 'init', '--force', '--dir', pki);
  t.equal(forced.status, 0, forced.stderr);

  // ENABLE_MTLS without the files says what to do.
  const bad = spawnSync(process.execPath, [CLI, '--listen', '127.0.0.1:0', '--agent-listen', '127.0.0.1:0', '--pki-dir', join(dir, 'none'), '--database', `sqlite:${join(dir, 'db.sqlite')}`], {
    encoding: 'utf8',
    env: { ...env, ENABLE_MTLS: 'true' },
    timeout: 20_000,
  });
  t.equal(bad.status, 1);
  t.match(bad.stderr, /pki init/);
});

mtlsSuite(t, async () => undefined);
