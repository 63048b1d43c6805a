/**
 * A real aegis-agent process (root, eBPF datapath on a cgroup, real NATS) and the console
 * in chromium, with no page reload from sign-in to the end: a license issued in the
 * console (its key shown once) activates the agent, which comes online on the agents
 * page over the live stream (its status reports travel over NATS); a canary snapshot for
 * its service is acked, promoted in the console, and the real agent reports the enforce
 * revision (ack on the segmentation and agents pages; the kernel refuses the other port);
 * the license revoked in the console shows the host at community on the agents page, and
 * the agent's own status says community after its refresh. Screenshots of each step.
 */
import t from 'tap';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { requireCapability, missingCommand } from '../harness/capabilities.js';
import { chromiumMissing, launchBrowser } from '../harness/console.js';
import { agentDir, cleanupDir, startAgent } from '../harness/agent.js';
import { startNats } from '../harness/nats.js';
import { missingDatapath, makeCgroup, removeCgroup, testPinRoot, tcpListener, probeTcp, eventually } from '../harness/datapath.js';
import { purgePins } from '../../agent/src/datapath/index.js';
import { startTestServer } from '../harness/server.js';

declare const window: any;
const ARTIFACTS = fileURLToPath(new URL('../../../test-artifacts/console/', import.meta.url));
const SERVICE = 131;

t.test('a real agent licensed, promoted and revoked from the console', { timeout: 240_000 }, async (t) => {
  if (!requireCapability(t, chromiumMissing())) return;
  if (!requireCapability(t, missingCommand('nats-server'))) return;
  if (!requireCapability(t, await missingDatapath())) return;
  mkdirSync(ARTIFACTS, { recursive: true });
  const nats = await startNats();
  t.teardown(() => nats.stop());
  // Republish every 2 s, heartbeat 1 s: short windows, no sleeps.
  const s = await startTestServer({ natsUrl: nats.url, republishSeconds: 2, env: { AEGIS_CONSOLE_STREAM_HEARTBEAT_MS: '1000', AEGIS_CONSOLE_STREAM_COALESCE_MS: '50' } });
  t.teardown(() => s.close());
  await s.req('POST', '/api/v1/customers', { name: 'Real Agent Co' });
  const allowed = await tcpListener('127.0.0.1');
  const other = await tcpListener('127.0.0.1');
  t.teardown(() => {
    allowed.close();
    other.close();
  });
  const pAllowed = allowed.port;
  const pOther = other.port;
  const cgroup = makeCgroup('console-e2e');
  const pinRoot = testPinRoot('console-e2e');
  t.teardown(async () => {
    removeCgroup(cgroup);
    await purgePins(pinRoot).catch(() => undefined);
  });

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
  await page.locator('.live[data-live="events"]').waitFor({ timeout: 10_000 });
  // A mark in the page: gone if anything reloads it.
  await page.evaluate(() => ((window as any).aegisMark = 'no-reload'));

  // --- issue a license in the console: the key is shown once ----------------------------
  await page.click('nav a[href="#/licenses"]');
  await page.getByLabel('Customer').selectOption({ label: 'Real Agent Co' });
  await page.getByLabel('Seats').fill('1');
  await page.getByRole('button', { name: 'Issue license' }).click();
  const key = (await page.locator('[data-testid="license-key"]').textContent())!.trim();
  const lic = (await s.req('GET', '/api/v1/licenses')).body.items.find((l: any) => key.endsWith(l.key_suffix));
  t.ok(lic, 'issued in the console');
  await page.getByRole('button', { name: 'I have copied it, hide' }).click();
  t.equal(await page.locator('[data-testid="license-key"]').count(), 0, 'the key is hidden once copied');

  // --- the agents page, then the real agent activates and comes online live -------------
  await page.click('nav a[href="#/agents"]');
  await page.locator('td', { hasText: 'No agent has reported yet.' }).waitFor();
  const host = `console-agent-${process.pid}`;
  const dir = agentDir();
  t.teardown(() => cleanupDir(dir));
  const agent = await startAgent({
    serverUrl: s.url,
    dir,
    pinRoot,
    services: { [String(SERVICE)]: cgroup },
    hardwareFacts: { machine_id: host, macs: ['52:54:00:aa:bb:15'] },
    extraConfig: { hostname: host, nats_url: nats.url, status_interval_seconds: 1, fallback_interval_seconds: 1 },
  });
  t.teardown(() => agent.stop());
  await agent.waitReady();
  const act = await agent.api('POST', '/v1/activate', { license_key: key });
  t.equal(act.status, 200, JSON.stringify(act.body));
  const machineId = (await agent.api('GET', '/v1/status')).body.machine_id as string;
  const row = page.locator('tr', { hasText: host });
  await row.locator('[data-mode="licensed"]').waitFor({ timeout: 20_000 });
  t.ok(await row.locator('text=online').count(), 'the real agent comes online on the agents page, no reload');
  t.ok(await row.locator('text=available').count(), 'its datapath is available (eBPF)');
  t.match(await row.locator('[data-mode="licensed"]').textContent(), /licensed · server/, 'licensed, tier server');
  await shot('agent-online');

  // --- a canary snapshot for its service; the agent acks it --------------------------------
  const canary = await s.req('POST', `/api/v1/seg/maps?target_host=${host}`, { version: 1, service_id: SERVICE, edges: [{ dst_cidr: '127.0.0.1/32', proto: 'tcp', port: pAllowed }], ttl_seconds: 3600 });
  t.equal(canary.status, 200, JSON.stringify(canary.body));
  t.equal(canary.body.stage, 'canary');
  const rev = canary.body.revision as number;
  await page.click('nav a[href="#/segmentation"]');
  const svc = page.locator(`section[data-service="${SERVICE}"]`);
  await svc.locator('tr', { hasText: host }).locator(`text=r${rev} canary applied`).waitFor({ timeout: 20_000 });
  t.pass('the canary is acked by the real agent, on the segmentation page');
  t.same(await probeTcp(cgroup, [pAllowed, pOther]), [true, true], 'canary: observe mode, nothing refused yet');
  await shot('agent-canary');

  // --- promote in the console; the agent reports the enforce revision ----------------------
  await svc.getByRole('button', { name: `Promote revision ${rev} to enforce` }).click();
  await page.locator('.notice', { hasText: `Promoted: service ${SERVICE} now at revision ${rev} (enforce)` }).waitFor();
  await eventually('the agent enforces', async () => (await agent.api('GET', '/v1/snapshots')).body.services.find((x: any) => x.service_id === SERVICE)?.mode === 'enforce', 20_000);
  await eventually('the kernel refuses the other port', async () => {
    const r = await probeTcp(cgroup, [pAllowed, pOther]);
    return r[0] === true && r[1] === false;
  });
  t.pass('promoted: the kernel connects the allowed port and refuses the other');
  await svc.locator('tr', { hasText: host }).locator(`text=r${rev} enforce applied`).waitFor({ timeout: 20_000 });
  t.pass("the segmentation page shows the agent's enforce ack, live");
  await page.click('nav a[href="#/agents"]');
  await row.locator(`text=service ${SERVICE}: r${rev}`).waitFor();
  await row.locator('.badge', { hasText: 'enforce' }).waitFor({ timeout: 20_000 });
  t.pass("the agent's enforce ack shows on the agents page, live");
  const server = (await s.req('GET', `/api/v1/agents/${machineId}`)).body;
  t.same([server.applied[String(SERVICE)].revision, server.applied[String(SERVICE)].stage, server.applied[String(SERVICE)].ok], [rev, 'enforce', true], 'the server holds the enforce ack');
  await shot('agent-enforce');

  // --- revoke in the console: the host drops to community ----------------------------------
  await page.click('nav a[href="#/licenses"]');
  await page.getByRole('button', { name: `Revoke license …${lic.key_suffix}` }).click();
  await page.getByLabel('Reason').fill('contract ended');
  await page.getByRole('button', { name: 'Confirm revoke' }).click();
  await page.locator('tr', { hasText: `…${lic.key_suffix}` }).locator('text=revoked').first().waitFor();
  await page.click('nav a[href="#/agents"]');
  await row.locator('[data-mode="community"]').waitFor({ timeout: 10_000 });
  t.match(await row.locator('[data-mode="community"]').textContent(), /community.*license revoked/, 'the agents page: community, license revoked');
  const r = await agent.api('POST', '/v1/refresh');
  t.equal(r.body.state, 'community', 'the agent drops to community on its next refresh');
  t.match(r.body.reason, /LICENSE_REVOKED/);
  t.equal((await agent.api('GET', '/v1/status')).body.edition, 'community', "the agent's own status: community");
  await shot('agent-revoked');
  t.equal(await page.evaluate(() => (window as any).aegisMark), 'no-reload', 'the page was never reloaded: every change arrived live');
  t.same(errors, [], 'no script errors');
});
