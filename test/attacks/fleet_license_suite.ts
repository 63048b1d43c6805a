/**
 * Attack: license a host with another fleet's tier. A raw NATS client (no aegis-agent, no
 * authorization on the test nats-server, so it can publish anywhere an agent could)
 * asks on aegis.agent.<machine id of fleet A's host>.license for fleet B's license, for
 * an unknown fleet, or under a token that is no active machine; and tries to open fleet
 * A's envelope with fleet B's key or the server's master key. Each fleet must have its own
 * key, requests must be answered only for the requester's own fleet, refusals must write
 * nothing, and `aegis-server fleet-key rotate` must retire the old key. Run once per
 * storage backend (fleet_license_sqlite.test.ts, fleet_license_postgres.test.ts).
 */
import type { Test } from 'tap';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect as natsConnect, type NatsConnection } from 'nats';
import { licenseRequestRefusalOf, openEnvelope, parseFleetKey, type FleetLicenseClaims } from '../../protocol/src/index.js';
import { startTestServer, TestHost, type TestServer } from '../harness/server.js';
import { startNats, type TestNats } from '../harness/nats.js';
import { eventually } from '../harness/middlebox.js';

export type DatabaseFactory = () => Promise<string | undefined>;

const CLI = fileURLToPath(new URL('../../server/src/cli.js', import.meta.url));
const enc = new TextEncoder();
const dec = new TextDecoder();

const claimsOf = (jws: string): FleetLicenseClaims => JSON.parse(Buffer.from(jws.split('.')[1]!, 'base64url').toString('utf8')) as FleetLicenseClaims;
const opens = (key: Buffer, fleet: string, env: string): boolean => {
  try {
    openEnvelope(key, fleet, env);
    return true;
  } catch {
    return false;
  }
};

export function fleetLicenseSuite(t: Test, newDatabase: DatabaseFactory): void {
  t.test('a host gets only its own fleet license, sealed with its own fleet key', async (t) => {
    const tmp = mkdtempSync(join(tmpdir(), 'aegis-fleet-attack-'));
    t.teardown(() => rmSync(tmp, { recursive: true, force: true }));
    const databaseUrl = (await newDatabase()) ?? `sqlite:${join(tmp, 'aegis.db')}`;
    const master = randomBytes(32).toString('base64');
    const nats: TestNats = await startNats();
    t.teardown(() => nats.stop());
    const s: TestServer = await startTestServer({ databaseUrl, natsUrl: nats.url, fleetKey: master });
    t.teardown(() => s.close());
    await eventually('server on NATS', async () => s.app.distribution?.bus()?.isConnected() === true, 10_000);
    const db = s.app.ctx.db;

    const cli = (...args: string[]) =>
      spawnSync(process.execPath, [CLI, ...args], {
        encoding: 'utf8',
        env: { ...process.env, DATABASE_URL: databaseUrl, AEGIS_FLEET_KEY: master, AEGIS_KEYS_DIR: s.keysDir, LOG_LEVEL: 'error' },
      });
    const showKey = (fleet: string): Buffer => {
      const r = cli('fleet-key', 'show', fleet);
      if (r.status !== 0) throw new Error(`fleet-key show ${fleet}: ${r.stderr}`);
      return parseFleetKey(r.stdout);
    };
    const seqRow = async (fleet: string) => db.selectFrom('fleet_sequence').selectAll().where('fleet', '=', fleet).executeTakeFirst();

    const tag = randomBytes(3).toString('hex');
    const fleetA = `alpha-${tag}`;
    const fleetB = `beta-${tag}`;
    const issue = async (name: string, tier: string, fleet: string) => {
      const c = await s.req('POST', '/api/v1/customers', { name });
      const r = await s.req('POST', '/api/v1/licenses', { customer_id: c.body.id, tier, license_type: 'perpetual', fleet, max_machines: 2 });
      if (r.status !== 201) throw new Error(`license issue: ${r.status} ${JSON.stringify(r.body)}`);
      return r.body as { id: string; license_key: string };
    };
    const licA = await issue(`Fleet A ${tag}`, 'basic', fleetA);
    await issue(`Fleet B ${tag}`, 'server', fleetB);
    const hostA = new TestHost(`fleet-a-host-${tag}`);
    const act = await s.req('POST', '/api/v1/activations', hostA.activation(licA.license_key), { key: null });
    t.equal(act.status, 201, act.status === 201 ? "fleet A's host activated" : JSON.stringify(act.body));
    const machineA = act.body.machine_id as string;

    const nc: NatsConnection = await natsConnect({ servers: nats.url });
    t.teardown(() => nc.close());
    const ask = async (token: string, fleet: string): Promise<string> =>
      dec.decode((await nc.request(`aegis.agent.${token}.license`, enc.encode(JSON.stringify({ fleet })), { timeout: 5000 })).data);

    const keyA = showKey(fleetA);
    const keyB = showKey(fleetB);
    t.not(keyA.toString('base64'), keyB.toString('base64'), 'each fleet has its own key');
    t.not(keyA.toString('base64'), parseFleetKey(master).toString('base64'), 'a fleet key is not the master key');

    await t.test("fleet A's host asking for fleet B's license is refused, with no envelope and nothing written", async (t) => {
      const before = await seqRow(fleetB);
      const reply = await ask(machineA, fleetB);
      t.match(licenseRequestRefusalOf(reply), { code: 'FLEET_MISMATCH', message: new RegExp(fleetA) }, 'refused: FLEET_MISMATCH');
      t.notMatch(reply, /"ct"/, 'no envelope in the reply');
      t.same(await seqRow(fleetB), before, "fleet B's sequence did not move");
    });

    let envA = '';
    await t.test("fleet A's host gets fleet A's envelope, which opens only with fleet A's key", async (t) => {
      envA = await ask(machineA, fleetA);
      t.equal(licenseRequestRefusalOf(envA), null, 'an envelope, not a refusal');
      const opened = openEnvelope(keyA, fleetA, envA);
      t.equal(opened.gen, 1);
      t.match(claimsOf(opened.plaintext), { fleet: fleetA, status: 'active', tier: 'basic' }, "fleet A's tier, not fleet B's");
      t.notOk(opens(keyB, fleetA, envA), "fleet B's key does not open it");
      t.notOk(opens(parseFleetKey(master), fleetA, envA), 'the master key does not open it');
    });

    await t.test('the published envelope too opens only with its fleet key', async (t) => {
      const got: string[] = [];
      const sub = nc.subscribe(`aegis.license.${fleetB}`, { callback: (_e, m) => got.push(dec.decode(m.data)) });
      await nc.flush();
      await s.app.fleet!.publishFleet(fleetB);
      await eventually('fleet B published', async () => got.length > 0, 5000);
      sub.unsubscribe();
      t.ok(opens(keyB, fleetB, got[0]!), "fleet B's key opens it");
      t.notOk(opens(keyA, fleetB, got[0]!), "fleet A's key does not");
      t.notOk(opens(parseFleetKey(master), fleetB, got[0]!), 'the master key does not');
    });

    await t.test('unknown fleets and unknown requesters are refused without creating rows', async (t) => {
      const junk = `junk-${tag}`;
      t.match(licenseRequestRefusalOf(await ask(machineA, junk)), { code: 'FLEET_MISMATCH' });
      const stranger = `nobody-${tag}`;
      t.match(licenseRequestRefusalOf(await ask(stranger, junk)), { code: 'REQUESTER_UNKNOWN' }, 'a token that is no machine');
      t.match(licenseRequestRefusalOf(await ask(hostA.name, fleetA)), { code: 'REQUESTER_UNKNOWN' }, 'the hostname is not the requester token');
      await t.rejects(s.app.fleet!.envelope(junk), { code: 'FLEET_UNKNOWN' }, 'no envelope for a fleet no license names');
      await t.rejects(s.app.fleet!.publishFleet(junk), { code: 'FLEET_UNKNOWN' });
      t.equal(await seqRow(junk), undefined, 'no fleet_sequence row for the unknown fleet');
      const rot = cli('fleet-key', 'rotate', junk);
      t.equal(rot.status, 1, 'rotating an unknown fleet is refused');
      t.match(rot.stderr, /no license names fleet/);
      t.equal(await db.selectFrom('fleet_keys').selectAll().where('fleet', '=', junk).executeTakeFirst(), undefined, 'no fleet_keys row');
    });

    await t.test("another customer cannot issue a license naming fleet B (it would decide fleet B's envelope)", async (t) => {
      const c = await s.req('POST', '/api/v1/customers', { name: `Squatter ${tag}` });
      const r = await s.req('POST', '/api/v1/licenses', { customer_id: c.body.id, tier: 'basic', license_type: 'perpetual', fleet: fleetB });
      t.equal(r.status, 409);
      t.match(r.body, { error: { code: 'CONFLICT', message: /belongs to another customer/ } });
      const rows = await db.selectFrom('licenses').select('customer_id').where('fleet', '=', fleetB).execute();
      t.equal(rows.length, 1, "fleet B still has only its customer's license");
    });

    await t.test('a deactivated machine is no requester', async (t) => {
      const h = new TestHost(`fleet-a-gone-${tag}`);
      const a = await s.req('POST', '/api/v1/activations', h.activation(licA.license_key), { key: null });
      t.equal(a.status, 201, a.status === 201 ? 'second host activated' : JSON.stringify(a.body));
      t.equal((await s.req('DELETE', `/api/v1/machines/${a.body.machine_id}`)).status, 200);
      t.match(licenseRequestRefusalOf(await ask(a.body.machine_id as string, fleetA)), { code: 'REQUESTER_UNKNOWN' });
    });

    await t.test('after fleet-key rotate the old key no longer opens new envelopes', async (t) => {
      const rot = cli('fleet-key', 'rotate', fleetA, '--json');
      t.equal(rot.status, 0, rot.stderr);
      const rotated = JSON.parse(rot.stdout) as { fleet: string; generation: number; key: string };
      t.match(rotated, { fleet: fleetA, generation: 2 });
      const keyA2 = parseFleetKey(rotated.key);
      t.same(showKey(fleetA), keyA2, 'fleet-key show prints the new key');
      t.same(showKey(fleetB), keyB, "fleet B's key is unchanged");
      const env2 = await ask(machineA, fleetA);
      t.notOk(opens(keyA, fleetA, env2), 'the old key does not open the new envelope');
      const opened = openEnvelope(keyA2, fleetA, env2);
      t.equal(opened.gen, 2, 'the envelope names its key generation');
      t.ok(opened.seq > openEnvelope(keyA, fleetA, envA).seq, 'the sequence keeps rising across the rotation');
      t.notOk(opens(keyA2, fleetA, envA), 'the new key does not open the old envelope');
    });
  });
}
