/**
 * A hostname is a label, not an identity. Customer B runs a real host `db-1`; an attacker
 * holding a cheap demo license of customer A activates its own host under the same name
 * and tries everything a name used to buy: the snapshots aimed at `db-1` (over the HTTP
 * fallback and over NATS), B's own fallback, status, acks and flows in B's name, and NATS
 * credentials for B's subjects. Against a real aegis-server with nats-server in operator
 * mode (per-machine credentials), once per storage backend (machine_identity_sqlite.test.ts,
 * machine_identity_postgres.test.ts).
 */
import type { Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLocalJWKSet, jwtVerify } from 'jose';
import { connect as natsConnect, credsAuthenticator, Empty, StringCodec, type NatsConnection } from 'nats';
import { AGENT_API, AUD_AGENT_TOKEN_PROOF, AUD_SEG_MAP, AUD_SNAPSHOTS_PROOF, subjects } from '../../protocol/src/index.js';
import { NatsAuthority } from '../../server/src/nats/credentials.js';
import { missingCommand, requireCapability } from '../harness/capabilities.js';
import { eventually } from '../harness/middlebox.js';
import { startNats, type TestNats } from '../harness/nats.js';
import { startTestServer, TestHost, type TestServer } from '../harness/server.js';

export type DatabaseFactory = () => Promise<string | undefined>;

const sc = StringCodec();
const NAME = 'db-1';
const snap = (service_id: number, port = 5432) => ({ version: 1, service_id, edges: [{ dst_cidr: '10.1.0.0/16', proto: 'tcp', port }], ttl_seconds: 900 });

interface Machine {
  host: TestHost;
  id: string;
  creds: string;
  customerId: string;
}

export function machineIdentitySuite(t: Test, newDatabase: DatabaseFactory): void {
  t.test('another customer naming its host db-1 gets none of what db-1 gets', async (t) => {
    if (!requireCapability(t, missingCommand('nats-server'))) return;
    const url = await newDatabase();
    const keysDir = mkdtempSync(join(tmpdir(), 'aegis-identity-'));
    t.teardown(() => rmSync(keysDir, { recursive: true, force: true }));
    const authority = await NatsAuthority.open({ dir: join(keysDir, 'nats') });
    const nats: TestNats = await startNats({ operatorConfig: authority.renderServerConfig() });
    t.teardown(() => nats.stop());
    const s: TestServer = await startTestServer({
      keysDir,
      natsUrl: nats.url,
      natsOperatorConfig: nats.operatorConfigPath,
      republishSeconds: 1,
      ...(url === undefined ? {} : { databaseUrl: url }),
    });
    t.teardown(() => s.close());

    async function activate(customer: string, tier: string, licenseType: string): Promise<Machine> {
      const c = await s.req('POST', '/api/v1/customers', { name: customer });
      const l = await s.req('POST', '/api/v1/licenses', { customer_id: c.body.id, tier, license_type: licenseType, ...(licenseType === 'perpetual' ? {} : { duration_days: 14 }) });
      if (l.status !== 201) throw new Error(`license: ${JSON.stringify(l.body)}`);
      const host = new TestHost(NAME);
      const a = await s.req('POST', '/api/v1/activations', host.activation(l.body.license_key), { key: null });
      if (a.status !== 201) throw new Error(`activation: ${a.status} ${JSON.stringify(a.body)}`);
      if (!a.body.nats?.creds) throw new Error('no NATS credentials issued');
      return { host, id: a.body.machine_id, creds: a.body.nats.creds, customerId: c.body.id };
    }
    const victim = await activate('Victim B', 'server', 'perpetual');
    const attacker = await activate('Attacker A', 'basic', 'demo');
    t.not(attacker.id, victim.id, 'two machines of the same name');

    // The operator targets by name: refused as ambiguous, the candidates listed.
    const byName = await s.req('POST', `/seg/maps?target_host=${NAME}`, snap(700));
    t.equal(byName.status, 409, JSON.stringify(byName.body));
    t.same(byName.body.error.details.ambiguous[NAME].map((c: { machine_id: string }) => c.machine_id).sort(), [victim.id, attacker.id].sort(), 'both candidates named');
    const posted = await s.req('POST', `/seg/maps?target_machine=${victim.id}&stage=enforce`, snap(700));
    t.equal(posted.status, 200, JSON.stringify(posted.body));
    t.same(posted.body.target_machines, [victim.id]);

    // HTTP fallback: the attacker's own proof gets its own machine's messages only.
    const own = await s.req('GET', `/api/v1/machines/${attacker.id}/snapshots`, undefined, { key: null, headers: { 'x-aegis-proof': attacker.host.proof(AUD_SNAPSHOTS_PROOF) } });
    t.equal(own.status, 200);
    t.same(own.body.messages, [], "none of the victim's snapshots");
    const asVictim = await s.req('GET', `/api/v1/machines/${victim.id}/snapshots`, undefined, {
      key: null,
      headers: { 'x-aegis-proof': attacker.host.proof(AUD_SNAPSHOTS_PROOF, { hwid: victim.host.hardwareId }) },
    });
    t.equal(asVictim.status, 401, "the victim's machine id with the attacker's key is refused");
    // The victim's own fallback still works, however recently the attacker was seen.
    const victims = await s.req('GET', `/api/v1/machines/${victim.id}/snapshots`, undefined, { key: null, headers: { 'x-aegis-proof': victim.host.proof(AUD_SNAPSHOTS_PROOF) } });
    t.equal(victims.status, 200, JSON.stringify(victims.body));
    const jwks = createLocalJWKSet((await s.req('GET', '/.well-known/jwks.json', undefined, { key: null })).body);
    const claims = (await jwtVerify(victims.body.messages[0], jwks, { audience: AUD_SEG_MAP })).payload;
    t.equal(claims.target, victim.id, 'signed for the machine id, which no other host can claim');

    // Status over the agent API, in the victim's name: filed under the attacker's machine.
    const token = await s.req('POST', AGENT_API.token, { machine_id: attacker.id, proof: attacker.host.proof(AUD_AGENT_TOKEN_PROOF), scope: ['status:write'] }, { key: null });
    t.equal(token.status, 200, JSON.stringify(token.body));
    const forgedStatus = { host: NAME, machine_id: victim.id, edition: 'licensed', tier: 'server', services: [{ service_id: 700, revision: 99, stage: 'enforce' }] };
    const st = await s.req('POST', AGENT_API.status, forgedStatus, { key: null, headers: { authorization: `Bearer ${token.body.access_token}` } });
    t.equal(st.status, 202);
    t.equal((await s.req('GET', `/api/v1/agents/${victim.id}`)).status, 404, 'nothing filed under the victim');
    const filed = await s.req('GET', `/api/v1/agents/${attacker.id}`);
    t.equal(filed.body.status.machine_id, attacker.id, "the payload's machine_id is replaced by the caller's");

    // NATS: the attacker's credentials reach only its own machine's subjects.
    const nc: NatsConnection = await natsConnect({ servers: nats.url, authenticator: credsAuthenticator(new TextEncoder().encode(attacker.creds)), inboxPrefix: subjects.inboxPrefix(attacker.id) });
    t.teardown(() => nc.close().catch(() => undefined));
    const stolen: string[] = [];
    const refusedSubs: string[] = [];
    for (const subject of [subjects.segMapsOf(victim.id), `aegis.seg.maps.${NAME}.>`]) {
      nc.subscribe(subject, {
        callback: (e, m) => {
          if (e) refusedSubs.push(`${subject}: ${e.message}`);
          else stolen.push(sc.decode(m.data));
        },
      });
    }
    nc.publish(subjects.agentStatus(victim.id), sc.encode(JSON.stringify(forgedStatus)));
    nc.publish(subjects.agentAck(victim.id), sc.encode(JSON.stringify({ service_id: 700, revision: 1, stage: 'enforce', ok: true })));
    const directGet = await nc.request(subjects.segMapDirectGet(subjects.segMap(victim.id, 700)), Empty, { timeout: 1500 }).then(
      () => 'answered',
      (e: Error) => e.message,
    );
    t.not(directGet, 'answered', `no Direct Get of the victim's last snapshot (${directGet})`);
    await eventually('nats-server refused both subscriptions', () => refusedSubs.length >= 2, 10_000);
    t.ok(refusedSubs.every((r) => /Permissions Violation/.test(r)), `subscriptions refused: ${refusedSubs.join(' | ')}`);

    await nc.flush();
    await new Promise((r) => setTimeout(r, 1500)); // a republish round
    t.same(stolen, [], "no snapshot for the victim reached the attacker's connection");
    t.equal((await s.req('GET', `/api/v1/agents/${victim.id}`)).status, 404, "the status and ack published in the victim's name never reached the server");

    // Reports on its own subjects about the victim's service: not targeted at it, not kept.
    nc.publish(subjects.agentFlows(attacker.id), sc.encode(JSON.stringify({ host: NAME, service_id: 700, flows: [{ dst: '203.0.113.9', proto: 'tcp', port: 22, count: 1000 }] })));
    nc.publish(subjects.agentAck(attacker.id), sc.encode(JSON.stringify({ host: NAME, service_id: 700, revision: 1, stage: 'canary', mode: 'observe', ok: true, error: null })));
    await nc.flush();
    await new Promise((r) => setTimeout(r, 500));
    const proposal = await s.req('POST', '/segment/propose', { service_id: 700, from_agents: true });
    t.equal(proposal.status, 200, JSON.stringify(proposal.body));
    t.same(proposal.body.edges, [], "the attacker's flows do not widen the victim's proposal");
    t.same((await s.req('GET', '/api/v1/seg/flows/700')).body.items, [], 'no flows kept for a service not targeted at the reporter');
    t.same((await s.req('GET', `/api/v1/agents/${attacker.id}`)).body.applied, {}, 'no ack kept for a service not targeted at the reporter');

    // The victim's own credentials do receive its snapshot.
    const vc = await natsConnect({ servers: nats.url, authenticator: credsAuthenticator(new TextEncoder().encode(victim.creds)), inboxPrefix: subjects.inboxPrefix(victim.id) });
    t.teardown(() => vc.close().catch(() => undefined));
    const got = await vc.request(subjects.segMapDirectGet(subjects.segMap(victim.id, 700)), Empty, { timeout: 5000 });
    t.equal((await jwtVerify(sc.decode(got.data), jwks, { audience: AUD_SEG_MAP })).payload.target, victim.id, 'the victim reads its own last snapshot');
    vc.publish(subjects.agentFlows(victim.id), sc.encode(JSON.stringify({ service_id: 700, flows: [{ dst: '10.1.2.3', proto: 'tcp', port: 5432, count: 2 }] })));
    await vc.flush();
    await eventually('the victim\'s flows are kept', async () => (await s.req('GET', '/api/v1/seg/flows/700')).body.items.length === 1, 5000);
    t.equal((await s.req('GET', '/api/v1/seg/flows/700')).body.items[0].machine_id, victim.id, 'kept with the machine that reported them');

    // A key limited to the attacker's customer resolves the name among its own machines.
    const keyA = (await s.app.apiKeys.create('attacker-admin', ['seg:read', 'seg:write'], attacker.customerId)).key;
    const mine = await s.req('POST', `/seg/maps?target_host=${NAME}`, snap(701), { key: keyA });
    t.equal(mine.status, 200, JSON.stringify(mine.body));
    t.same(mine.body.target_machines, [attacker.id], "the attacker's key reaches only the attacker's machine");
    t.equal((await s.req('POST', `/seg/maps?target_machine=${victim.id}`, snap(702), { key: keyA })).status, 404, "and never the victim's id");
  });
}
