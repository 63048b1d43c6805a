/**
 * Offline activation in the console, in chromium against a real aegis-server: the operator
 * uploads a request file signed by a host key (made as `aegisctl activate --offline` makes
 * one), downloads the license file, which is the machine-bound file the API answers (same
 * machine, license, host, nonce; its license token validates for that hardware); a second
 * upload of the same file is refused (PROOF_REPLAYED) and takes no seat; a file that is not
 * JSON is refused on the page; the release file frees the seat; and the session's write
 * without the CSRF token is 403 with nothing activated.
 */
import t from 'tap';
import { readFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { OFFLINE_LICENSE_FORMAT, OFFLINE_RELEASE_FORMAT, OFFLINE_RELEASE_TYP, OFFLINE_REQUEST_FORMAT, OFFLINE_REQUEST_TYP, jwkThumbprint, newOfflineNonce, signOfflineJws } from '../../protocol/src/index.js';
import { requireCapability } from '../harness/capabilities.js';
import { chromiumMissing, launchBrowser } from '../harness/console.js';
import { startTestServer, TestHost } from '../harness/server.js';

const ARTIFACTS = fileURLToPath(new URL('../../../test-artifacts/console/', import.meta.url));

const requestFile = (host: TestHost, licenseKey: string) => ({
  format: OFFLINE_REQUEST_FORMAT,
  jws: signOfflineJws(host.privateKey, OFFLINE_REQUEST_TYP, {
    license_key: licenseKey,
    hardware_id: host.hardwareId,
    components: host.components(licenseKey),
    environment: 'host',
    host_public_key: host.jwk,
    hostname: host.name,
    agent_version: '1.2.0',
    nonce: newOfflineNonce(),
    iat: Math.floor(Date.now() / 1000),
  }),
});
const releaseFile = (host: TestHost, machineId: string) => ({
  format: OFFLINE_RELEASE_FORMAT,
  jws: signOfflineJws(host.privateKey, OFFLINE_RELEASE_TYP, { machine_id: machineId, hardware_id: host.hardwareId, host_key_thumbprint: jwkThumbprint(host.jwk), nonce: newOfflineNonce(), iat: Math.floor(Date.now() / 1000) }),
});
const nonceOf = (jws: string) => JSON.parse(Buffer.from(jws.split('.')[1]!, 'base64url').toString('utf8')).nonce as string;
const shape = (v: unknown): unknown => (v && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, shape((v as Record<string, unknown>)[k])])) : typeof v);

if (requireCapability(t, chromiumMissing())) {
  t.test('offline activation and release in the console', { timeout: 240_000 }, async (t) => {
    mkdirSync(ARTIFACTS, { recursive: true });
    const s = await startTestServer();
    t.teardown(() => s.close());
    const customer = (await s.req('POST', '/api/v1/customers', { name: 'Air-gapped site' })).body;
    const lic = (await s.req('POST', '/api/v1/licenses', { customer_id: customer.id, tier: 'server', license_type: 'perpetual', max_machines: 2 })).body;
    const seats = async () => ((await s.req('GET', `/api/v1/licenses/${lic.id}/machines`)).body.items as Array<{ status: string }>).filter((m) => m.status === 'active').length;
    const host = new TestHost('airgap-console-1');
    const request = requestFile(host, lic.license_key);

    const browser = await launchBrowser();
    t.teardown(() => browser.close());
    const page = await browser.context.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    const shot = (name: string) => page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
    await page.goto(s.url + '/console/');
    await page.getByLabel('Admin API key').fill(s.adminKey);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('[data-testid="who"]').waitFor();
    await page.click('nav a[href="#/offline"]');
    await page.locator('h1#page-title', { hasText: 'Offline activation' }).waitFor();

    // Not JSON: refused on the page, nothing sent.
    await page.getByLabel('Activation request file').setInputFiles({ name: 'request.json', mimeType: 'application/json', buffer: Buffer.from('not json') });
    await page.getByRole('button', { name: 'Issue license file' }).click();
    await page.getByRole('alert').filter({ hasText: 'NOT_JSON' }).waitFor();
    t.equal(await seats(), 0, 'a file that is not JSON takes no seat');

    // The real request: the license file to download.
    await page.getByLabel('Activation request file').setInputFiles({ name: 'request.json', mimeType: 'application/json', buffer: Buffer.from(JSON.stringify(request, null, 2)) });
    await page.getByRole('button', { name: 'Issue license file' }).click();
    await page.locator('[data-testid="offline-issued"]').waitFor();
    await shot('offline-issued');
    const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('link', { name: /^Download aegis-license-airgap-console-1\.json$/ }).click()]);
    t.equal(download.suggestedFilename(), 'aegis-license-airgap-console-1.json');
    const file = JSON.parse(readFileSync((await download.path())!, 'utf8'));
    const machines = (await s.req('GET', `/api/v1/licenses/${lic.id}/machines`)).body.items;
    t.equal(machines.length, 1, 'one seat taken');
    t.match(file, { format: OFFLINE_LICENSE_FORMAT, machine_id: machines[0].id, license_id: lic.id, hostname: host.name, hardware_id: host.hardwareId, request_nonce: nonceOf(request.jws) }, 'the license file names the machine, license, host and request');
    t.equal(file.bundle.machine_id, file.machine_id);
    const v = await s.req('POST', '/api/v1/licenses/validate', { token: file.bundle.license_token, hardware_id: host.hardwareId }, { key: null });
    t.equal(v.status, 200, JSON.stringify(v.body));
    t.equal(v.body.valid, true, 'the downloaded license token validates for this hardware');
    // What the API itself answers for a request from the same host: the same file, field for field.
    const viaApi = await s.req('POST', '/api/v1/machines/offline-activations', requestFile(host, lic.license_key));
    t.equal(viaApi.status, 200, 'the same host again: re-activated');
    t.same(shape(file), shape(viaApi.body), 'the same fields and types as the API answer');
    t.same([file.machine_id, file.license_id, file.hostname, file.hardware_id, file.bundle.jwks], [viaApi.body.machine_id, viaApi.body.license_id, viaApi.body.hostname, viaApi.body.hardware_id, viaApi.body.bundle.jwks], 'same machine, license, host, hardware and keys');

    // The same file a second time: replayed, no seat.
    await page.getByLabel('Activation request file').setInputFiles({ name: 'request.json', mimeType: 'application/json', buffer: Buffer.from(JSON.stringify(request)) });
    await page.getByRole('button', { name: 'Issue license file' }).click();
    await page.getByRole('alert').filter({ hasText: 'PROOF_REPLAYED' }).waitFor();
    t.equal(await page.locator('[data-testid="who"]').count(), 1, 'a refused file (401 PROOF_REPLAYED) does not end the session');
    t.equal(await seats(), 1, 'a replayed request takes no seat');

    // The session's write without the CSRF token: 403, nothing activated.
    const other = new TestHost('airgap-console-2');
    const noToken = await page.evaluate(async (body) => {
      const r = await fetch('/api/v1/machines/offline-activations', { method: 'POST', headers: { 'content-type': 'application/json' }, body });
      return { status: r.status, body: (await r.json()) as any };
    }, JSON.stringify(requestFile(other, lic.license_key)));
    t.same([noToken.status, noToken.body.error.details.reason], [403, 'csrf_token'], 'without the CSRF token: 403');
    t.equal(await seats(), 1, 'nothing activated');

    // The release file frees the seat.
    await page.getByLabel('Release file', { exact: true }).setInputFiles({ name: 'release.json', mimeType: 'application/json', buffer: Buffer.from(JSON.stringify(releaseFile(host, file.machine_id))) });
    await page.getByRole('button', { name: 'Free the seat' }).click();
    await page.locator('[data-testid="offline-released"]', { hasText: 'deactivated' }).waitFor();
    await shot('offline-released');
    t.equal(await seats(), 0, 'the seat is free');
    const after = await s.req('POST', '/api/v1/licenses/validate', { token: file.bundle.license_token, hardware_id: host.hardwareId }, { key: null });
    t.equal(after.body.valid, false, 'the released machine\'s token no longer validates');
    const audit = (await s.req('GET', '/api/v1/admin/audit-logs?limit=20')).body.items.map((e: any) => e.event_type);
    t.ok(audit.includes('machine.activated') && audit.includes('machine.deactivated'), `audited (${audit.slice(0, 6).join(', ')})`);
    t.same(errors, [], 'no script errors');
  });
}
