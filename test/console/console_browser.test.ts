/**
 * The operator console in a real browser (Debian's chromium, headless, driven by
 * playwright-core) against a real aegis-server: sign in with an admin key, every page
 * renders what the API holds (a screenshot of each in test-artifacts/console/), issue a
 * license and see its key once, see machines and agents, promote and roll back a canary,
 * deactivate a machine, revoke a license, live updates without reload; the page's own
 * writes carry the CSRF token while a write from the page without it, and one from
 * another origin, are refused; an expired session and a signed-out cookie open nothing;
 * a key limited to one customer sees only that customer.
 */
import t from 'tap';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Page } from 'playwright-core';
import { requireCapability } from '../harness/capabilities.js';
import { chromiumMissing, launchBrowser, seedConsole } from '../harness/console.js';
import { startTestServer } from '../harness/server.js';
import { SCOPES } from '../../server/src/api_keys.js';

// Browser globals of the functions page.evaluate runs in the page (this project compiles without the DOM lib).
declare const document: any, localStorage: any, sessionStorage: any, getComputedStyle: any;

const ARTIFACTS = fileURLToPath(new URL('../../../test-artifacts/console/', import.meta.url));

if (requireCapability(t, chromiumMissing())) {
  t.test('console in chromium', async (t) => {
    mkdirSync(ARTIFACTS, { recursive: true });
    const s = await startTestServer({ env: { AEGIS_CONSOLE_SESSION_SECONDS: '900', AEGIS_CONSOLE_STREAM_HEARTBEAT_MS: '1000' } });
    t.teardown(() => s.close());
    const seed = await seedConsole(s);
    const browser = await launchBrowser();
    t.teardown(() => browser.close());
    const page = await browser.context.newPage();
    const consoleErrors: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error') consoleErrors.push(m.text());
    });
    page.on('pageerror', (e) => consoleErrors.push(String(e)));
    const shot = (name: string) => page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
    const go = async (hash: string, heading: string) => {
      await page.click(`nav a[href="#/${hash}"]`);
      await page.locator('h1#page-title', { hasText: heading }).waitFor();
      await page.locator('.live').waitFor();
    };

    // --- sign in -------------------------------------------------------------------
    await page.goto(s.url + '/console/');
    await page.getByLabel('Admin API key').waitFor();
    await shot('signin');
    await page.getByLabel('Admin API key').fill('aegis_sk_not-a-real-key-at-all-000000');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('alert').filter({ hasText: 'UNAUTHORIZED' }).waitFor();
    t.pass('a wrong key is refused on the page');
    await page.getByLabel('Admin API key').fill(s.adminKey);
    await page.keyboard.press('Enter');
    await page.locator('[data-testid="who"]', { hasText: 'test-admin' }).waitFor();
    const cookies = await browser.context.cookies(s.url);
    const session = cookies.find((c) => c.name === 'aegis_console');
    t.ok(session, 'a session cookie was set');
    t.same([session?.httpOnly, session?.sameSite, session?.secure], [true, 'Strict', false], 'HttpOnly, SameSite=Strict (not Secure over plain HTTP)');
    t.equal(await page.evaluate(() => document.cookie), '', 'the page cannot read the session cookie');
    t.notOk((await page.evaluate(() => JSON.stringify(localStorage) + JSON.stringify(sessionStorage))).includes('aegis_sk_'), 'the key is kept nowhere in the page');

    // --- overview --------------------------------------------------------------------
    await page.locator('h1#page-title', { hasText: 'Overview' }).waitFor();
    await page.locator('text=Signing keys').waitFor();
    await page.locator('figure.chart svg').first().waitFor();
    t.equal(await page.locator('dd[data-count="online"]').textContent(), '3', 'three agents online');
    t.match(await page.locator('#h-keys + .table-wrap, section[aria-labelledby="h-keys"]').first().textContent(), /aegis-\d{4}-\d{2}.*active/, 'the signing key, active, with its age');
    await shot('overview');

    // --- licenses: issue, key shown once -----------------------------------------------
    await go('licenses', 'Licenses');
    await page.getByLabel('Customer').selectOption({ label: 'Acme Corp' });
    await page.getByLabel('Seats').fill('3');
    await page.getByRole('button', { name: 'Issue license' }).click();
    const keyBox = page.locator('[data-testid="license-key"]');
    await keyBox.waitFor();
    const issuedKey = (await keyBox.textContent())!.trim();
    t.match(issuedKey, /^AEGIS(-[0-9A-HJKMNP-TV-Z]{5}){4}$/, 'the new key is shown');
    await shot('licenses-issued');
    const issued = (await s.req('GET', '/api/v1/licenses')).body.items.find((l: any) => issuedKey.endsWith(l.key_suffix));
    t.ok(issued, 'the license exists on the server');
    t.notOk(JSON.stringify((await s.req('GET', `/api/v1/licenses/${issued.id}`)).body).includes(issuedKey), 'the API never shows the key again');
    await page.getByRole('button', { name: 'I have copied it, hide' }).click();
    await go('customers', 'Customers');
    await go('licenses', 'Licenses');
    t.equal(await page.locator('[data-testid="license-key"]').count(), 0, 'the key is gone once hidden and not shown again');
    t.equal(await page.locator(`text=${issuedKey}`).count(), 0, 'nowhere on the page');
    // Activate a machine on it through the API: the page shows the seat without a reload.
    const row = page.locator('tr', { hasText: `…${issued.key_suffix}` });
    await row.locator('td', { hasText: '0/3' }).waitFor();
    const newHost = await activateViaApi(s, issuedKey, 'app-a3');
    await row.locator('td', { hasText: '1/3' }).waitFor({ timeout: 15_000 });
    t.pass('seat use updates live (server-sent events), no reload');
    await shot('licenses');

    // --- customers -------------------------------------------------------------------
    await go('customers', 'Customers');
    await page.getByLabel('Name').fill('Initech');
    await page.getByRole('button', { name: 'Create customer' }).click();
    await page.locator('td', { hasText: 'Initech' }).waitFor();
    t.equal((await s.req('GET', '/api/v1/customers')).body.items.filter((c: any) => c.name === 'Initech').length, 1, 'created through the console');
    await shot('customers');

    // --- machines: listed, deactivate ------------------------------------------------
    await go('machines', 'Machines');
    await page.locator('td', { hasText: 'app-a3' }).waitFor();
    t.ok(await page.locator('td', { hasText: 'web-a1' }).count(), 'seeded machines listed');
    await shot('machines');
    await page.getByRole('button', { name: 'Deactivate app-a3' }).click();
    await page.getByRole('button', { name: 'Confirm deactivate' }).click();
    await page.locator('tr', { hasText: 'app-a3' }).locator('text=deactivated').waitFor();
    t.equal((await s.req('GET', `/api/v1/licenses/${issued.id}/machines`)).body.items.find((m: any) => m.id === newHost).status, 'deactivated', 'deactivated on the server');

    // --- agents ----------------------------------------------------------------------
    await go('agents', 'Agents');
    await page.locator('td', { hasText: 'db-b1' }).waitFor();
    t.ok(await page.locator('tr', { hasText: 'web-a1' }).locator('text=licensed · server').count(), 'license mode shown');
    t.ok(await page.locator('tr', { hasText: 'web-a1' }).locator('text=service 810: r2').count(), 'applied revision shown');
    await shot('agents');

    // --- segmentation: promote, rollback --------------------------------------------
    await go('segmentation', 'Segmentation');
    const svc = page.locator(`section[data-service="${seed.serviceA}"]`);
    await svc.waitFor();
    t.ok(await svc.locator('tr', { hasText: 'web-a2' }).locator('text=r1 enforce behind').count(), 'web-a2 acked r1 only: behind');
    await shot('segmentation');
    await svc.getByRole('button', { name: 'Promote revision 2 to enforce' }).click();
    await page.locator('.notice', { hasText: `Promoted: service ${seed.serviceA} now at revision 2 (enforce)` }).waitFor();
    let history = (await s.req('GET', `/api/v1/seg/maps/${seed.serviceA}`)).body.revisions;
    t.equal(history.find((r: any) => r.revision === 2).stage, 'enforce', 'promoted on the server');
    await svc.getByRole('button', { name: 'Roll back' }).click();
    await page.locator('.notice', { hasText: 'Rolled back' }).waitFor();
    history = (await s.req('GET', `/api/v1/seg/maps/${seed.serviceA}`)).body.revisions;
    t.equal(history[0].restores_revision, 1, 'the rollback restores revision 1');
    const audit = (await s.req('GET', '/api/v1/admin/audit-logs?limit=20')).body.items.map((e: any) => e.event_type);
    t.ok(audit.includes('seg.map.promoted') && audit.includes('seg.map.rolled_back'), 'both audited');

    // --- flows -----------------------------------------------------------------------
    await go('flows', 'Flows');
    await page.locator('td', { hasText: 'rule' }).first().waitFor();
    t.ok(await page.locator('tr', { hasText: '10.9.0.7' }).locator('text=#0').count(), 'an allowed flow names its rule');
    t.ok(await page.locator('tr', { hasText: '10.9.0.8' }).first().locator('text=default deny').count(), 'a drop says no rule matched');
    t.ok((await page.locator('rect.bar-drop').count()) >= 1, 'the drops chart has bars');
    await shot('flows');
    await page.getByLabel('Verdict').selectOption('allowed');
    await page.waitForFunction(() => {
      const rows = [...document.querySelectorAll('tbody tr')];
      return rows.length > 0 && rows.every((r) => r.textContent!.includes('allowed'));
    }, undefined, { timeout: 10_000 });
    t.equal(await page.locator('tbody tr', { hasText: 'dropped' }).count(), 0, 'the verdict filter applies');

    // --- audit -----------------------------------------------------------------------
    await go('audit', 'Audit log');
    await page.locator('code', { hasText: 'console.signed_in' }).first().waitFor();
    await page.getByLabel('Event type').fill('license.issued');
    await page.getByRole('button', { name: 'Apply filters' }).click();
    await page.locator('caption', { hasText: /of 3$/ }).waitFor();
    t.equal(await page.locator('tbody code', { hasText: 'seg.map' }).count(), 0, 'filtered to license.issued');
    await shot('audit');

    // --- keyboard: tab reaches the navigation, focus is visible ---------------------
    await page.keyboard.press('Tab');
    const focusInfo = async () =>
      page.evaluate(() => {
        const el = document.activeElement as any;
        return { tag: el.tagName, text: el.textContent, outline: getComputedStyle(el).outlineStyle };
      });
    let reached = false;
    for (let i = 0; i < 30 && !reached; i++) {
      const f = await focusInfo();
      if (f.tag === 'A' && f.text === 'Licenses') {
        reached = true;
        t.not(f.outline, 'none', 'focus is visible');
      } else await page.keyboard.press('Tab');
    }
    t.ok(reached, 'the navigation is reachable by keyboard');
    await page.keyboard.press('Enter');
    await page.locator('h1#page-title', { hasText: 'Licenses' }).waitFor();
    // Focus moves once the page has rendered, which may be a moment after its heading shows.
    const focused = await page
      .waitForFunction(() => document.activeElement?.id === 'page-title', undefined, { timeout: 5000 })
      .then(() => 'page-title', async () => page.evaluate(() => document.activeElement?.id ?? ''));
    t.equal(focused, 'page-title', 'Enter follows the link and focus moves to the page heading');
    // Contrast: every visible text on the page against its effective background, WCAG AA,
    // once the page's list has arrived (the heading comes first, the rows after a fetch).
    await page.locator('main table tbody tr').first().waitFor();
    const lowContrast = await page.evaluate(() => {
      const rgb = (c: string) => (c.match(/[\d.]+/g) ?? []).map(Number);
      const lum = ([r, g, b]: number[]) => {
        const f = (v: number) => ((v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
        return 0.2126 * f(r!) + 0.7152 * f(g!) + 0.0722 * f(b!);
      };
      const bgOf = (el: any): number[] => {
        for (let e = el; e; e = e.parentElement) {
          const c = rgb(getComputedStyle(e).backgroundColor);
          if (c.length === 3 || (c.length === 4 && c[3]! > 0)) return c.slice(0, 3);
        }
        return [255, 255, 255];
      };
      const bad: string[] = [];
      let checked = 0;
      for (const el of document.querySelectorAll('body *')) {
        const own = [...el.childNodes].some((n: any) => n.nodeType === 3 && n.textContent.trim());
        if (!own || el.closest('svg') || el.disabled || !el.getClientRects().length) continue;
        checked++;
        const fg = lum(rgb(getComputedStyle(el).color).slice(0, 3));
        const bg = lum(bgOf(el));
        const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
        if (ratio < 4.5) bad.push(`${el.tagName}.${el.className} "${el.textContent.trim().slice(0, 30)}" ${ratio.toFixed(2)}`);
      }
      return { bad, checked };
    });
    t.same(lowContrast.bad, [], 'every text has a contrast of at least 4.5:1');
    t.ok(lowContrast.checked > 40, `${lowContrast.checked} texts checked (badges, buttons, headings, cells, the top bar)`);
    const unlabeled = await page.evaluate(() => [...document.querySelectorAll('input, select')].filter((el: any) => !el.labels?.length).length);
    t.equal(unlabeled, 0, 'every input has a label');

    // --- CSRF from the page itself ----------------------------------------------------
    const fromPage = await page.evaluate(async () => {
      const r = await fetch('/api/v1/customers', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: 'no token' }) });
      return { status: r.status, body: (await r.json()) as any };
    });
    t.same([fromPage.status, fromPage.body.error.details.reason], [403, 'csrf_token'], 'a write with the cookie but without the token: 403');
    // Another origin (another port on the same loopback host: same site, other origin).
    const evil = await browser.context.newPage();
    await evil.route('http://evil.localhost/**', (r) => r.fulfill({ status: 200, contentType: 'text/html', body: '<!doctype html><p>evil</p>' }));
    await evil.goto('http://evil.localhost/');
    const cross = await evil.evaluate(async (url) => {
      try {
        const r = await fetch(url + '/api/v1/customers', { method: 'POST', credentials: 'include', mode: 'no-cors', headers: { 'content-type': 'text/plain' }, body: '{"name":"evil"}' });
        return r.type;
      } catch (e) {
        return String(e);
      }
    }, s.url);
    t.ok(cross, `a cross-origin write was attempted (${cross})`);
    const forged = await fetch(s.url + '/api/v1/customers', {
      method: 'POST',
      headers: { 'content-type': 'application/json', cookie: `aegis_console=${session!.value}`, 'x-csrf-token': await page.evaluate(async () => ((await (await fetch('/console/api/session')).json()) as any).csrf_token as string), origin: 'http://evil.localhost' },
      body: JSON.stringify({ name: 'evil' }),
    });
    t.equal(forged.status, 403, 'even with the token, a cross-origin Origin is 403');
    t.equal((await s.req('GET', '/api/v1/customers')).body.items.filter((c: any) => ['evil', 'no token'].includes(c.name)).length, 0, 'nothing written');
    await evil.close();

    // --- revoke a license ------------------------------------------------------------
    await go('licenses', 'Licenses');
    await page.getByRole('button', { name: `Revoke license …${issued.key_suffix}` }).click();
    await page.getByLabel('Reason').fill('contract ended');
    await page.getByRole('button', { name: 'Confirm revoke' }).click();
    await page.locator('tr', { hasText: `…${issued.key_suffix}` }).locator('text=revoked').first().waitFor();
    t.equal((await s.req('GET', `/api/v1/licenses/${issued.id}`)).body.status, 'revoked', 'revoked on the server');

    // --- sign out: the old cookie opens nothing ----------------------------------------
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByLabel('Admin API key').waitFor();
    await page.locator('.notice', { hasText: 'Signed out.' }).waitFor();
    const after = await fetch(s.url + '/api/v1/licenses', { headers: { cookie: `aegis_console=${session!.value}` } });
    t.equal(after.status, 401, 'the signed-out cookie is refused');
    t.equal((await browser.context.cookies(s.url)).filter((c) => c.name === 'aegis_console').length, 0, 'the browser dropped the cookie');

    // --- expiry: the page returns to sign-in on its own ---------------------------------
    await page.getByLabel('Admin API key').fill(s.adminKey);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('[data-testid="who"]').waitFor();
    s.clock.offsetMs += 901_000;
    await page.locator('.notice', { hasText: 'Your session ended' }).waitFor({ timeout: 15_000 });
    t.pass('an expired session is refused and the page asks to sign in again');
    s.clock.offsetMs = 0;

    // --- a key limited to one customer ---------------------------------------------------
    const limited = await s.app.apiKeys.create('globex-ops', [...SCOPES].filter((x) => x !== 'metrics:read'), seed.b.customerId);
    await page.getByLabel('Admin API key').fill(limited.key);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('[data-testid="who"]', { hasText: 'limited to customer' }).waitFor();
    await go('machines', 'Machines');
    await page.locator('td', { hasText: 'db-b1' }).waitFor();
    t.equal(await page.locator('td', { hasText: 'web-a' }).count(), 0, "another customer's machines are not shown");
    await go('customers', 'Customers');
    await page.locator('td', { hasText: 'Globex' }).waitFor();
    t.equal(await page.locator('td', { hasText: 'Acme Corp' }).count(), 0, 'only its own customer');
    await go('segmentation', 'Segmentation');
    await page.locator(`section[data-service="${seed.serviceB}"]`).waitFor();
    t.equal(await page.locator(`section[data-service="${seed.serviceA}"]`).count(), 0, "another customer's service is not shown");
    await go('agents', 'Agents');
    await page.locator('td', { hasText: 'db-b1' }).waitFor();
    t.equal(await page.locator('td', { hasText: 'web-a1' }).count(), 0, "another customer's agents are not shown");
    await shot('limited-agents');
    await go('flows', 'Flows');
    await page.locator('tbody tr').first().waitFor();
    t.equal(await page.locator('td', { hasText: 'web-a' }).count(), 0, "another customer's flows are not shown");

    t.same(consoleErrors.filter((e) => !/status of 40[13]/.test(e)), [], 'no script errors on any page');
  });
}

/** Activates a host on `licenseKey` through the API, as an agent would; its machine id. */
async function activateViaApi(s: Awaited<ReturnType<typeof startTestServer>>, licenseKey: string, name: string): Promise<string> {
  const { TestHost } = await import('../harness/server.js');
  const host = new TestHost(name);
  const r = await s.req('POST', '/api/v1/activations', host.activation(licenseKey), { key: null });
  if (r.status !== 201 && r.status !== 200) throw new Error(`activation: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.machine_id as string;
}

export type { Page };
