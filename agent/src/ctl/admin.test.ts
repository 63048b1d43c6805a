/**
 * aegisctl's admin commands as a child process against a real aegis-server: table and
 * --json output, exit codes for 400/401/403/404, an unreachable server, no stack traces.
 */
import t, { type Test } from 'tap';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { startTestServer, TestHost, type TestServer } from '../../../test/harness/server.js';
import { LICENSE_KEY_PATTERN, normalizeLicenseKey } from '../../../protocol/src/index.js';
import { aegisctl, STACK_FRAME, type CtlRun } from '../../../test/harness/ctl.js';
import { ExitCode } from './exit_codes.js';

let srv: TestServer;
let env: Record<string, string>;
const run = (args: string[], extra: Record<string, string | undefined> = {}) => aegisctl({ ...env, ...extra }, args);

function json<T = any>(r: CtlRun): T {
  return JSON.parse(r.stdout) as T;
}

/** The shape every failure must have: one `aegisctl: error:` line, no stack trace, empty stdout. */
function failedCleanly(t: Test, r: CtlRun, code: number, pattern: RegExp, what: string): void {
  t.equal(r.code, code, `${what}: exit ${code}; stderr: ${r.stderr}`);
  t.match(r.stderr, pattern, `${what}: message`);
  t.match(r.stderr, /^aegisctl: error: /m, `${what}: prefixed error line`);
  t.equal(r.stderr.split('\n').filter((l) => l.startsWith('aegisctl: error:')).length, 1, `${what}: exactly one error line`);
  t.notMatch(r.stderr, STACK_FRAME, `${what}: no stack trace`);
  t.equal(r.stdout, '', `${what}: nothing on stdout`);
}

t.before(async () => {
  srv = await startTestServer();
  env = { AEGIS_SERVER: srv.url, AEGIS_API_KEY: srv.adminKey };
});
t.teardown(() => srv.close());

t.test('customers: create, list, show, update, delete (tables and --json)', async (t) => {
  const created = await run(['customers', 'create', '--name', 'Acme Corp', '--email', 'ops@acme.test', '--company', 'Acme']);
  t.equal(created.code, 0, created.stderr);
  const id = /created customer ([0-9a-f-]{36})/.exec(created.stdout)?.[1];
  t.ok(id, 'prints the new id');
  t.match(created.stdout, /Name:\s+Acme Corp/);
  t.match(created.stderr, /aegisctl: creating customer on http:\/\/127\.0\.0\.1:\d+\.\.\./, 'a progress line on stderr (not a TTY)');

  const cj = await run(['customers', 'create', '--name', 'Initech', '--json']);
  t.equal(cj.code, 0);
  const initech = json(cj);
  t.equal(initech.name, 'Initech');
  t.equal(initech.is_active, true);

  const list = await run(['customers', 'list']);
  t.equal(list.code, 0);
  const lines = list.stdout.trim().split('\n');
  t.match(lines[0], /^ID\s+NAME\s+EMAIL\s+COMPANY\s+ACTIVE\s+CREATED$/);
  const acme = lines.find((l) => l.includes('Acme Corp'))!;
  t.ok(acme.startsWith(id!), 'the row starts with the id');
  t.equal(lines[0]!.indexOf('NAME'), acme.indexOf('Acme Corp'), 'columns are aligned');
  t.match(list.stdout, /1-2 of 2 customers/);

  const lj = json(await run(['customers', 'list', '--json', '-q', '--q', 'acme']));
  t.equal(lj.total, 1);
  t.equal(lj.items[0].id, id);
  t.equal(json(await run(['customers', 'list', '--json', '--inactive'])).total, 0);
  t.equal(json(await run(['customers', 'list', '--json', '--limit', '1', '--offset', '1'])).items.length, 1);
  const page = await run(['customers', 'list', '--limit', '1']);
  t.match(page.stdout, /1-1 of 2 customers; next page: --offset 1/);

  const show = await run(['customers', 'show', id!]);
  t.equal(show.code, 0);
  t.match(show.stdout, /Email:\s+ops@acme\.test/);
  t.match(show.stdout, /Created:\s+now \(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\)|Created:\s+\d+s ago \(/);
  t.equal(json(await run(['customers', 'show', id!, '--json'])).company, 'Acme');

  const upd = await run(['customers', 'update', id!, '--name', 'Acme Inc', '--no-email', '--inactive', '--json']);
  t.equal(upd.code, 0, upd.stderr);
  const u = json(upd);
  t.equal(u.name, 'Acme Inc');
  t.equal(u.email, null);
  t.equal(u.is_active, false);
  failedCleanly(t, await run(['customers', 'update', id!]), ExitCode.USAGE, /nothing to update/, 'empty update');
  failedCleanly(t, await run(['customers', 'list', '--active', '--inactive']), ExitCode.USAGE, /--active or --inactive/, 'both filters');

  const del = await run(['customers', 'delete', initech.id, '--json']);
  t.equal(del.code, 0);
  t.same(json(del), { deleted: true, id: initech.id });
  failedCleanly(t, await run(['customers', 'show', initech.id]), ExitCode.NOT_FOUND, /customer .* not found/, 'deleted customer');
});

t.test('licenses: issue, list, show with machines, revoke', async (t) => {
  const customer = json(await run(['customers', 'create', '--name', 'Globex', '--json']));

  const issued = await run([
    'licenses', 'issue', '--customer', customer.id, '--tier', 'server', '--type', 'subscription',
    '--days', '30', '--machines', '2', '--versions', '1,2', '--features', 'gpu_management',
  ]);
  t.equal(issued.code, 0, issued.stderr);
  const key = /^ {4}(AEGIS-\S+)$/m.exec(issued.stdout)?.[1];
  t.ok(key && LICENSE_KEY_PATTERN.test(key) && normalizeLicenseKey(key) === key, 'the key is printed on a line of its own');
  t.match(issued.stdout, /shown only this once/);
  t.match(issued.stdout, /Expires:\s+in 30d \(/);
  t.match(issued.stdout, /Agent versions:\s+1, 2/);
  t.match(issued.stdout, /Extra features:\s+gpu_management/);
  const licenseId = /issued license ([0-9a-f-]{36})/.exec(issued.stdout)![1]!;

  const ij = await run(['licenses', 'issue', '--customer', customer.id, '--tier', 'basic', '--type', 'perpetual', '--json', '-q']);
  t.equal(ij.code, 0);
  t.equal(ij.stderr, '', '--quiet: nothing on stderr');
  const perpetual = json(ij);
  t.match(perpetual.license_key, LICENSE_KEY_PATTERN, '--json carries the key');
  t.equal(perpetual.expires_at, null);
  const demo = json(await run(['licenses', 'issue', '--customer', customer.id, '--tier', 'gamer', '--type', 'demo', '--expires', new Date(Date.now() + 5 * 86400_000).toISOString(), '--json']));
  t.equal(demo.license_type, 'demo');

  // A machine on the first license, so show has one to list.
  const host = new TestHost('web-01');
  const act = await srv.req('POST', '/api/v1/activations', host.activation(key!), { key: null });
  t.equal(act.status, 201, JSON.stringify(act.body));

  const list = await run(['licenses', 'list', '--customer', customer.id]);
  t.equal(list.code, 0);
  t.match(list.stdout.split('\n')[0], /^ID\s+CUSTOMER\s+TIER\s+TYPE\s+STATUS\s+KEY\s+SEATS\s+EXPIRES$/);
  t.match(list.stdout, /server\s+subscription\s+active\s+…\S{5}\s+2\s+in 30d/);
  t.match(list.stdout, /basic\s+perpetual\s+active\s+…\S{5}\s+1\s+never/);
  t.match(list.stdout, /1-3 of 3 licenses/);
  t.equal(json(await run(['licenses', 'list', '--json', '--tier', 'gamer'])).total, 1);
  t.equal(json(await run(['licenses', 'list', '--json', '--type', 'perpetual', '--status', 'active'])).total, 1);

  const show = await run(['licenses', 'show', licenseId]);
  t.equal(show.code, 0, show.stderr);
  t.match(show.stdout, /Machines \(1 of 2 seats in use\):/);
  t.match(show.stdout, /MACHINE\s+HOSTNAME\s+STATUS\s+HWID\s+AGENT\s+ACTIVATED\s+LAST SEEN/);
  t.match(show.stdout, /web-01\s+active/);
  t.notMatch(show.stdout, key!, 'the full key is never shown again');
  const sj = json(await run(['licenses', 'show', licenseId, '--json']));
  t.equal(sj.id, licenseId);
  t.equal(sj.machines.length, 1);
  t.equal(sj.machines[0].hostname, 'web-01');
  t.match((await run(['licenses', 'show', perpetual.id])).stdout, /none activated yet/);

  const rev = await run(['licenses', 'revoke', licenseId, '--reason', 'contract ended']);
  t.equal(rev.code, 0, rev.stderr);
  t.match(rev.stdout, /revoked license .* contract ended/);
  const after = json(await run(['licenses', 'show', licenseId, '--json']));
  t.equal(after.status, 'revoked');
  t.equal(after.revoke_reason, 'contract ended');
  t.match((await run(['licenses', 'show', licenseId])).stdout, /Revoke reason:\s+contract ended/);
  t.equal(json(await run(['licenses', 'list', '--json', '--status', 'revoked'])).total, 1);
  failedCleanly(t, await run(['licenses', 'revoke', licenseId]), ExitCode.USAGE, /--reason/, 'revoke without a reason');

  // The customer now has active licenses: delete is refused until --force.
  failedCleanly(t, await run(['customers', 'delete', customer.id]), ExitCode.FAILURE, /has active licenses.*--force/, 'delete with active licenses');
  t.equal((await run(['customers', 'delete', customer.id, '--force'])).code, 0);
});

t.test('licenses issue: bad input is refused locally or by the server with exit 2', async (t) => {
  const c = json(await run(['customers', 'create', '--name', 'Umbrella', '--json']));
  const base = ['licenses', 'issue', '--customer', c.id];
  failedCleanly(t, await run([...base, '--tier', 'gold', '--type', 'demo']), ExitCode.USAGE, /--tier.*gold.*basic, gamer/, 'unknown tier');
  failedCleanly(t, await run([...base, '--tier', 'basic', '--type', 'forever']), ExitCode.USAGE, /--type/, 'unknown type');
  failedCleanly(t, await run([...base, '--tier', 'basic', '--type', 'demo', '--days', '3', '--expires', '2030-01-01']), ExitCode.USAGE, /cannot be used with/, '--days with --expires');
  failedCleanly(t, await run([...base, '--tier', 'basic', '--type', 'demo', '--days', 'x']), ExitCode.USAGE, /--days.*whole number/, 'non-numeric days');
  failedCleanly(t, await run([...base, '--tier', 'basic', '--type', 'demo', '--expires', 'tomorrow']), ExitCode.USAGE, /ISO-8601/, 'unparseable date');
  failedCleanly(t, await run([...base, '--tier', 'basic', '--type', 'demo', '--features', 'teleport']), ExitCode.USAGE, /unknown feature "teleport"/, 'unknown feature');
  failedCleanly(t, await run([...base, '--tier', 'basic', '--type', 'demo', '--versions', 'v1']), ExitCode.USAGE, /not a major version/, 'bad version');
  failedCleanly(t, await run([...base, '--tier', 'basic', '--type', 'perpetual', '--days', '3']), ExitCode.USAGE, /perpetual license has no expiry/, 'perpetual with days');
  failedCleanly(t, await run([...base, '--tier', 'basic', '--type', 'subscription']), ExitCode.USAGE, /needs an expiry/, 'subscription without expiry');
  // These reach the server, which answers 400.
  failedCleanly(t, await run([...base, '--tier', 'basic', '--type', 'demo', '--days', '60']), ExitCode.USAGE, /demo license lasts at most 30 days.*--days/, 'server 400 names the flag');
  failedCleanly(t, await run([...base, '--tier', 'basic', '--type', 'subscription', '--expires', '2020-01-01']), ExitCode.USAGE, /in the future/, 'expiry in the past');
  failedCleanly(t, await run(['licenses', 'issue', '--customer', 'no-such-customer', '--tier', 'basic', '--type', 'demo']), ExitCode.NOT_FOUND, /customer no-such-customer not found/, 'unknown customer');
  // An inactive customer is a conflict, with a hint.
  await run(['customers', 'update', c.id, '--inactive']);
  failedCleanly(t, await run([...base, '--tier', 'basic', '--type', 'demo']), ExitCode.FAILURE, /inactive.*--active/, 'inactive customer');
});

t.test('not found: exit 5', async (t) => {
  for (const args of [
    ['customers', 'show', 'nope'],
    ['customers', 'update', 'nope', '--name', 'x'],
    ['customers', 'delete', 'nope'],
    ['licenses', 'show', 'nope'],
    ['licenses', 'revoke', 'nope', '--reason', 'x'],
  ]) {
    failedCleanly(t, await run(args), ExitCode.NOT_FOUND, /nope not found/, args.join(' '));
  }
});

t.test('credentials: missing, unknown (401), lacking a scope (403), passed as a flag', async (t) => {
  failedCleanly(t, await run(['customers', 'list'], { AEGIS_API_KEY: undefined }), ExitCode.UNAUTHORIZED, /no API key.*set AEGIS_API_KEY/, 'no key');
  failedCleanly(
    t,
    await run(['licenses', 'list'], { AEGIS_API_KEY: 'aegis_sk_this-key-does-not-exist' }),
    ExitCode.UNAUTHORIZED,
    /unknown or revoked API key.*AEGIS_API_KEY/,
    'unknown key (401)',
  );
  const reader = await srv.app.apiKeys.create('reader', ['customers:read']);
  t.equal((await run(['customers', 'list'], { AEGIS_API_KEY: reader.key })).code, 0, 'read with a read key');
  failedCleanly(t, await run(['customers', 'create', '--name', 'X'], { AEGIS_API_KEY: reader.key }), ExitCode.UNAUTHORIZED, /lacks the customers:write scope/, 'missing scope (403)');
  failedCleanly(t, await run(['licenses', 'list'], { AEGIS_API_KEY: reader.key }), ExitCode.UNAUTHORIZED, /licenses:read/, 'missing scope (403)');

  const flag = await run(['--api-key', srv.adminKey, 'customers', 'list', '--json'], { AEGIS_API_KEY: undefined });
  t.equal(flag.code, 0);
  t.match(flag.stderr, /warning: --api-key is visible .* prefer the AEGIS_API_KEY/);
  t.doesNotThrow(() => json(flag), 'stdout is still pure JSON');
  t.notMatch((await run(['customers', 'list'])).stderr, /warning/, 'no warning with the environment variable');
});

t.test('keys: the published JWKS, no API key needed', async (t) => {
  const r = await run(['keys'], { AEGIS_API_KEY: undefined });
  t.equal(r.code, 0, r.stderr);
  const kid = srv.keys.activeKid()!;
  t.match(r.stdout, /^KID\s+ALG\s+CRV\s+X$/m);
  t.match(r.stdout, new RegExp(`^${kid}\\s+EdDSA\\s+Ed25519\\s+[A-Za-z0-9_-]{43}$`, 'm'));
  const j = json(await run(['keys', '--json']));
  const published = await srv.req('GET', '/.well-known/jwks.json');
  t.same(j, published.body, '--json is the JWKS as published');
});

t.test('unreachable or foreign server: exit 3 / 1 with a clear message', async (t) => {
  // A port that was just free: nothing listens there.
  const probe = createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  const port = (probe.address() as AddressInfo).port;
  await new Promise<void>((r) => probe.close(() => r()));
  const dead = `http://127.0.0.1:${port}`;
  failedCleanly(t, await run(['customers', 'list'], { AEGIS_SERVER: dead }), ExitCode.UNREACHABLE, /cannot reach aegis-server at .*connection refused.*AEGIS_SERVER/, 'refused');
  failedCleanly(t, await run(['--server', dead, 'keys']), ExitCode.UNREACHABLE, /cannot reach/, 'keys, --server flag');

  // Something that accepts and never answers: the timeout is ours.
  const silent = createServer(() => {});
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    silent.closeAllConnections();
    silent.close();
  });
  const silentUrl = `http://127.0.0.1:${(silent.address() as AddressInfo).port}`;
  failedCleanly(t, await run(['--timeout', '0.5', 'customers', 'list'], { AEGIS_SERVER: silentUrl }), ExitCode.UNREACHABLE, /no answer within 0\.5s/, 'timeout');

  // A web server that is not aegis-server.
  const web = createServer((_req, res) => {
    res.writeHead(502, { 'content-type': 'text/html' });
    res.end('<html>bad gateway</html>');
  });
  await new Promise<void>((r) => web.listen(0, '127.0.0.1', r));
  t.teardown(() => web.close());
  const webUrl = `http://127.0.0.1:${(web.address() as AddressInfo).port}`;
  failedCleanly(t, await run(['customers', 'list'], { AEGIS_SERVER: webUrl }), ExitCode.FAILURE, /unexpected answer .*HTTP 502, not JSON/, 'not aegis-server');

  failedCleanly(t, await run(['customers', 'list'], { AEGIS_SERVER: 'not a url' }), ExitCode.USAGE, /is not a URL/, 'bad --server');
  failedCleanly(t, await run(['customers', 'list'], { AEGIS_SERVER: 'ftp://x' }), ExitCode.USAGE, /http:\/\/ or https:\/\//, 'bad scheme');
});

t.test('usage: help with exit codes, unknown commands and options exit 2', async (t) => {
  const help = await run(['--help']);
  t.equal(help.code, 0);
  t.match(help.stdout, /Exit codes:\n\s+0\s+success/);
  for (const code of [1, 2, 3, 4, 5, 6]) t.match(help.stdout, new RegExp(`^\\s+${code}\\s+\\S`, 'm'), `exit code ${code} documented`);
  t.match(help.stdout, /AEGIS_API_KEY/);
  const bare = await run([]);
  t.equal(bare.code, ExitCode.USAGE);
  t.match(bare.stderr, /Usage: aegisctl/);
  failedCleanly(t, await run(['customers', 'list', '--bogus']), ExitCode.USAGE, /unknown option '--bogus'.*aegisctl customers list --help/, 'unknown option');
  failedCleanly(t, await run(['frobnicate']), ExitCode.USAGE, /unknown command 'frobnicate'/, 'unknown command');
  failedCleanly(t, await run(['customers', 'list', '--limit', '0']), ExitCode.USAGE, /--limit.*1 to 500/, 'limit out of range');
  failedCleanly(t, await run(['customers', 'create']), ExitCode.USAGE, /--name/, 'missing required option');
  t.equal((await run(['--version'])).code, 0);
});
