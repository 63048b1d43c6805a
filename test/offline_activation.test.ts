/**
 * Offline (air-gapped) activation end to end: a real aegis-server, real aegis-agent
 * processes whose server_url has nothing listening (no route to the server), and aegisctl
 * as the operator runs it. The host writes a signed request, the operator turns it into a
 * license file on a connected machine, the host installs it and runs licensed (kernel
 * token written, licensed again after a restart); a file for another host, a tampered one
 * and one signed by a key the host does not trust are refused without touching its state;
 * the offline release drops the license at once and frees the seat when submitted, once.
 */
import { generateKeyPairSync, sign } from 'node:crypto';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { jwkThumbprint, publicJwkOf } from '../protocol/src/index.js';
import { agentDir, cleanupDir, startAgent, type TestAgent } from './harness/agent.js';
import { aegisctl, STACK_FRAME } from './harness/ctl.js';
import { startTestServer } from './harness/server.js';

/** Port 9 (discard) on loopback: nothing listens, every connection is refused. */
const NO_SERVER = 'http://127.0.0.1:9';

t.setTimeout(240_000);
const s = await startTestServer();
t.teardown(() => s.close());
const serverKey = s.keys.jwks().keys[0]!;
const customer = (await s.req('POST', '/api/v1/customers', { name: 'Air-gapped site' })).body;
const lic = (await s.req('POST', '/api/v1/licenses', { customer_id: customer.id, tier: 'server', license_type: 'perpetual', max_machines: 1 })).body;
const activeSeats = async () => ((await s.req('GET', `/api/v1/licenses/${lic.id}/machines`)).body.items as Array<{ status: string }>).filter((m) => m.status === 'active').length;

const dirA = agentDir();
const dirB = agentDir();
t.teardown(() => {
  cleanupDir(dirA);
  cleanupDir(dirB);
});
const start = (dir: string, name: string): Promise<TestAgent> =>
  startAgent({
    serverUrl: NO_SERVER,
    dir,
    hardwareFacts: { machine_id: `${name}-${process.pid}`, macs: ['52:54:00:0f:f1:01'] },
    extraConfig: { hostname: name, trusted_keys: [jwkThumbprint(serverKey)] },
  });
let a = await start(dirA, 'airgap-a');
const b = await start(dirB, 'airgap-b');
t.teardown(async () => {
  await a.stop();
  await b.stop();
});
await a.waitReady();
await b.waitReady();

const hostA = { AEGIS_SOCKET: a.socket };
const hostB = { AEGIS_SOCKET: b.socket };
const operator = { AEGIS_SERVER: s.url, AEGIS_API_KEY: s.adminKey };
const requestPath = join(dirA, 'request.json');
const licensePath = join(dirA, 'license-file.json');
const releasePath = join(dirA, 'release.json');

t.test('the host writes a signed request; the operator turns it into a license file', async (t) => {
  const online = await aegisctl(hostA, ['activate', lic.license_key]);
  t.not(online.code, 0, 'online activation cannot work here: the server is out of reach');
  const r = await aegisctl(hostA, ['activate', '--offline', '--license-key', lic.license_key, '--out', requestPath]);
  t.equal(r.code, 0, r.stderr);
  t.equal(statSync(requestPath).mode & 0o777, 0o600, 'the request (it holds the license key) is 0600');
  const req = JSON.parse(readFileSync(requestPath, 'utf8'));
  t.equal(req.format, 'aegis-offline-activation-request/1');
  t.equal((await a.api('GET', '/v1/license')).body.state, 'community', 'nothing changes on the host until the license file comes');

  const op = await aegisctl(operator, ['offline-activate', requestPath, '--out', licensePath]);
  t.equal(op.code, 0, op.stderr);
  t.match(op.stdout, /aegisctl install-license/);
  t.equal(await activeSeats(), 1, 'the seat is taken');
  const again = await aegisctl(operator, ['offline-activate', requestPath, '--out', join(dirA, 'second.json')]);
  t.not(again.code, 0, 'the request file works once');
  t.match(again.stderr, /PROOF_REPLAYED|already used/);
  t.notMatch(again.stderr, STACK_FRAME);
  t.equal(await activeSeats(), 1, 'not double-counted');
});

t.test('host B refuses host A\'s license file', async (t) => {
  const r = await aegisctl(hostB, ['install-license', licensePath]);
  t.not(r.code, 0);
  t.match(r.stderr, /bound to other hardware|NOT_THIS_HOST/);
  const l = (await b.api('GET', '/v1/license')).body;
  t.equal(l.state, 'community', 'B stays unlicensed');
  t.equal(l.machine_id, null);
});

t.test('a tampered file, a file signed by an untrusted key and an oversized one are refused', async (t) => {
  const file = JSON.parse(readFileSync(licensePath, 'utf8'));
  const [h, p, sig] = (file.bundle.license_token as string).split('.') as [string, string, string];
  const claims = JSON.parse(Buffer.from(p, 'base64url').toString('utf8'));
  // A longer expiry and more machines' worth of features, signature kept.
  const tampered = { ...file, bundle: { ...file.bundle, license_token: `${h}.${Buffer.from(JSON.stringify({ ...claims, exp: claims.exp + 10 * 365 * 86400 })).toString('base64url')}.${sig}` } };
  const tamperedPath = join(dirA, 'tampered.json');
  writeFileSync(tamperedPath, JSON.stringify(tampered));
  const r1 = await aegisctl(hostA, ['install-license', tamperedPath]);
  t.not(r1.code, 0);
  t.match(r1.stderr, /does not verify|LICENSE_FILE_INVALID/);

  // A whole license forged with the attacker's own key, which the file brings along.
  const { privateKey } = generateKeyPairSync('ed25519');
  const evil = { ...publicJwkOf(privateKey), kid: 'evil', alg: 'EdDSA', use: 'sig' };
  const forge = (c: object) => {
    const hh = Buffer.from(JSON.stringify({ alg: 'EdDSA', kid: 'evil', typ: 'JWT' })).toString('base64url');
    const pp = Buffer.from(JSON.stringify(c)).toString('base64url');
    return `${hh}.${pp}.${sign(null, Buffer.from(`${hh}.${pp}`), privateKey).toString('base64url')}`;
  };
  const kernelClaims = JSON.parse(Buffer.from(file.bundle.kernel_token.split('.')[1], 'base64url').toString('utf8'));
  const forged = { ...file, bundle: { ...file.bundle, license_token: forge({ ...claims, tier: 'enterprise' }), kernel_token: forge(kernelClaims), jwks: { keys: [evil] } } };
  const forgedPath = join(dirA, 'forged.json');
  writeFileSync(forgedPath, JSON.stringify(forged));
  const r2 = await aegisctl(hostA, ['install-license', forgedPath]);
  t.not(r2.code, 0);
  t.match(r2.stderr, /no key this host trusts|UNTRUSTED_KEY/);

  const bigPath = join(dirA, 'big.json');
  writeFileSync(bigPath, JSON.stringify({ ...file, padding: 'x'.repeat(100 * 1024) }));
  const r3 = await aegisctl(hostA, ['install-license', bigPath]);
  t.equal(r3.code, 2, 'refused by aegisctl as a usage error');
  t.match(r3.stderr, /larger than/);
  const direct = await a.api('POST', '/v1/offline/install', { ...file, padding: 'x'.repeat(100 * 1024) });
  t.equal(direct.status, 413, 'and by the agent itself');
  const junkPath = join(dirA, 'junk.json');
  writeFileSync(junkPath, '{"format": "aegis-offline-license/1", "bundle": ');
  const r4 = await aegisctl(hostA, ['install-license', junkPath]);
  t.equal(r4.code, 2);
  t.match(r4.stderr, /not valid JSON/);
  const wrongShape = await a.api('POST', '/v1/offline/install', { format: 'aegis-offline-license/1', bundle: [] });
  t.equal(wrongShape.body.error.code, 'LICENSE_FILE_INVALID');

  const l = (await a.api('GET', '/v1/license')).body;
  t.equal(l.state, 'community', 'A is still unlicensed after every refusal');
  t.notOk(existsSync(join(a.stateDir, 'license.json')), 'and nothing was cached');
});

t.test('host A installs its license file with no network and runs licensed', async (t) => {
  const r = await aegisctl(hostA, ['install-license', licensePath]);
  t.equal(r.code, 0, r.stderr);
  const file = JSON.parse(readFileSync(licensePath, 'utf8'));
  t.match(r.stdout, file.machine_id);
  const l = (await a.api('GET', '/v1/license')).body;
  t.equal(l.state, 'licensed');
  t.equal(l.machine_id, file.machine_id);
  t.equal(l.license.tier, 'server');
  const tok = (await a.api('GET', '/v1/token')).body;
  t.equal(tok.present, true, 'the kernel token is written as online');
  t.equal(tok.claims.sub, file.machine_id);

  // A tampered file while licensed: refused, the installed license stays.
  const lt = file.bundle.license_token as string;
  const flipped = lt.slice(0, -10) + (lt.at(-10) === 'A' ? 'B' : 'A') + lt.slice(-9);
  const bad = await a.api('POST', '/v1/offline/install', { ...file, bundle: { ...file.bundle, license_token: flipped } });
  t.equal(bad.status, 400);
  const still = (await a.api('GET', '/v1/license')).body;
  t.equal(still.state, 'licensed', 'the previous state is kept');
  t.equal(still.machine_id, file.machine_id);

  // Restarted, still without a network: the installed license is restored offline.
  await a.stop();
  a = await start(dirA, 'airgap-a');
  await a.waitReady();
  const after = (await a.api('GET', '/v1/license')).body;
  t.equal(after.state, 'licensed', `licensed after a restart: ${after.reason}`);
  t.equal(after.machine_id, file.machine_id);
});

t.test('the offline release drops the license at once and frees the seat, once', async (t) => {
  const hostA2 = { AEGIS_SOCKET: a.socket };
  const r = await aegisctl(hostA2, ['deactivate', '--offline', '--out', releasePath]);
  t.equal(r.code, 0, r.stderr);
  const l = (await a.api('GET', '/v1/license')).body;
  t.equal(l.state, 'community', 'dropped here at once');
  t.equal((await a.api('GET', '/v1/token')).body.present, false, 'the kernel token is gone');
  t.ok(existsSync(join(a.stateDir, 'offline-release.json')), 'a copy of the release is kept');
  t.equal(await activeSeats(), 1, 'the server still counts the seat until the release is submitted');

  const op = await aegisctl(operator, ['offline-deactivate', releasePath]);
  t.equal(op.code, 0, op.stderr);
  t.equal(await activeSeats(), 0, 'the seat is free');
  const replay = await aegisctl(operator, ['offline-deactivate', releasePath]);
  t.not(replay.code, 0, 'a release works once');
  t.match(replay.stderr, /PROOF_REPLAYED|already used/);
});
