/**
 * The Python client (clients/python, package aegis_license) against a real aegis-server:
 * module licenses are issued through the API, and the Python unittest files verify their
 * tokens (valid, tampered, alg none, HS256 keyed with the public key, unknown kid, expired,
 * another module, a version not allowed, a machine's license and kernel tokens, hostile
 * versions), each with
 * the same code the server's /validate answers; a license revoked on the server is REVOKED
 * through validate_online. Then the server is stopped and they check that the cached key
 * set verifies offline, that online validation falls back to offline verification, and
 * that the revocation seen before is still REVOKED. Run once per storage backend, with
 * every Python interpreter installed (the one on PATH and Debian's /usr/bin/python3).
 */
import type { Test } from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { commandPath } from '../harness/capabilities.js';
import { activateTestHost, startTestServer, TestHost, type TestServer } from '../harness/server.js';

export type DatabaseFactory = () => Promise<string | undefined>;

const CLIENT_DIR = fileURLToPath(new URL('../../../clients/python', import.meta.url));
const DAY_MS = 86_400_000;

/** Every distinct Python interpreter to test with: python3 on PATH and Debian's. */
export function pythonInterpreters(): string[] {
  const found = [commandPath('python3'), existsSync('/usr/bin/python3') ? '/usr/bin/python3' : null].filter((p): p is string => p !== null);
  const byReal = new Map<string, string>();
  for (const p of found) byReal.set(realpathSync(p), p);
  return [...byReal.values()];
}

/** Why the Python tests cannot run (no python3, or one without cryptography), or null. */
export function missingPython(): string | null {
  const pythons = pythonInterpreters();
  if (pythons.length === 0) return 'python3 is not installed';
  for (const py of pythons) {
    const r = spawnSync(py, ['-c', 'import cryptography'], { encoding: 'utf8' });
    if (r.status !== 0) return `${py} cannot import cryptography (install python3-cryptography)`;
  }
  return null;
}

/** Runs `python -m unittest -v <modules>` in clients/python; answers its exit status and output. */
function unittest(py: string, modules: string[], env: Record<string, string>): Promise<{ status: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(py, ['-m', 'unittest', '-v', ...modules], {
      cwd: CLIENT_DIR,
      env: { PATH: process.env.PATH ?? '', HOME: env.AEGIS_TEST_CACHE_DIR!, PYTHONPATH: join(CLIENT_DIR, 'src'), PYTHONDONTWRITEBYTECODE: '1', ...env },
    });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, output }));
  });
}

/** Passes when the run exited 0, ran tests, and skipped none (a skip would be a test that tested nothing). */
function assertRan(t: Test, r: { status: number | null; output: string }, what: string): void {
  const ran = /^Ran (\d+) tests?/m.exec(r.output);
  t.equal(r.status, 0, `${what}: python unittest passes`, { output: r.output.slice(-6000) });
  t.ok(ran !== null && Number(ran[1]) > 0, `${what}: tests ran (${ran?.[1] ?? 0})`);
  t.notMatch(r.output, /skipped/, `${what}: nothing skipped`);
}

export function pythonClientSuite(t: Test, newDatabase: DatabaseFactory): void {
  t.test('the Python client verifies real tokens like the server, and falls back offline when it is stopped', async (t) => {
    const s: TestServer = await startTestServer(await newDatabase().then((url) => (url === undefined ? {} : { databaseUrl: url })));
    const work = mkdtempSync(join(tmpdir(), 'aegis-py-'));
    let stopped = false;
    t.teardown(async () => {
      if (!stopped) await s.close();
      rmSync(work, { recursive: true, force: true });
    });
    const issue = async (body: Record<string, unknown>) => {
      const r = await s.req('POST', '/api/v1/licenses', body);
      t.equal(r.status, 201, `issue ${JSON.stringify(body)}`, { body: r.body });
      return r.body as { id: string; token: string };
    };
    const customer = await s.req('POST', '/api/v1/customers', { name: 'Acme Corp', external_id: 'CUST-PY-1' });
    t.equal(customer.status, 201);
    const module = { customer_id: 'CUST-PY-1', module_name: 'biz4a_payroll_drc', allowed_major_versions: ['17', '18'] };
    const valid = await issue({ ...module, license_type: 'perpetual' });

    // A subscription that ended yesterday: issued while the server's clock read two days ago.
    s.clock.offsetMs = -2 * DAY_MS;
    const expired = await issue({ ...module, license_type: 'subscription', duration_days: 1 });
    s.clock.offsetMs = 0;
    const exp = JSON.parse(Buffer.from(expired.token.split('.')[1]!, 'base64url').toString('utf8')).exp as number;
    t.ok(exp < Date.now() / 1000 - 3600, 'the subscription token expired in real time');

    // A machine's license token (audience aegis-license), from activating a host.
    const agent = await activateTestHost(s, 'py-client-host');
    const host = new TestHost('py-client-host-2');
    const act = await s.req('POST', '/api/v1/activations', host.activation(agent.licenseKey), { key: null });
    t.equal(act.status, 201, 'second host activates', { body: act.body });
    const machineToken = act.body.license_token as string;
    const kernelToken = act.body.kernel_token as string;

    const pythons = pythonInterpreters();
    const envs = new Map<string, Record<string, string>>();
    for (const [i, py] of pythons.entries()) {
      const revoke = await issue({ ...module, license_type: 'perpetual' });
      envs.set(py, {
        SERVER_URL: s.url,
        ADMIN_KEY: s.adminKey,
        TOKEN_VALID: valid.token,
        TOKEN_EXPIRED: expired.token,
        TOKEN_MACHINE: machineToken,
        TOKEN_KERNEL: kernelToken,
        TOKEN_REVOKE: revoke.token,
        LICENSE_REVOKE_ID: revoke.id,
        AEGIS_TEST_CACHE_DIR: join(work, `cache-${i}`),
      });
    }
    for (const py of pythons) {
      const started = Date.now();
      assertRan(t, await unittest(py, ['tests.test_offline', 'tests.test_server_online', 'tests.test_readme'], envs.get(py)!), `${py}, server up`);
      t.comment(`${py}: offline, server and README tests in ${Date.now() - started} ms`);
    }
    await s.close();
    stopped = true;
    for (const py of pythons) {
      assertRan(t, await unittest(py, ['tests.test_server_stopped'], envs.get(py)!), `${py}, server stopped`);
    }
  });
}
