/**
 * The console's alerts, decisions and segmentation diff pages in chromium against a real
 * server: an alert the correlator raises appears on the alerts page without a reload (the
 * live stream) and in the overview's count, the filters narrow it; a rule with a
 * quarantine action proposes decisions that are approved (a canary) and rolled back from
 * the decisions page; two revisions of a service compare as rules
 * added, removed and changed; the rollout chart has a title and names its numbers; the
 * new controls are reachable by keyboard and labelled. Screenshots in test-artifacts/console/.
 */
import t from 'tap';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { requireCapability } from '../harness/capabilities.js';
import { chromiumMissing, launchBrowser, seedConsole } from '../harness/console.js';
import { startTestServer } from '../harness/server.js';

declare const document: any;
const ARTIFACTS = fileURLToPath(new URL('../../../test-artifacts/console/', import.meta.url));

if (requireCapability(t, chromiumMissing())) {
  t.test('alerts, decisions, revision diff in chromium', async (t) => {
    mkdirSync(ARTIFACTS, { recursive: true });
    const s = await startTestServer({ env: { AEGIS_CONSOLE_STREAM_HEARTBEAT_MS: '1000', AEGIS_CONSOLE_STREAM_COALESCE_MS: '50', AEGIS_CONSOLE_STREAMS_PER_SESSION: '1' } });
    t.teardown(() => s.close());
    const seed = await seedConsole(s);
    // A third revision of service A: one rule changed port, one added, and an ingress allow.
    const r3 = await s.req('POST', `/api/v1/seg/maps?stage=canary&target_machine=${seed.a.machineId},${seed.a2.machineId}`, {
      version: 1,
      service_id: seed.serviceA,
      edges: [{ dst_cidr: '10.9.0.0/24', proto: 'tcp', port: 8443 }, { dst_cidr: '10.10.0.0/16', proto: 'udp', port: 53 }],
      allow_cidrs: [{ cidr: '192.0.2.0/24', proto: 'tcp', port: 22 }],
      ttl_seconds: 1200,
    });
    t.equal(r3.status, 200, JSON.stringify(r3.body));
    const browser = await launchBrowser();
    t.teardown(() => browser.close());
    const page = await browser.context.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    page.on('console', (m) => {
      if (m.type() === 'error' && !/status of 40[134]/.test(m.text())) errors.push(m.text());
    });
    const shot = (name: string) => page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
    await page.goto(s.url + '/console/');
    await page.getByLabel('Admin API key').fill(s.adminKey);
    await page.keyboard.press('Enter');
    await page.locator('[data-testid="who"]').waitFor();
    await page.locator('.live[data-live="events"]').waitFor({ timeout: 10_000 });
    t.pass('the page is on the live stream');
    t.equal(await page.locator('dd[data-count="alerts-24h"]').textContent(), '0', 'no alerts yet on the overview');

    // --- alerts, live ------------------------------------------------------------------
    await page.click('nav a[href="#/alerts"]');
    await page.locator('h1#page-title', { hasText: 'Alerts' }).waitFor();
    await page.locator('td', { hasText: 'No alerts.' }).waitFor();
    const rule = await s.req('POST', '/api/v1/rules', { id: 'denied-egress', title: 'Denied egress seen', type: 'event_count', rules: [{ source: 'flow', verdict: 'deny' }], 'group-by': ['machine_id'], timespan: '10m', condition: { gte: 1 }, level: 'high' });
    t.equal(rule.status, 201, JSON.stringify(rule.body));
    t.ok((await s.app.correlator.evaluate()) >= 3, 'the correlator raised alerts for the three hosts');
    await page.locator('tbody tr', { hasText: 'Denied egress seen' }).first().waitFor({ timeout: 5_000 });
    t.pass('alerts appear without a reload (well inside the 30 s fallback poll)');
    t.equal(await page.locator('tbody tr', { hasText: 'Denied egress seen' }).count(), 3, 'one per host');
    t.ok(await page.locator('tbody tr', { hasText: 'web-a1' }).locator('text=high').count(), 'host and level shown');
    await shot('alerts');
    await page.getByLabel('Machine').fill(seed.b.machineId);
    await page.getByRole('button', { name: 'Apply alert filters' }).click();
    await page.waitForFunction(() => document.querySelectorAll('tbody tr').length === 1, undefined, { timeout: 5_000 });
    t.match(await page.locator('tbody tr').textContent(), /db-b1/, 'the machine filter narrows to db-b1');
    await page.getByLabel('Machine').fill('');
    await page.getByLabel('Level').selectOption('critical');
    await page.getByRole('button', { name: 'Apply alert filters' }).click();
    await page.locator('td', { hasText: 'No alerts.' }).waitFor();
    t.pass('the level filter: no critical alerts');

    await page.click('nav a[href="#/overview"]');
    await page.locator('dd[data-count="alerts-24h"]', { hasText: '3' }).waitFor();
    t.equal(await page.locator('dd[data-count="alerts-high"]').textContent(), '3', 'the overview counts them by level');
    await shot('overview-alerts');

    // --- decisions: a rule with an action proposes, the operator approves and rolls back --
    const qrule = await s.req('POST', '/api/v1/rules', {
      id: 'quarantine-denied',
      title: 'Quarantine on denied egress',
      type: 'event_count',
      rules: [{ source: 'flow', verdict: 'deny' }],
      'group-by': ['machine_id'],
      timespan: '10m',
      condition: { gte: 1 },
      level: 'high',
      action: { type: 'quarantine', allow: [{ cidr: '192.0.2.10/32', proto: 'tcp', port: 22 }] },
      mode: 'propose',
    });
    t.equal(qrule.status, 201, JSON.stringify(qrule.body));
    await page.click('nav a[href="#/decisions"]');
    await page.locator('h1#page-title', { hasText: 'Decisions' }).waitFor();
    t.ok((await s.app.correlator.evaluate()) >= 3, 'the rule with an action raised alerts, and so decisions');
    await page.getByLabel('Machine').fill(seed.a.machineId);
    await page.getByRole('button', { name: 'Apply decision filters' }).click();
    const row = page.locator('tbody tr', { hasText: 'quarantine-denied' });
    await row.locator('text=proposed').waitFor({ timeout: 10_000 });
    t.equal(await page.locator('tbody tr').count(), 1, 'the machine filter: one decision, proposed');
    await shot('decisions');
    await row.getByRole('button', { name: /^Approve decision/ }).click();
    await page.locator('[role="status"]', { hasText: 'approved' }).waitFor();
    const listed = async () => (await s.req('GET', `/api/v1/decisions?machine=${seed.a.machineId}`)).body.items as any[];
    const approved = (await listed())[0];
    t.equal(approved.state, 'canary', 'approved in the console: the quarantine runs as a canary');
    t.ok(approved.revisions.length >= 1, 'through the orchestrator (a revision per service)');
    await row.locator('text=canary').waitFor({ timeout: 10_000 });
    await row.getByLabel('Reason').fill('false positive: backup job');
    await row.getByRole('button', { name: /^Roll back decision/ }).click();
    await page.locator('[role="status"]', { hasText: 'rolled back' }).waitFor();
    const back = (await listed())[0];
    t.equal(back.state, 'rolled_back', 'rolled back from the console');
    t.equal(back.reason, 'false positive: backup job', 'with the reason given');
    await row.locator('text=rolled_back').waitFor({ timeout: 10_000 });
    t.equal(await row.getByRole('button').count(), 0, 'a closed decision offers no action');
    await shot('decisions-rolled-back');

    // --- segmentation: rollout chart and the diff ---------------------------------------
    await page.click('nav a[href="#/segmentation"]');
    const svc = page.locator(`section[data-service="${seed.serviceA}"]`);
    await svc.waitFor();
    const chart = svc.locator('[data-testid="rollout-chart"] svg');
    t.equal(await chart.getAttribute('role'), 'img', 'the rollout chart is an image to assistive technology');
    t.match(await chart.locator('> title').textContent(), /Rollout progress/, 'with a title');
    t.match(await chart.locator('> desc').textContent(), new RegExp(`service ${seed.serviceA}: \\d of 2 applied`), 'and its numbers in words');
    const diff = svc.locator(`[data-testid="diff-${seed.serviceA}"]`);
    await diff.getByLabel('From revision').selectOption('2');
    await diff.getByLabel('To revision').selectOption(String(r3.body.revision));
    const lines = async (kind: string) => (await diff.locator(`[data-diff="${kind}"]`).allTextContents()).map((x) => x.replace(/\s+/g, ' ').trim());
    t.same(await lines('added'), ['+ added: egress udp/53 → 10.10.0.0/16', '+ added: ingress tcp/22 ← 192.0.2.0/24'], 'added rules');
    t.same(await lines('changed'), ['~ changed: egress tcp/444 → 10.9.0.0/24 ⇒ tcp/8443'], 'a changed rule: the same destination, another port');
    t.same(await lines('ttl'), ['~ TTL 900s ⇒ 1200s'], 'the TTL change');
    t.same(await lines('removed'), [], 'nothing removed between r2 and r3');
    await diff.getByLabel('From revision').selectOption(String(r3.body.revision));
    await diff.getByLabel('To revision').selectOption('1');
    t.same(await lines('removed'), ['− removed: egress udp/53 → 10.10.0.0/16', '− removed: ingress tcp/22 ← 192.0.2.0/24'], 'the other way round: removed');
    await diff.getByLabel('To revision').selectOption(String(r3.body.revision));
    await diff.locator('[data-diff="none"]').waitFor();
    t.pass('a revision against itself: the same rules');
    await diff.getByLabel('From revision').selectOption('2');
    await svc.scrollIntoViewIfNeeded();
    await shot('segmentation-diff');

    // --- keyboard: the diff selectors and the alerts filter form are reachable ---------
    await diff.getByLabel('From revision').focus();
    await page.keyboard.press('Tab');
    t.equal(await page.evaluate(() => document.activeElement?.closest('label')?.textContent?.trim().startsWith('To revision')), true, 'Tab moves from one revision selector to the other');
    const unlabeled = await page.evaluate(() => [...document.querySelectorAll('input, select')].filter((el: any) => !el.labels?.length).length);
    t.equal(unlabeled, 0, 'every input has a label');

    // --- a second tab past the per-session stream cap: refused (429), it polls instead -----
    const tab2 = await browser.context.newPage();
    await tab2.goto(s.url + '/console/#/customers');
    await tab2.locator('td', { hasText: 'Acme Corp' }).waitFor();
    await tab2.locator('.live[data-live="polling"]').waitFor();
    t.match(await tab2.locator('.live').textContent(), /Polling/, 'the second tab says it is polling');
    await s.req('POST', '/api/v1/customers', { name: 'Polled Inc' });
    await tab2.locator('td', { hasText: 'Polled Inc' }).waitFor({ timeout: 10_000 });
    t.pass('and still updates without a reload (the 4 s poll)');
    t.equal(s.app.live.count(), 1, 'the server holds one stream for the session');
    await tab2.close();
    t.same(errors, [], 'no script errors');
  });
}
