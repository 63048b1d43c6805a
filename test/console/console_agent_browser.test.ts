/**
 * A real aegis-agent process and the console: a license issued in the console activates
 * the agent (its seat shows on the licenses page), and a revocation in the console drops
 * the agent to community on its next refresh (its own /v1/status). Not covered here: the
 * agents and segmentation pages from the real agent's reports (those travel over NATS).
 */
import t from 'tap';
import { requireCapability } from '../harness/capabilities.js';
import { chromiumMissing, launchBrowser } from '../harness/console.js';
import { agentDir, cleanupDir, startAgent } from '../harness/agent.js';
import { startTestServer } from '../harness/server.js';

if (requireCapability(t, chromiumMissing())) {
  t.test('a real agent licensed and revoked from the console', { timeout: 240_000 }, async (t) => {
    const s = await startTestServer();
    t.teardown(() => s.close());
    await s.req('POST', '/api/v1/customers', { name: 'Real Agent Co' });
    const browser = await launchBrowser();
    t.teardown(() => browser.close());
    const page = await browser.context.newPage();
    await page.goto(s.url + '/console/');
    await page.getByLabel('Admin API key').fill(s.adminKey);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('[data-testid="who"]').waitFor();
    await page.click('nav a[href="#/licenses"]');
    await page.getByLabel('Customer').selectOption({ label: 'Real Agent Co' });
    await page.getByLabel('Seats').fill('1');
    await page.getByRole('button', { name: 'Issue license' }).click();
    const key = (await page.locator('[data-testid="license-key"]').textContent())!.trim();
    const lic = (await s.req('GET', '/api/v1/licenses')).body.items.find((l: any) => key.endsWith(l.key_suffix));
    t.ok(lic, 'issued in the console');

    const dir = agentDir();
    t.teardown(() => cleanupDir(dir));
    const agent = await startAgent({ serverUrl: s.url, dir, hardwareFacts: { machine_id: `real-agent-${process.pid}`, macs: ['52:54:00:aa:bb:01'] }, extraConfig: { hostname: 'real-agent-1', status_interval_seconds: 1, fallback_interval_seconds: 1 } });
    t.teardown(() => agent.stop());
    await agent.waitReady();
    const act = await agent.api('POST', '/v1/activate', { license_key: key });
    t.equal(act.status, 200, JSON.stringify(act.body));
    t.equal((await agent.api('GET', '/v1/status')).body.edition, 'licensed', 'the agent runs licensed');

    await page.getByRole('button', { name: 'I have copied it, hide' }).click();
    // The seat the real agent took, on the licenses page without a reload.
    await page.locator('tr', { hasText: `…${lic.key_suffix}` }).locator('td', { hasText: '1/1' }).waitFor({ timeout: 15_000 });
    t.pass("the real agent's seat shows in the console");
    await page.click('nav a[href="#/licenses"]');
    await page.getByRole('button', { name: `Revoke license …${lic.key_suffix}` }).click();
    await page.getByLabel('Reason').fill('contract ended');
    await page.getByRole('button', { name: 'Confirm revoke' }).click();
    await page.locator('tr', { hasText: `…${lic.key_suffix}` }).locator('text=revoked').first().waitFor();
    const r = await agent.api('POST', '/v1/refresh');
    t.equal(r.body.state, 'community', 'the agent drops to community on its next refresh');
    t.match(r.body.reason, /LICENSE_REVOKED/);
    t.equal((await agent.api('GET', '/v1/status')).body.edition, 'community', "the agent's own status: community");
  });
}
