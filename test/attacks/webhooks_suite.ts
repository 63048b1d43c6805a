/**
 * Signed webhooks against a real aegis-server and a real local HTTP receiver: what a
 * receiver gets verifies, and what an attacker can make of it (a changed body, another
 * key, a replay later) does not; deliveries retry, survive a restart, never follow a
 * redirect, never reach the metadata service, and never carry another customer's events.
 */
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'tap';
import { publicJwkOf, signWebhook, verifyWebhook } from '../../protocol/src/index.js';
import { verifyWebhook as clientVerifyWebhook } from '../../clients/typescript/src/index.js';
import { SCOPES } from '../../server/src/api_keys.js';
import { addressRefusal } from '../../server/src/webhooks/outbound.js';
import { activateTestHost, startTestServer, type TestServer } from '../harness/server.js';
import { startWebhookReceiver, type ReceivedHook } from '../harness/webhook_receiver.js';

const ALL_EVENTS = ['license.created', 'license.revoked', 'license.expired', 'machine.activated', 'machine.deactivated', 'machine.clock_tampered'];

/** Loopback receivers over http are allowed here only; the defaults refuse both. */
const TEST_ENV = {
  AEGIS_WEBHOOK_ALLOW_HTTP: '1',
  AEGIS_WEBHOOK_ALLOW_LOOPBACK: '1',
  AEGIS_WEBHOOK_BACKOFF_BASE_MS: '50',
  AEGIS_WEBHOOK_BACKOFF_CAP_MS: '200',
  AEGIS_WEBHOOK_POLL_MS: '50',
  AEGIS_WEBHOOK_TIMEOUT_MS: '2000',
};

async function until<T>(what: string, fn: () => Promise<T | undefined | null | false>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function eventOf(h: ReceivedHook): { id: string; type: string; data: Record<string, unknown> } {
  return JSON.parse(h.body) as { id: string; type: string; data: Record<string, unknown> };
}

export function webhooksSuite(t: Test, newDatabase: () => Promise<string | undefined>): void {
  let dir: string;
  t.before(() => {
    dir = mkdtempSync(join(tmpdir(), 'aegis-hooks-'));
  });
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const start = async (extra: { databaseUrl?: string; keysDir?: string; env?: Record<string, string> } = {}): Promise<TestServer> => {
    const databaseUrl = extra.databaseUrl ?? (await newDatabase()) ?? `sqlite:${join(dir, `${Math.random().toString(36).slice(2)}.db`)}`;
    return startTestServer({ databaseUrl, ...(extra.keysDir ? { keysDir: extra.keysDir } : {}), env: { ...TEST_ENV, ...extra.env } });
  };
  const register = async (s: TestServer, url: string, events = ALL_EVENTS, key?: string) => {
    const r = await s.req('POST', '/api/v1/webhook-endpoints', { url, events }, key === undefined ? {} : { key });
    if (r.status !== 201) throw new Error(`register ${url}: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body as { id: string; customer_id: string | null };
  };

  t.test('events arrive signed by a JWKS key and verify; a changed body, another key and a replay are refused', async (t) => {
    const s = await start();
    const rx = await startWebhookReceiver();
    t.teardown(async () => {
      await s.close();
      await rx.close();
    });
    await register(s, rx.url + '/hooks');
    const host = await activateTestHost(s, 'hook-host'); // customer, license.created, machine.activated
    const lic = (await s.req('GET', `/api/v1/licenses?customer_id=${host.customerId}`)).body.items[0];
    await s.req('DELETE', `/api/v1/machines/${host.machineId}`);
    await s.req('DELETE', `/api/v1/licenses/${lic.id}/revoke`, { reason: 'test' });
    const got = await rx.waitFor(4);
    const jwks = (await s.req('GET', '/.well-known/jwks.json', undefined, { key: null })).body;
    const types = got.map((h) => eventOf(h).type).sort();
    t.same(types, ['license.created', 'license.revoked', 'machine.activated', 'machine.deactivated'], 'one delivery per event');
    for (const h of got) {
      const v = verifyWebhook(h.body, h.headers['aegis-signature'] as string, jwks, { kid: h.headers['aegis-key-id'] as string });
      t.ok(v.ok, `${eventOf(h).type} verifies: ${JSON.stringify(v)}`);
      t.equal(h.headers['aegis-event-id'], eventOf(h).id, 'Aegis-Event-Id is the event id');
      t.equal(h.headers['aegis-key-id'], s.app.ctx.keys.activeKid(), 'signed by the active key of the JWKS');
      t.match(h.headers['aegis-signature'], /^t=\d+,v1=[A-Za-z0-9_-]{86}$/);
    }
    const activated = got.find((h) => eventOf(h).type === 'machine.activated')!;
    t.equal(eventOf(activated).data.machine_id, host.machineId, 'the event names the machine');
    t.equal(eventOf(activated).data.customer_id, host.customerId, '…and its customer');
    const sig = activated.headers['aegis-signature'] as string;
    // The same check from the package receivers install.
    t.ok(clientVerifyWebhook(activated.body, sig, jwks).ok, '@aegis/license-client verifies it (any key of the set)');

    const tampered = activated.body.replace(host.machineId, '00000000-0000-4000-8000-000000000000');
    t.not(tampered, activated.body);
    t.match(verifyWebhook(tampered, sig, jwks, { kid: activated.headers['aegis-key-id'] as string }), { ok: false, code: 'WEBHOOK_SIGNATURE_INVALID' }, 'a changed body is refused');
    t.match(verifyWebhook(tampered, sig, jwks), { ok: false, code: 'WEBHOOK_UNKNOWN_KEY' }, '…also without a kid (no key verifies it)');
    const t0 = Number(/t=(\d+)/.exec(sig)![1]);
    const shifted = sig.replace(`t=${t0}`, `t=${t0 + 1}`);
    t.match(verifyWebhook(activated.body, shifted, jwks, { kid: activated.headers['aegis-key-id'] as string }), { ok: false, code: 'WEBHOOK_SIGNATURE_INVALID' }, 'a moved timestamp breaks the signature');

    const attacker = generateKeyPairSync('ed25519').privateKey;
    const forged = signWebhook(attacker, t0, activated.body);
    t.match(verifyWebhook(activated.body, forged, jwks, { kid: activated.headers['aegis-key-id'] as string }), { ok: false, code: 'WEBHOOK_SIGNATURE_INVALID' }, 'a signature by another key under the server kid is refused');
    const otherJwks = { keys: [{ ...publicJwkOf(attacker), kid: 'attacker', alg: 'EdDSA', use: 'sig' }] };
    t.match(verifyWebhook(activated.body, sig, otherJwks, { kid: activated.headers['aegis-key-id'] as string }), { ok: false, code: 'WEBHOOK_UNKNOWN_KEY' }, 'a kid the receiver\'s key set lacks is refused');
    t.match(verifyWebhook(activated.body, sig, otherJwks), { ok: false, code: 'WEBHOOK_UNKNOWN_KEY' }, 'a key set that does not hold the signer refuses');

    const later = new Date((t0 + 301) * 1000);
    t.match(verifyWebhook(activated.body, sig, jwks, { now: later }), { ok: false, code: 'WEBHOOK_TIMESTAMP_OUT_OF_TOLERANCE' }, 'the same delivery replayed 301 s later is refused');
    t.match(verifyWebhook(activated.body, sig, jwks, { now: new Date((t0 - 301) * 1000) }), { ok: false, code: 'WEBHOOK_TIMESTAMP_OUT_OF_TOLERANCE' }, 'one from the future too');
    t.ok(verifyWebhook(activated.body, sig, jwks, { now: new Date((t0 + 299) * 1000) }).ok, 'within the tolerance it verifies');
    t.match(verifyWebhook(activated.body, sig, jwks, { now: new Date((t0 + 31) * 1000), toleranceSeconds: 30 }), { ok: false, code: 'WEBHOOK_TIMESTAMP_OUT_OF_TOLERANCE' }, 'the tolerance is the caller\'s');
    t.match(verifyWebhook(activated.body, undefined, jwks), { ok: false, code: 'WEBHOOK_MALFORMED' }, 'no header');
    t.match(verifyWebhook(activated.body, 't=abc,v1=xyz', jwks), { ok: false, code: 'WEBHOOK_MALFORMED' }, 'a malformed header');
  });

  t.test('a receiver failing 500 twice then 200: three attempts logged, delivered', async (t) => {
    const s = await start();
    const rx = await startWebhookReceiver();
    t.teardown(async () => {
      await s.close();
      await rx.close();
    });
    rx.script.push(500, 500);
    const ep = await register(s, rx.url, ['license.created']);
    const customer = (await s.req('POST', '/api/v1/customers', { name: 'Retry Co' })).body;
    await s.req('POST', '/api/v1/licenses', { customer_id: customer.id, tier: 'server', license_type: 'perpetual' });
    const got = await rx.waitFor(3);
    const d = await until('the delivery to be delivered', async () => {
      const r = await s.req('GET', `/api/v1/webhook-endpoints/${ep.id}/deliveries`);
      return r.body.items[0]?.status === 'delivered' ? r.body.items[0] : null;
    });
    t.equal(got.length, 3, 'the receiver saw three requests');
    t.equal(new Set(got.map((h) => h.headers['aegis-event-id'])).size, 1, 'all three are the same event (the receiver\'s dedup key)');
    t.equal(new Set(got.map((h) => h.body)).size, 1, 'with the same body');
    t.equal(d.attempts, 3, 'three attempts');
    t.same(d.attempt_log.map((a: { status_code: number }) => a.status_code), [500, 500, 200], 'each attempt logged with its answer');
    t.equal(d.last_status_code, 200);
    t.equal(d.last_error, null);
    t.equal(d.next_attempt_at, null, 'nothing more to do');
    t.ok(d.delivered_at);
    // Manual redelivery: one more attempt, signed afresh.
    const again = await s.req('POST', `/api/v1/webhook-endpoints/${ep.id}/deliveries/${d.id}/retry`);
    t.equal(again.status, 202);
    await rx.waitFor(4);
    t.equal(eventOf(rx.received[3]!).id, eventOf(got[0]!).id, 'a manual retry sends the same event');
    const unknown = await s.req('POST', `/api/v1/webhook-endpoints/${ep.id}/deliveries/00000000-0000-4000-8000-000000000000/retry`);
    t.equal(unknown.status, 404);
  });

  t.test('a delivery gives up after the configured attempts, and says why', async (t) => {
    const s = await start({ env: { AEGIS_WEBHOOK_MAX_ATTEMPTS: '3' } });
    const rx = await startWebhookReceiver();
    t.teardown(async () => {
      await s.close();
      await rx.close();
    });
    rx.script.push(503, 503, 503, 503);
    const ep = await register(s, rx.url, ['license.created']);
    const customer = (await s.req('POST', '/api/v1/customers', { name: 'Fail Co' })).body;
    await s.req('POST', '/api/v1/licenses', { customer_id: customer.id, tier: 'server', license_type: 'perpetual' });
    const d = await until('the delivery to fail', async () => {
      const r = await s.req('GET', `/api/v1/webhook-endpoints/${ep.id}/deliveries`);
      return r.body.items[0]?.status === 'failed' ? r.body.items[0] : null;
    });
    t.equal(d.attempts, 3);
    t.equal(d.last_status_code, 503);
    t.match(d.last_error, /503/);
    t.equal(d.next_attempt_at, null);
    await new Promise((r) => setTimeout(r, 400));
    t.equal(rx.received.length, 3, 'no fourth attempt');
  });

  t.test('a receiver down across a server restart gets the event after the restart', async (t) => {
    const keysDir = join(dir, `keys-${Math.random().toString(36).slice(2)}`);
    const databaseUrl = (await newDatabase()) ?? `sqlite:${join(dir, `restart-${Math.random().toString(36).slice(2)}.db`)}`;
    // A slower schedule here, so the first server cannot use up the attempts before it stops.
    const env = { AEGIS_WEBHOOK_BACKOFF_BASE_MS: '1500', AEGIS_WEBHOOK_BACKOFF_CAP_MS: '1500' };
    const probe = await startWebhookReceiver();
    const port = probe.port;
    await probe.close(); // nothing listens there now: the receiver is down
    const s1 = await start({ databaseUrl, keysDir, env });
    const ep = await register(s1, `http://127.0.0.1:${port}/down`, ['license.created']);
    const customer = (await s1.req('POST', '/api/v1/customers', { name: 'Restart Co' })).body;
    await s1.req('POST', '/api/v1/licenses', { customer_id: customer.id, tier: 'server', license_type: 'perpetual' });
    const failed = await until('a failed attempt', async () => {
      const r = await s1.req('GET', `/api/v1/webhook-endpoints/${ep.id}/deliveries`);
      return r.body.items[0]?.attempts >= 1 ? r.body.items[0] : null;
    });
    t.equal(failed.status, 'pending', 'still pending after a refused connection');
    t.equal(failed.last_status_code, null);
    t.match(failed.last_error, /ECONNREFUSED|connect/);
    await s1.close();
    const rx = await startWebhookReceiver(port);
    const s2 = await start({ databaseUrl, keysDir, env });
    t.teardown(async () => {
      await s2.close();
      await rx.close();
    });
    const got = await rx.waitFor(1, 20_000);
    t.equal(eventOf(got[0]!).type, 'license.created', 'the event queued before the restart arrives after it');
    const jwks = (await s2.req('GET', '/.well-known/jwks.json', undefined, { key: null })).body;
    t.ok(verifyWebhook(got[0]!.body, got[0]!.headers['aegis-signature'] as string, jwks).ok, 'signed and verifying');
    const d = await until('delivered', async () => {
      const r = await s2.req('GET', `/api/v1/webhook-endpoints/${ep.id}/deliveries`);
      return r.body.items[0]?.status === 'delivered' ? r.body.items[0] : null;
    });
    t.ok(d.attempts >= 2, `${d.attempts} attempts across the restart`);
  });

  t.test('a redirect is not followed', async (t) => {
    const s = await start({ env: { AEGIS_WEBHOOK_MAX_ATTEMPTS: '2' } });
    const target = await startWebhookReceiver();
    const rx = await startWebhookReceiver();
    t.teardown(async () => {
      await s.close();
      await rx.close();
      await target.close();
    });
    rx.script.push({ status: 307, headers: { location: `${target.url}/stolen` } }, { status: 302, headers: { location: `${target.url}/stolen` } });
    const ep = await register(s, rx.url, ['license.created']);
    const customer = (await s.req('POST', '/api/v1/customers', { name: 'Redirect Co' })).body;
    await s.req('POST', '/api/v1/licenses', { customer_id: customer.id, tier: 'server', license_type: 'perpetual' });
    const d = await until('the delivery to fail', async () => {
      const r = await s.req('GET', `/api/v1/webhook-endpoints/${ep.id}/deliveries`);
      return r.body.items[0]?.status === 'failed' ? r.body.items[0] : null;
    });
    t.equal(rx.received.length, 2, 'the receiver was asked twice');
    t.equal(target.received.length, 0, 'the redirect target never got a request');
    t.same(d.attempt_log.map((a: { status_code: number }) => a.status_code), [307, 302]);
    t.match(d.last_error, /redirect \(302\) not followed/);
  });

  t.test('the metadata service, link-local and (by default) loopback addresses are refused', async (t) => {
    const s = await start();
    const strict = await start({ env: { AEGIS_WEBHOOK_ALLOW_HTTP: '', AEGIS_WEBHOOK_ALLOW_LOOPBACK: '' } });
    t.teardown(async () => {
      await s.close();
      await strict.close();
    });
    for (const url of ['http://169.254.169.254/latest/meta-data/', 'http://[::ffff:169.254.169.254]/', 'http://[fe80::1]/', 'http://[fd00:ec2::254]/', 'http://224.0.0.1/']) {
      const r = await s.req('POST', '/api/v1/webhook-endpoints', { url, events: ['license.created'] });
      t.equal(r.status, 400, `${url} refused`);
      t.equal(r.body.error.code, 'WEBHOOK_URL_REFUSED');
    }
    const plain = await strict.req('POST', '/api/v1/webhook-endpoints', { url: 'http://hooks.example.com/', events: ['license.created'] });
    t.equal(plain.body.error?.code, 'WEBHOOK_URL_REFUSED', 'http:// refused by default');
    for (const url of ['https://127.0.0.1/', 'https://localhost:8443/', 'https://[::1]/', 'https://0.0.0.0/']) {
      const r = await strict.req('POST', '/api/v1/webhook-endpoints', { url, events: ['license.created'] });
      t.equal(r.body.error?.code, 'WEBHOOK_URL_REFUSED', `${url} refused by default`);
    }
    const creds = await s.req('POST', '/api/v1/webhook-endpoints', { url: 'http://user:pw@127.0.0.1/', events: ['license.created'] });
    t.equal(creds.body.error?.code, 'WEBHOOK_URL_REFUSED', 'credentials in the URL refused');
    const badEvent = await s.req('POST', '/api/v1/webhook-endpoints', { url: 'https://hooks.example.com/', events: ['license.nope'] });
    t.equal(badEvent.body.error?.code, 'VALIDATION_FAILED', 'an unknown event type is refused');
    // Names are checked where they are resolved, for every address they resolve to.
    t.match(addressRefusal('169.254.169.254', { allowLoopback: true, allowLinkLocal: false }), /link-local/);
    t.equal(addressRefusal('169.254.169.254', { allowLoopback: true, allowLinkLocal: true }), null, 'allowed only by AEGIS_WEBHOOK_ALLOW_LINK_LOCAL');
    t.equal(addressRefusal('10.1.2.3', { allowLoopback: false, allowLinkLocal: false }), null, 'private networks are reachable (on-premises receivers)');
    t.equal((await s.req('GET', '/api/v1/webhook-endpoints')).body.items.length, 0, 'nothing was registered');
  });

  t.test('a customer-restricted endpoint never receives another customer\'s events', async (t) => {
    const s = await start();
    const rxA = await startWebhookReceiver();
    const rxAll = await startWebhookReceiver();
    t.teardown(async () => {
      await s.close();
      await rxA.close();
      await rxAll.close();
    });
    const A = (await s.req('POST', '/api/v1/customers', { name: 'Tenant A' })).body;
    const B = (await s.req('POST', '/api/v1/customers', { name: 'Tenant B' })).body;
    const keyA = (await s.app.apiKeys.create('tenant-a', [...SCOPES], A.id)).key;
    const epA = await register(s, rxA.url, ALL_EVENTS, keyA);
    t.equal(epA.customer_id, A.id, 'the endpoint carries the key\'s customer');
    const epAll = await register(s, rxAll.url, ALL_EVENTS);
    // B's life: license, activation, deactivation, revocation; then one event of A's.
    const hostB = await activateTestHost(s, 'tenant-b-host', { customerId: B.id });
    const licB = (await s.req('GET', `/api/v1/licenses?customer_id=${B.id}`)).body.items[0];
    await s.req('DELETE', `/api/v1/machines/${hostB.machineId}`);
    await s.req('DELETE', `/api/v1/licenses/${licB.id}/revoke`, { reason: 'test' });
    const licA = await s.req('POST', '/api/v1/licenses', { customer_id: A.id, tier: 'server', license_type: 'perpetual' }, { key: keyA });
    t.equal(licA.status, 201);
    await rxAll.waitFor(5);
    await rxA.waitFor(1);
    await new Promise((r) => setTimeout(r, 500));
    t.equal(rxA.received.length, 1, 'A\'s endpoint got one delivery');
    t.same(eventOf(rxA.received[0]!).data.customer_id, A.id, 'and it is A\'s');
    t.ok(rxA.received.every((h) => !h.body.includes(B.id) && !h.body.includes(hostB.machineId)), 'nothing of B reached A');
    t.equal(rxAll.received.length, 5, 'the unrestricted endpoint got every customer\'s events');
    const listA = await s.req('GET', '/api/v1/webhook-endpoints', undefined, { key: keyA });
    t.same(listA.body.items.map((e: { id: string }) => e.id), [epA.id], 'A lists only its own endpoint');
    t.equal((await s.req('GET', `/api/v1/webhook-endpoints/${epAll.id}/deliveries`, undefined, { key: keyA })).status, 404, 'another\'s delivery log is the unknown-id 404');
    t.equal((await s.req('DELETE', `/api/v1/webhook-endpoints/${epAll.id}`, undefined, { key: keyA })).status, 404, 'another\'s endpoint cannot be deleted');
    const readOnly = (await s.app.apiKeys.create('reader', ['webhooks:read'])).key;
    t.equal((await s.req('POST', '/api/v1/webhook-endpoints', { url: rxA.url, events: ['license.created'] }, { key: readOnly })).status, 403, 'webhooks:write is needed to register');
    const del = await s.req('DELETE', `/api/v1/webhook-endpoints/${epA.id}`, undefined, { key: keyA });
    t.equal(del.status, 200);
    await s.req('POST', '/api/v1/licenses', { customer_id: A.id, tier: 'server', license_type: 'perpetual' }, { key: keyA });
    await rxAll.waitFor(6);
    await new Promise((r) => setTimeout(r, 300));
    t.equal(rxA.received.length, 1, 'a deleted endpoint receives nothing more');
  });

  t.test('license expiry is announced once', async (t) => {
    const s = await start();
    const rx = await startWebhookReceiver();
    t.teardown(async () => {
      await s.close();
      await rx.close();
    });
    await register(s, rx.url, ['license.expired']);
    const customer = (await s.req('POST', '/api/v1/customers', { name: 'Expiry Co' })).body;
    const lic = (await s.req('POST', '/api/v1/licenses', { customer_id: customer.id, tier: 'server', license_type: 'subscription', duration_days: 1 })).body;
    await new Promise((r) => setTimeout(r, 200)); // the watermark is set by a first sweep
    s.clock.advanceDays(2);
    const got = await rx.waitFor(1);
    const e = eventOf(got[0]!);
    t.equal(e.type, 'license.expired');
    t.equal(e.data.license_id, lic.id);
    await new Promise((r) => setTimeout(r, 400));
    t.equal(rx.received.length, 1, 'announced once');
  });
}
