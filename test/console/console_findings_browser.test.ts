/**
 * The console's findings page in chromium against a real aegis-server: a machine reports
 * its inventory through the real agent route (host-proof token), a crafted OSV feed is
 * imported with the real `aegis-server intel import` CLI on the server's database, and the
 * page shows the finding (machine, package, version, advisory, aliases, severity, fixed
 * version, exposed with the listening socket), its filters narrow it, and the machine's
 * packages view lists what the machine reported. Screenshots in test-artifacts/console/.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AGENT_API, AUD_AGENT_TOKEN_PROOF } from '../../protocol/src/index.js';
import { requireCapability } from '../harness/capabilities.js';
import { chromiumMissing, launchBrowser } from '../harness/console.js';
import { activateTestHost, startTestServer, type ActivatedHost } from '../harness/server.js';

declare const document: any;

const ARTIFACTS = fileURLToPath(new URL('../../../test-artifacts/console/', import.meta.url));
const CLI = fileURLToPath(new URL('../../server/src/cli.js', import.meta.url));

const pkg = (name: string, version: string, source = name, sourceVersion = version) => ({ package: name, version, architecture: 'amd64', source, source_version: sourceVersion });
const SSHD = { proto: 'tcp', address: '0.0.0.0', port: 22, pid: 612, exe: '/usr/sbin/sshd', package: 'openssh-server' };
const osv = (id: string, source: string, fixed: string, extra: Record<string, unknown> = {}) => ({
  id,
  modified: '2026-01-01T00:00:00Z',
  aliases: [id.replace(/^DEBIAN-/, '')],
  affected: [{ package: { ecosystem: 'Debian:12', name: source }, ranges: [{ type: 'ECOSYSTEM', events: [{ introduced: '0' }, { fixed }] }] }],
  ...extra,
});

if (requireCapability(t, chromiumMissing())) {
  t.test('findings and packages in the console', { timeout: 240_000 }, async (t) => {
    mkdirSync(ARTIFACTS, { recursive: true });
    const dir = mkdtempSync(join(tmpdir(), 'aegis-console-intel-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const databaseUrl = `sqlite:${join(dir, 'aegis.db')}`;
    const s = await startTestServer({ databaseUrl });
    t.teardown(() => s.close());
    const A = await activateTestHost(s, 'web-intel-a');
    const B = await activateTestHost(s, 'db-intel-b');

    const report = async (h: ActivatedHost, body: unknown) => {
      const tok = await s.req('POST', AGENT_API.token, { scope: ['inventory'], machine_id: h.machineId, proof: h.host.proof(AUD_AGENT_TOKEN_PROOF) }, { key: null });
      t.equal(tok.status, 200, JSON.stringify(tok.body));
      const r = await s.req('POST', AGENT_API.inventory, body, { key: null, headers: { authorization: `Bearer ${tok.body.access_token}` } });
      t.equal(r.status, 200, JSON.stringify(r.body));
    };
    await report(A, { kind: 'full', seq: 1, release: 'bookworm', packages: [pkg('openssh-server', '1:9.2p1-2+deb12u2', 'openssh'), pkg('libssl3', '3.0.11-1~deb12u2', 'openssl'), pkg('bash', '5.2.15-2+b2', 'bash', '5.2.15-2')], sockets: [SSHD] });
    await report(B, { kind: 'full', seq: 1, release: 'bookworm', packages: [pkg('libssl3', '3.0.11-1~deb12u2', 'openssl')], sockets: [] });
    const feed = join(dir, 'osv.json');
    writeFileSync(feed, JSON.stringify([osv('DEBIAN-CVE-2024-6387', 'openssh', '1:9.2p1-2+deb12u3', { severity: [{ type: 'CVSS_V3', score: 'CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:H/A:H' }] }), osv('DEBIAN-CVE-2024-5535', 'openssl', '3.0.14-1~deb12u1')]));
    const run = await new Promise<{ status: number | null; out: string }>((resolve, reject) => {
      const p = spawn(process.execPath, [CLI, 'intel', 'import', feed, '--json'], { env: { ...process.env, DATABASE_URL: databaseUrl, LOG_LEVEL: 'error' }, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      p.stdout.on('data', (c: Buffer) => (out += c.toString()));
      p.stderr.on('data', (c: Buffer) => (out += c.toString()));
      p.on('error', reject);
      p.on('close', (status) => resolve({ status, out }));
    });
    t.equal(run.status, 0, run.out);
    const api = (await s.req('GET', '/api/v1/findings')).body;
    t.equal(api.total, 3, 'the API holds three findings (openssh on A, openssl on A and B)');

    const browser = await launchBrowser();
    t.teardown(() => browser.close());
    const page = await browser.context.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(m.text());
    });
    const shot = (name: string) => page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
    await page.goto(s.url + '/console/');
    await page.getByLabel('Admin API key').fill(s.adminKey);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('[data-testid="who"]').waitFor();
    await page.click('nav a[href="#/findings"]');
    await page.locator('h1#page-title', { hasText: 'Findings' }).waitFor();
    await page.locator('caption', { hasText: /of 3$/ }).waitFor();

    const row = page.locator('tbody tr', { hasText: 'DEBIAN-CVE-2024-6387' });
    t.equal(await row.count(), 1, 'the openssh finding is one row');
    const cells = (await row.locator('td').allTextContents()).map((c) => c.trim());
    t.match(cells[0], /^web-intel-a/, 'machine by host name');
    t.match(cells[1], /openssh-server.*\(openssh\)/, 'binary package and its source');
    t.equal(cells[2], '1:9.2p1-2+deb12u2', 'installed version');
    t.equal(cells[4], 'CVE-2024-6387', 'aliases');
    t.equal(cells[5], 'high', 'severity from the CVSS vector');
    t.equal(cells[6], '1:9.2p1-2+deb12u3', 'fixed version');
    t.match(cells[7], /^yes\s*tcp 0\.0\.0\.0:22 \(\/usr\/sbin\/sshd\)$/, 'exposed, with the listening socket');
    const ssl = page.locator('tbody tr', { hasText: 'libssl3' });
    t.equal(await ssl.count(), 2, 'openssl on both machines');
    t.match(await ssl.first().locator('td').nth(7).textContent(), /^no$/, 'libssl3 listens nowhere: not exposed');
    await shot('findings');

    const applyAndWait = async (total: number) => {
      await page.getByRole('button', { name: 'Apply filters' }).click();
      await page.locator('caption', { hasText: new RegExp(`of ${total}$`) }).waitFor();
    };
    await page.getByLabel('Severity (at least)').selectOption('high');
    await applyAndWait(1);
    t.equal(await page.locator('tbody tr', { hasText: 'DEBIAN-CVE-2024-6387' }).count(), 1, 'severity high: only the openssh finding');
    await page.getByLabel('Severity (at least)').selectOption('');
    await page.getByLabel('Package', { exact: true }).fill('openssl');
    await applyAndWait(2);
    await page.getByLabel('Package', { exact: true }).fill('');
    await page.getByLabel('Advisory').fill('DEBIAN-CVE-2024-5535');
    await page.getByLabel('Machine', { exact: true }).selectOption({ label: 'db-intel-b' });
    await applyAndWait(1);
    t.match(await page.locator('tbody tr').first().textContent(), /db-intel-b.*libssl3.*DEBIAN-CVE-2024-5535/, 'advisory and machine filters together');
    const same = (await s.req('GET', `/api/v1/findings?advisory=DEBIAN-CVE-2024-5535&machine=${B.machineId}`)).body;
    t.equal(same.total, 1, 'the API agrees');

    // The machine's packages view.
    await page.getByLabel('Show the packages of').selectOption({ label: 'web-intel-a' });
    await page.locator('caption', { hasText: 'Packages (3)' }).waitFor();
    t.match(await page.locator('[data-testid="inventory"]').textContent(), /Release bookworm, inventory #1/, 'release and inventory number');
    const bash = page.locator('tr', { hasText: '5.2.15-2+b2' });
    t.match(await bash.textContent(), /bash.*5\.2\.15-2\+b2.*amd64.*bash 5\.2\.15-2/, 'binary version and source version apart');
    t.match(await page.locator('tr', { hasText: '/usr/sbin/sshd' }).textContent(), /tcp 0\.0\.0\.0:22.*openssh-server/, 'the listening socket and its package');
    await page.locator('#packages-title').scrollIntoViewIfNeeded();
    await shot('findings-packages');
    t.equal(await page.evaluate(() => [...document.querySelectorAll('input, select')].filter((el: any) => !el.labels?.length).length), 0, 'every input has a label');
    t.same(errors.filter((e) => !/status of 401/.test(e)), [], 'no script errors (the 401 is the session check before sign-in)');
  });
}
