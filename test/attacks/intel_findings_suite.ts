/**
 * Advisory intelligence against a real aegis-server and the real `aegis-server intel
 * import` CLI on the same database: machines report inventories with host-proof access
 * tokens, feeds are imported, and findings appear, move with diffs and with withdrawn
 * advisories, and say whether a listening socket exposes the package. The attacks: another
 * machine's inventory or token, a token without the scope or used twice, oversized and
 * hostile inventories, malformed feeds, a zip bomb and traversal names (the database is
 * unchanged after each), another customer's machines, unknown query parameters.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { constants, deflateRawSync } from 'node:zlib';
import type { Test } from 'tap';
import { AGENT_API, AUD_AGENT_TOKEN_PROOF, MAX_INVENTORY_BODY_BYTES } from '../../protocol/src/index.js';
import { SCOPES } from '../../server/src/api_keys.js';
import { activateTestHost, startTestServer, type ActivatedHost, type TestServer } from '../harness/server.js';
import { buildZip } from '../intel/zip_builder.js';

const CLI = fileURLToPath(new URL('../../server/src/cli.js', import.meta.url));

const pkg = (name: string, version: string, source = name, sourceVersion = version) => ({ package: name, version, architecture: 'amd64', source, source_version: sourceVersion });
const SSHD = { proto: 'tcp', address: '0.0.0.0', port: 22, pid: 612, exe: '/usr/sbin/sshd', package: 'openssh-server' };

const osvRecord = (id: string, source: string, fixed: string, extra: Record<string, unknown> = {}) => ({
  id,
  modified: '2026-01-01T00:00:00Z',
  aliases: [id.replace(/^DEBIAN-/, '')],
  affected: [{ package: { ecosystem: 'Debian:12', name: source }, ranges: [{ type: 'ECOSYSTEM', events: [{ introduced: '0' }, { fixed }] }] }],
  ...extra,
});

export function intelFindingsSuite(t: Test, newDatabase: () => Promise<string | undefined>): void {
  let dir: string;
  let s: TestServer;
  let databaseUrl: string;
  let A: ActivatedHost;
  let B: ActivatedHost;
  let keyB: string;

  t.before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'aegis-intel-'));
    databaseUrl = (await newDatabase()) ?? `sqlite:${join(dir, 'aegis.db')}`;
    s = await startTestServer({ databaseUrl });
    A = await activateTestHost(s, 'intel-a');
    B = await activateTestHost(s, 'intel-b');
    keyB = (await s.app.apiKeys.create('tenant-b', [...SCOPES], B.customerId)).key;
  });
  t.teardown(async () => {
    await s?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const token = async (h: ActivatedHost, scope: string[] = ['inventory'], machineId = h.machineId) => {
    const r = await s.req('POST', AGENT_API.token, { scope, machine_id: machineId, proof: h.host.proof(AUD_AGENT_TOKEN_PROOF) }, { key: null });
    return r;
  };
  const report = async (h: ActivatedHost, body: unknown, bearer?: string) => {
    const tok = bearer ?? (await token(h)).body.access_token;
    return s.req('POST', AGENT_API.inventory, body, { key: null, headers: { authorization: `Bearer ${tok}` } });
  };
  /** The real CLI, run without blocking this process (the server under test lives in it). */
  const cli = (...args: string[]) =>
    new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve, reject) => {
      const p = spawn(process.execPath, [CLI, 'intel', 'import', ...args], { env: { ...process.env, DATABASE_URL: databaseUrl, LOG_LEVEL: 'error' }, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      p.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
      p.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
      const timer = setTimeout(() => p.kill('SIGKILL'), 60_000);
      p.on('error', reject);
      p.on('close', (status) => {
        clearTimeout(timer);
        resolve({ status, stdout, stderr });
      });
    });
  const feed = (name: string, content: unknown | Buffer) => {
    const p = join(dir, name);
    writeFileSync(p, Buffer.isBuffer(content) ? content : JSON.stringify(content));
    return p;
  };
  /** Everything an import may change, for "unchanged" checks. */
  const snapshot = async () => ({
    advisories: await s.app.ctx.db.selectFrom('advisories').selectAll().orderBy('id').execute(),
    packages: await s.app.ctx.db.selectFrom('advisory_packages').selectAll().orderBy('advisory_id').orderBy('package').execute(),
    findings: await s.app.ctx.db.selectFrom('findings').selectAll().orderBy('machine_id').orderBy('advisory_id').orderBy('package').execute(),
  });
  const findings = async (query = '', key?: string) => s.req('GET', `/api/v1/findings${query}`, undefined, key === undefined ? {} : { key });

  t.test('a full inventory is stored under the machine the token names', { timeout: 180_000 }, async (t) => {
    const r = await report(A, {
      kind: 'full',
      seq: 1,
      release: 'bookworm',
      packages: [pkg('openssh-server', '1:9.2p1-2+deb12u2', 'openssh'), pkg('openssh-client', '1:9.2p1-2+deb12u2', 'openssh'), pkg('libssl3', '3.0.11-1~deb12u2', 'openssl'), pkg('bash', '5.2.15-2+b2', 'bash', '5.2.15-2')],
      sockets: [SSHD],
    });
    t.equal(r.status, 200, JSON.stringify(r.body));
    t.same(r.body, { machine_id: A.machineId, seq: 1, packages: 4, findings: 0 });
    const got = await s.req('GET', `/api/v1/machines/${A.machineId}/packages`);
    t.equal(got.status, 200);
    t.equal(got.body.release, 'bookworm');
    t.equal(got.body.seq, 1);
    t.same(got.body.packages.map((p: { package: string }) => p.package), ['bash', 'libssl3', 'openssh-client', 'openssh-server']);
    t.same(got.body.packages.find((p: { package: string }) => p.package === 'bash'), pkg('bash', '5.2.15-2+b2', 'bash', '5.2.15-2'), 'source version kept apart from the binary version');
    t.same(got.body.sockets, [SSHD]);
    const b = await report(B, { kind: 'full', seq: 1, release: 'bookworm', packages: [pkg('libssl3', '3.0.11-1~deb12u2', 'openssl')], sockets: [] });
    t.equal(b.status, 200);
  });

  t.test('import through the CLI: findings appear, exposed where a listening socket runs the package', { timeout: 180_000 }, async (t) => {
    const f = feed('osv.json', [osvRecord('DEBIAN-CVE-2024-6387', 'openssh', '1:9.2p1-2+deb12u3', { severity: [{ type: 'CVSS_V3', score: 'CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:H/A:H' }] }), osvRecord('DEBIAN-CVE-2024-5535', 'openssl', '3.0.14-1~deb12u1')]);
    const run = await cli(f, "--json");
    t.equal(run.status, 0, run.stderr);
    const summary = JSON.parse(run.stdout.trim()) as Record<string, unknown>;
    t.match(summary, { read: 2, inserted: 2, updated: 0, unchanged: 0, machines_rematched: 2 });
    const r = await findings(`?machine=${A.machineId}`);
    t.equal(r.status, 200, JSON.stringify(r.body));
    const byPkg = Object.fromEntries(r.body.items.map((i: { package: string }) => [i.package, i]));
    t.same(Object.keys(byPkg).sort(), ['libssl3', 'openssh-client', 'openssh-server']);
    t.equal(byPkg['openssh-server'].exposed, true, 'sshd listens: exposed');
    t.same(byPkg['openssh-server'].sockets, [SSHD]);
    t.equal(byPkg['openssh-client'].exposed, false, 'the client of the same source listens nowhere');
    t.equal(byPkg['libssl3'].exposed, false);
    t.equal(byPkg['openssh-server'].fixed_version, '1:9.2p1-2+deb12u3');
    t.equal(byPkg['openssh-server'].severity_level, 'high', 'CVSS 8.1 is high');
    t.same(byPkg['openssh-server'].aliases, ['CVE-2024-6387']);
    t.equal((await findings(`?machine=${B.machineId}`)).body.total, 1, 'B has the openssl finding');
    t.equal((await findings('?severity=critical')).body.total, 0, 'nothing critical');
    t.equal((await findings('?severity=high')).body.total, 2, 'high and above: the two openssh findings');
    t.equal((await findings('?package=openssh')).body.total, 2, 'by source package');
    t.equal((await findings('?advisory=DEBIAN-CVE-2024-5535')).body.total, 2);
    const again = await cli(f, "--json");
    t.equal(again.status, 0);
    t.match(JSON.parse(again.stdout.trim()), { inserted: 0, updated: 0, unchanged: 2 }, 'the same modified: nothing rewritten');
  });

  t.test('a diff moves findings: an upgrade past the fix removes them, a downgrade brings them back', { timeout: 180_000 }, async (t) => {
    const up = await report(A, { kind: 'diff', seq: 2, base_seq: 1, release: 'bookworm', upserted: [pkg('openssh-server', '1:9.2p1-2+deb12u3', 'openssh')], removed: [{ package: 'openssh-client', architecture: 'amd64' }], sockets: [SSHD] });
    t.equal(up.status, 200, JSON.stringify(up.body));
    t.same(up.body, { machine_id: A.machineId, seq: 2, packages: 3, findings: 1 });
    const r = await findings(`?machine=${A.machineId}`);
    t.same(r.body.items.map((i: { package: string }) => i.package), ['libssl3']);
    const stale = await report(A, { kind: 'diff', seq: 2, base_seq: 1, release: 'bookworm', upserted: [], removed: [], sockets: [] });
    t.equal(stale.status, 409, 'a diff on a base the server does not hold');
    t.equal(stale.body.error.code, 'CONFLICT');
    t.equal((await s.req('GET', `/api/v1/machines/${A.machineId}/packages`)).body.seq, 2, 'nothing applied');
    const down = await report(A, { kind: 'diff', seq: 3, base_seq: 2, release: 'bookworm', upserted: [pkg('openssh-server', '1:9.2p1-2+deb12u2', 'openssh')], removed: [], sockets: [SSHD] });
    t.equal(down.body.findings, 2);
  });

  t.test('a withdrawn advisory (newer modified) removes its findings', { timeout: 180_000 }, async (t) => {
    const f = feed('withdrawn.json', osvRecord('DEBIAN-CVE-2024-5535', 'openssl', '3.0.14-1~deb12u1', { modified: '2026-02-01T00:00:00Z', withdrawn: '2026-02-01T00:00:00Z' }));
    const run = await cli(f, "--json");
    t.equal(run.status, 0, run.stderr);
    t.match(JSON.parse(run.stdout.trim()), { updated: 1, withdrawn: 1 });
    t.equal((await findings('?advisory=DEBIAN-CVE-2024-5535')).body.total, 0);
    t.equal((await findings(`?machine=${A.machineId}`)).body.total, 1, 'the openssh finding stays');
    const older = feed('older.json', osvRecord('DEBIAN-CVE-2024-5535', 'openssl', '3.0.14-1~deb12u1', { modified: '2026-01-15T00:00:00Z' }));
    t.match(JSON.parse((await cli(older, '--json')).stdout.trim()), { unchanged: 1 }, 'an older record never replaces a newer one');
    t.equal((await findings('?advisory=DEBIAN-CVE-2024-5535')).body.total, 0);
  });

  t.test('refused feeds leave the database exactly as it was', { timeout: 180_000 }, async (t) => {
    const before = await snapshot();
    const good = osvRecord('DEBIAN-CVE-2099-0001', 'bash', '5.3-1');
    const bomb = deflateRawSync(Buffer.alloc(64 << 20), { level: 9, finishFlush: constants.Z_FINISH });
    const cases: Array<[string, string, RegExp]> = [
      ['not JSON', feed('broken.json', Buffer.from('[{"id": "X", ')), /FEED_MALFORMED_JSON/],
      ['one good record and one bad', feed('half.json', [good, { id: 'BAD', affected: [{ package: { ecosystem: 'Debian:12', name: 'bash' }, ranges: [{ type: 'ECOSYSTEM', events: [{ fixed: '1:' }] }] }] }]), /FEED_INVALID/],
      ['a zip bomb', feed('bomb.zip', buildZip([{ name: 'ok.json', data: Buffer.from(JSON.stringify(good)) }, { name: 'bomb.json', raw: bomb, usize: 64 << 20 }])), /ZIP_(RATIO|ENTRY_TOO_LARGE).*FEED_ARCHIVE_REFUSED/],
      ['a traversal name', feed('trav.zip', buildZip([{ name: 'ok.json', data: Buffer.from(JSON.stringify(good)) }, { name: '../../etc/evil.json', data: Buffer.from(JSON.stringify(good)) }])), /ZIP_UNSAFE_NAME/],
      ['an unknown format', feed('other.json', { hello: 'world' }), /FEED_(UNKNOWN_FORMAT|INVALID)/],
      ['a missing file', join(dir, 'nope.json'), /FEED_UNREADABLE/],
    ];
    for (const [what, file, code] of cases) {
      const run = await cli(file);
      t.equal(run.status, 1, `${what}: exit 1`);
      t.match(run.stderr, code, `${what}: ${run.stderr.trim().split('\n').pop()}`);
      t.notMatch(run.stderr, /\n\s+at /, `${what}: no stack trace`);
      t.same(await snapshot(), before, `${what}: database unchanged`);
    }
  });

  t.test('tenancy: a key of one customer sees its machines only; another\'s is the unknown-id 404', async (t) => {
    const own = await findings('', keyB);
    t.equal(own.status, 200);
    t.ok(own.body.items.every((i: { machine_id: string }) => i.machine_id === B.machineId), 'only B\'s findings');
    const foreign = await findings(`?machine=${A.machineId}`, keyB);
    t.equal(foreign.status, 404);
    const foreignPkgs = await s.req('GET', `/api/v1/machines/${A.machineId}/packages`, undefined, { key: keyB });
    t.equal(foreignPkgs.status, 404);
    const unknown = await s.req('GET', `/api/v1/machines/00000000-0000-4000-8000-000000000000/packages`);
    t.equal(unknown.status, 404);
    t.same(foreignPkgs.body.error.message, unknown.body.error.message, 'foreign and unknown look the same');
    t.equal((await s.req('GET', `/api/v1/machines/${B.machineId}/packages`, undefined, { key: keyB })).status, 200);
    const noScope = (await s.app.apiKeys.create('no-intel', ['licenses:read'])).key;
    t.equal((await findings('', noScope)).status, 403, 'intel:read is required');
  });

  t.test('unknown, repeated or malformed query parameters are refused', { timeout: 180_000 }, async (t) => {
    for (const q of ['?machin=x', '?severity=high&severity=low', '?severity=bad', '?package=Bad Name', '?limit=0', '?machine=../../x', `?machine=${A.machineId}&customer_id=x`]) {
      const r = await findings(q);
      t.equal(r.status, 400, q);
      t.equal(r.body.error.code, 'VALIDATION_FAILED', q);
    }
    t.equal((await s.req('GET', `/api/v1/machines/${A.machineId}/packages?x=1`)).status, 400);
  });

  t.test('attacks on the inventory route', { timeout: 180_000 }, async (t) => {
    const full = { kind: 'full', seq: 1, release: 'bookworm', packages: [pkg('bash', '5.2.15-2')], sockets: [] };
    const heldA = async () => (await s.req('GET', `/api/v1/machines/${A.machineId}/packages`)).body;
    const before = await heldA();
    // The body cannot name a machine.
    const named = await report(B, { ...full, machine_id: A.machineId });
    t.equal(named.status, 400, 'a machine_id in the body is refused');
    // B's host key cannot get a token for A.
    const stolen = await token(B, ['inventory'], A.machineId);
    t.equal(stolen.status, 401, `a token for A with B's proof: ${stolen.body.error?.code}`);
    // A token without the scope, and a replayed one.
    const statusOnly = (await token(A, ['status:write'])).body.access_token;
    t.equal((await report(A, full, statusOnly)).status, 403, 'status:write is not inventory');
    const once = (await token(A)).body.access_token;
    t.equal((await report(A, { ...full, packages: before.packages, sockets: before.sockets, seq: 10 }, once)).status, 200);
    t.equal((await report(A, full, once)).status, 401, 'a used token is refused');
    t.equal((await report(A, full, 'not-a-token')).status, 401);
    const afterReplay = await heldA();
    t.same(afterReplay.packages, before.packages, 'A keeps its inventory');
    // Oversized body; too many packages.
    const huge = await report(A, { ...full, packages: [pkg('bash', 'x'.repeat(MAX_INVENTORY_BODY_BYTES))] });
    t.equal(huge.status, 413, 'a body past the cap');
    const many = await report(A, { ...full, packages: Array.from({ length: 50_001 }, (_, i) => pkg(`p${i}`, '1.0')) });
    t.equal(many.status, 400, 'more packages than an inventory holds');
    // Hostile bytes in fields.
    for (const bad of [pkg('bash', '1:'), pkg('bash', '1.0 beta'), pkg('bash', ''), pkg('bash', '-1'), pkg('bash\nx', '1.0'), pkg('bash', '1.0\u0000'), { ...pkg('bash', '1.0'), extra: 1 }, pkg('bash', '1.0', 'src', '1:2:3-')]) {
      const r = await report(A, { ...full, packages: [bad] });
      t.equal(r.status, 400, `refused: ${JSON.stringify(bad)}`);
    }
    const dup = await report(A, { ...full, packages: [pkg('bash', '1.0'), pkg('bash', '1.1')] });
    t.equal(dup.status, 400, 'the same package twice');
    t.equal((await report(A, { ...full, sockets: [{ ...SSHD, exe: 'relative/path' }] })).status, 400, 'a socket exe that is not a path');
    t.same((await heldA()).packages, before.packages, 'nothing refused reached the database');
  });
}
