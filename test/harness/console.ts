/**
 * The operator console's browser tests: Debian's chromium driven by playwright-core (no
 * browser download), a fresh profile per launch, and a server seeded with two customers,
 * their licenses, activated machines, agent reports, a canary revision and flows.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext } from 'playwright-core';
import { activateTestHost, type ActivatedHost, type TestServer } from './server.js';

export const CHROMIUM = '/usr/bin/chromium';

export const chromiumMissing = (): string | null => (existsSync(CHROMIUM) ? null : `${CHROMIUM} (apt-get install chromium)`);

/** A headless chromium with its own throw-away profile; close() removes the profile. */
export async function launchBrowser(): Promise<{ context: BrowserContext; close(): Promise<void> }> {
  const profile = mkdtempSync(join(tmpdir(), 'aegis-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1280, height: 860 },
  });
  return {
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

export interface ConsoleSeed {
  a: ActivatedHost;
  a2: ActivatedHost;
  b: ActivatedHost;
  serviceA: number;
  serviceB: number;
}

/** Two customers (A with two hosts, B with one), agent status and acks, a canary each, and flows. */
export async function seedConsole(s: TestServer): Promise<ConsoleSeed> {
  const a = await activateTestHost(s, 'web-a1');
  const a2 = await activateTestHost(s, 'web-a2', { licenseKey: a.licenseKey, customerId: a.customerId });
  const b = await activateTestHost(s, 'db-b1');
  await s.req('PATCH', `/api/v1/customers/${a.customerId}`, { name: 'Acme Corp' });
  await s.req('PATCH', `/api/v1/customers/${b.customerId}`, { name: 'Globex' });
  const serviceA = 810;
  const serviceB = 820;
  const snap = (service_id: number, port: number) => ({ version: 1, service_id, edges: [{ dst_cidr: '10.9.0.0/24', proto: 'tcp', port }], ttl_seconds: 900 });
  for (const [svc, hosts, port] of [[serviceA, [a, a2], 443], [serviceB, [b], 5432]] as const) {
    const r = await s.req('POST', `/api/v1/seg/maps?stage=enforce&target_machine=${hosts.map((h) => h.machineId).join(',')}`, snap(svc, port));
    if (r.status !== 200) throw new Error(`map ${svc}: ${r.status} ${JSON.stringify(r.body)}`);
    const c = await s.req('POST', `/api/v1/seg/maps?stage=canary&target_machine=${hosts.map((h) => h.machineId).join(',')}`, snap(svc, port + 1));
    if (c.status !== 200) throw new Error(`canary ${svc}: ${c.status} ${JSON.stringify(c.body)}`);
  }
  const reg = s.app.agents;
  const now = () => s.clock.now().toISOString();
  const report = async (h: ActivatedHost, svc: number, revision: number, stage: 'canary' | 'enforce') => {
    const status = {
      agent_version: '1.2.0',
      edition: 'licensed',
      tier: 'server',
      datapath: { available: true, reason: null },
      services: [{ service_id: svc, revision, stage, mode: stage === 'canary' ? 'observe' : 'enforce', ttl_left_s: 800, counters: { allowed: 120, dropped: 4, would_drop: 9 } }],
      clock: { clock_tampered: false, behind_seconds: 0 },
      sent_at: now(),
    };
    const refusals = [
      await reg.record('status', h.machineId, status),
      await reg.record('ack', h.machineId, { service_id: svc, revision, stage, mode: stage === 'canary' ? 'observe' : 'enforce', ok: true, error: null, applied_at: now() }),
    ];
    const t = s.clock.now().getTime();
    refusals.push(
      await reg.record('flows', h.machineId, {
        service_id: svc,
        revision,
        interval: { start: new Date(t - 30_000).toISOString(), end: new Date(t).toISOString() },
        flows: [
          { dst: '10.9.0.7', proto: 'tcp', port: 443, count: 7, verdict: 'allowed', direction: 'egress', rule: 0, reason: 'policy' },
          { dst: '10.9.0.8', proto: 'tcp', port: 5432, count: 3, verdict: 'dropped', direction: 'egress', rule: null, reason: 'policy' },
          { dst: '192.0.2.5', proto: 'tcp', port: 22, count: 2, verdict: 'would-drop', direction: 'ingress', rule: null, reason: 'policy' },
        ],
        sent_at: now(),
      }),
    );
    const bad = refusals.filter((r) => r !== null);
    if (bad.length > 0) throw new Error(`reports of ${h.host.name}: ${bad.join(', ')}`);
  };
  await report(a, serviceA, 2, 'canary');
  await report(a2, serviceA, 1, 'enforce');
  await report(b, serviceB, 2, 'canary');
  return { a, a2, b, serviceA, serviceB };
}
