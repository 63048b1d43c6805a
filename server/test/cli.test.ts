/** aegis-server's commands, run as a person would: as a child process with plain node. */
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openDatabase } from '../src/db/database.js';

const CLI = fileURLToPath(new URL('../src/cli.js', import.meta.url));

function cli(env: NodeJS.ProcessEnv, ...args: string[]) {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, ...env } });
}

t.test('keys and admin commands', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-cli-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const env = { AEGIS_KEYS_DIR: join(dir, 'keys'), DATABASE_URL: `sqlite:${join(dir, 'db.sqlite')}` };

  const gen = cli(env, 'keys', 'generate', '--kid', 'aegis-2026-07');
  t.equal(gen.status, 0, gen.stderr);
  t.match(gen.stdout, /generated aegis-2026-07 \(active\)/);
  t.equal(statSync(join(dir, 'keys', 'aegis-2026-07.private.pem')).mode & 0o777, 0o600, 'private key is 0600');
  t.equal(cli(env, 'keys', 'generate', '--kid', 'aegis-2026-07').status, 1, 'duplicate kid refused');
  const bad = cli(env, 'keys', 'generate', '--kid', '../escape');
  t.equal(bad.status, 1);
  t.match(bad.stderr, /invalid kid/);
  t.notMatch(bad.stderr, /at .*\.js:\d+/, 'no stack trace');

  const rot = cli(env, 'keys', 'rotate');
  t.match(rot.stdout, /rotated: aegis-\d{4}-\d{2} now signs/);
  const list = JSON.parse(cli(env, 'keys', 'list', '--json').stdout) as Array<{ kid: string; active: boolean }>;
  t.equal(list.length, 2);
  t.equal(list.filter((k) => k.active).length, 1);
  t.equal(cli(env, 'keys', 'retire', 'aegis-2026-07').status, 0);
  const active = list.find((k) => k.active)!.kid;
  const refuse = cli(env, 'keys', 'retire', active);
  t.equal(refuse.status, 1);
  t.match(refuse.stderr, /keys rotate/);

  t.match(cli(env, 'migrate').stdout, /applied 0001_initial/);
  t.match(cli(env, 'migrate').stdout, /up to date/);
  const created = cli(env, 'admin', 'create-key', '--name', 'ops', '--scopes', 'licenses:read,admin:read');
  t.equal(created.status, 0, created.stderr);
  t.match(created.stdout, /aegis_sk_[A-Za-z0-9_-]{43}/);
  const badScope = cli(env, 'admin', 'create-key', '--name', 'x', '--scopes', 'root');
  t.equal(badScope.status, 1);
  t.match(badScope.stderr, /unknown scope/);
  const listed = cli(env, 'admin', 'list-keys').stdout;
  t.match(listed, /ops/);
  t.notMatch(listed, /aegis_sk_[A-Za-z0-9_-]{43}/, 'keys are never listed');
  t.match(listed, /ops .*all customers/, 'an unrestricted key says so');

  // A key limited to one customer: the customer must exist, and list-keys shows the limit.
  const unknown = cli(env, 'admin', 'create-key', '--name', 'tenant', '--scopes', 'licenses:read', '--customer', 'no-such-customer');
  t.equal(unknown.status, 1, 'a key cannot be limited to a customer that does not exist');
  t.match(unknown.stderr, /no customer no-such-customer/);
  const { db } = openDatabase(env.DATABASE_URL);
  const now = new Date().toISOString();
  await db.insertInto('customers').values({ id: 'cust-acme', name: 'Acme', email: null, company: null, is_active: 1, created_at: now, updated_at: now }).execute();
  await db.destroy();
  const tenant = cli(env, 'admin', 'create-key', '--name', 'acme-ops', '--scopes', 'licenses:read', '--customer', 'cust-acme');
  t.equal(tenant.status, 0, tenant.stderr);
  t.match(tenant.stdout, /limited to customer cust-acme/);
  t.match(cli(env, 'admin', 'list-keys').stdout, /acme-ops .*customer cust-acme/);
});

function startServe(env: NodeJS.ProcessEnv): Promise<{ stdout: string; url: string; stop(): Promise<number | null> }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, '--listen', '127.0.0.1:0'], { env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => {
      stderr += d;
      const m = /"url":"(http:\/\/[^"]+)"/.exec(stderr);
      if (m) {
        // Give stdout (the admin key banner) a moment to flush.
        setTimeout(
          () =>
            resolve({
              stdout,
              url: m[1]!,
              stop: () =>
                new Promise((res) => {
                  child.once('exit', (code) => res(code));
                  child.kill('SIGTERM');
                }),
            }),
          100,
        );
      }
    });
    child.once('exit', (code) => reject(new Error(`server exited ${code}: ${stderr}`)));
  });
}

t.test('serve: first run makes a signing key and prints an admin key once', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-serve-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const env = { AEGIS_KEYS_DIR: join(dir, 'keys'), DATABASE_URL: `sqlite:${join(dir, 'var', 'aegis.db')}` };
  const first = await startServe(env);
  const key = /aegis_sk_[A-Za-z0-9_-]{43}/.exec(first.stdout)?.[0];
  t.ok(key, 'admin key printed');
  const r = await fetch(`${first.url}/api/v1/admin/stats`, { headers: { 'x-api-key': key! } });
  t.equal(r.status, 200, 'printed key works');
  t.equal(await first.stop(), 0, 'SIGTERM exits 0');
  const second = await startServe(env);
  t.notMatch(second.stdout, /aegis_sk_/, 'second start prints no key');
  t.equal(await second.stop(), 0);

  const priv = JSON.parse(cli(env, 'keys', 'list', '--json').stdout)[0].kid as string;
  chmodSync(join(dir, 'keys', `${priv}.private.pem`), 0o644);
  const refused = spawnSync(process.execPath, [CLI, '--listen', '127.0.0.1:0'], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 20000 });
  t.equal(refused.status, 78, 'exit code EX_CONFIG for an insecure key');
  t.match(refused.stderr, /must not be readable by group or others/);
});
