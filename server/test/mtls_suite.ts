/**
 * The HTTP half of machine identity, run once per storage backend: machine certificates
 * from CSRs, the mTLS agent listener, revocation by serial, and scoped single-use access
 * tokens, all over real TLS sockets.
 */
import type { Test } from 'tap';
import { generateKeyPairSync } from 'node:crypto';
import { AGENT_API, AUD_ACTIVATION_PROOF, AUD_AGENT_TOKEN_PROOF, AUD_DEACTIVATION_PROOF, AUD_REFRESH_PROOF } from '../../protocol/src/index.js';
import { createHostCsr, certificateValidity } from '../../agent/src/csr.js';
import { initPki } from '../src/pki/authority.js';
import { TestHost } from '../../test/harness/server.js';
import { startMtlsServer, tlsRequest, type MtlsTestServer, type TlsReply } from '../../test/harness/mtls.js';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export type DatabaseFactory = () => Promise<string | undefined>;

interface Machine {
  host: TestHost;
  id: string;
  cert: string;
  key: string;
  licenseId: string;
}

export function mtlsSuite(t: Test, newDatabase: DatabaseFactory): void {
  let s: MtlsTestServer;
  t.before(async () => {
    const url = await newDatabase();
    s = await startMtlsServer(url === undefined ? {} : { databaseUrl: url });
  });
  t.teardown(() => s?.close());

  async function license(max = 5): Promise<{ id: string; key: string }> {
    const c = await s.req('POST', '/api/v1/customers', { name: `mTLS ${Math.random().toString(36).slice(2, 7)}` });
    const l = await s.req('POST', '/api/v1/licenses', { customer_id: c.body.id, tier: 'server', license_type: 'perpetual', max_machines: max });
    return { id: l.body.id, key: l.body.license_key };
  }

  async function activate(name: string, lic?: { id: string; key: string }): Promise<Machine> {
    const l = lic ?? (await license());
    const host = new TestHost(name);
    const csr = await createHostCsr(host.privateKey, name);
    const r = await s.req('POST', '/api/v1/activations', host.activation(l.key, { csr }), { key: null });
    if (r.status !== 201) throw new Error(JSON.stringify(r.body));
    return { host, id: r.body.machine_id, cert: r.body.client_certificate, key: host.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, licenseId: l.id };
  }

  const call = (m: Machine, method: string, path: string, o: { body?: unknown; token?: string } = {}): Promise<TlsReply> =>
    tlsRequest(s.agentUrl, method, path, { ca: s.caPem, cert: m.cert, key: m.key, ...o });

  async function token(m: Machine, scope?: string[]): Promise<string> {
    const r = await call(m, 'POST', AGENT_API.token, { body: scope ? { scope } : {} });
    if (r.status !== 200) throw new Error(`token: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body.access_token as string;
  }

  t.test('activation with a CSR returns a SPIFFE client certificate bound to the host key', async (t) => {
    const host = new TestHost('csr-host');
    const l = await license();
    const csr = await createHostCsr(host.privateKey, 'csr-host');
    const r = await s.req('POST', '/api/v1/activations', host.activation(l.key, { csr }), { key: null });
    t.equal(r.status, 201, JSON.stringify(r.body));
    t.match(r.body.ca_certificate, /BEGIN CERTIFICATE/);
    t.equal(r.body.trust_domain, 'aegis.test');
    t.equal(r.body.spiffe_id, `spiffe://aegis.test/machine/${r.body.machine_id}`);
    const v = certificateValidity(r.body.client_certificate)!;
    t.equal(v.serial, r.body.client_certificate_serial);
    const hours = (v.notAfter.getTime() - Date.now()) / 3_600_000;
    t.ok(hours > 23.9 && hours <= 24, `24 h certificate (${hours.toFixed(2)} h)`);
    const records = await s.app.certs.forMachine(r.body.machine_id);
    t.same(records.map((x) => x.serial), [r.body.client_certificate_serial], 'serial recorded');

    // A CSR for another key is refused before the seat is taken.
    const other = new TestHost('csr-other');
    const foreign = await createHostCsr(generateKeyPairSync('ed25519').privateKey, 'x');
    const bad = await s.req('POST', '/api/v1/activations', other.activation(l.key, { csr: foreign }), { key: null });
    t.equal(bad.status, 400);
    t.match(bad.body.error.message, /host key/);
    const garbage = await s.req('POST', '/api/v1/activations', other.activation(l.key, { csr: 'not a csr' }), { key: null });
    t.equal(garbage.status, 400);
    const machines = await s.req('GET', `/api/v1/licenses/${l.id}/machines`);
    t.equal(machines.body.items.length, 1, 'refused CSRs took no seat');

    // Without a CSR the activation works as before (plus the CA to pin).
    const plain = await s.req('POST', '/api/v1/activations', new TestHost('no-csr').activation(l.key), { key: null });
    t.equal(plain.status, 201);
    t.notOk(plain.body.client_certificate);
    t.match(plain.body.ca_certificate, /BEGIN CERTIFICATE/);
  });

  t.test('the agent listener refuses connections without a certificate or with a foreign one', async (t) => {
    const m = await activate('handshake');
    const none = await tlsRequest(s.agentUrl, 'POST', AGENT_API.token, { ca: s.caPem, body: {} });
    t.equal(none.status, 0, 'no HTTP answer without a client certificate');
    t.ok(none.error, `handshake refused (${none.error})`);

    // A look-alike CA with the same trust domain, and a certificate it signed for this very machine.
    const dir = mkdtempSync(join(tmpdir(), 'aegis-rogue-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    await initPki(dir, { trustDomain: 'aegis.test' });
    const { CertificateAuthority } = await import('../src/pki/authority.js');
    const rogue = (await CertificateAuthority.open(dir))!;
    const key = await rogue.verifyCsr(await createHostCsr(m.host.privateKey, 'handshake'), m.host.jwk);
    const forged = await rogue.issueForMachine(key, m.id, new Date(Date.now() + 3_600_000));
    const r = await tlsRequest(s.agentUrl, 'POST', AGENT_API.token, { ca: s.caPem, cert: forged.pem, key: m.key, body: {} });
    t.equal(r.status, 0, 'no HTTP answer for a certificate of another CA');
    t.ok(r.error, `handshake refused (${r.error})`);

    // The server's certificate is pinned too: a client trusting another CA refuses it.
    const pinned = await tlsRequest(s.agentUrl, 'POST', AGENT_API.token, { ca: readFileSync(join(dir, 'ca.crt'), 'utf8'), cert: m.cert, key: m.key, body: {} });
    t.equal(pinned.status, 0);
    t.match(String(pinned.error), /CERT|SIGNATURE|VERIFY|ISSUER/i);

    const good = await call(m, 'POST', AGENT_API.token, { body: {} });
    t.equal(good.status, 200, 'its own certificate is accepted');
  });

  t.test('scoped, single-use, certificate-bound tokens', async (t) => {
    const a = await activate('tok-a');
    const b = await activate('tok-b');
    const issued = await call(a, 'POST', AGENT_API.token, { body: { scope: ['snapshots:read'] } });
    t.equal(issued.status, 200);
    t.equal(issued.body.expires_in, 900, '15-minute lifetime');
    const claims = JSON.parse(Buffer.from(issued.body.access_token.split('.')[1], 'base64url').toString());
    t.equal(claims.sub, a.id);
    t.equal(claims.scope, 'snapshots:read');
    t.equal(claims.exp - claims.iat, 900);
    t.match(claims.jti, /\S{16,}/);
    t.match(claims.nonce, /\S{16,}/);
    t.match(claims.cnf['x5t#S256'], /^[A-Za-z0-9_-]{43}$/, 'bound to the client certificate (RFC 8705)');

    const tok = issued.body.access_token as string;
    const first = await call(a, 'GET', AGENT_API.snapshots, { token: tok });
    t.equal(first.status, 200, JSON.stringify(first.body));
    t.equal(first.body.machine_id, a.id, 'the messages of the machine the certificate names');
    const replay = await call(a, 'GET', AGENT_API.snapshots, { token: tok });
    t.equal(replay.status, 401, 'a replayed token is refused');
    t.match(replay.body.error.message, /already used/);

    const narrow = await token(a, ['telemetry']);
    const forbidden = await call(a, 'GET', AGENT_API.snapshots, { token: narrow });
    t.equal(forbidden.status, 403, 'a token without the scope is refused');
    t.equal(forbidden.body.error.details.required_scope, 'snapshots:read');

    const stolen = await token(a);
    const withB = await call(b, 'GET', AGENT_API.snapshots, { token: stolen });
    t.equal(withB.status, 401, "a token used with another machine's certificate is refused");
    t.match(withB.body.error.message, /another client certificate/);

    t.equal((await call(a, 'GET', AGENT_API.snapshots)).status, 401, 'no token: 401');
    t.equal((await call(a, 'POST', AGENT_API.token, { body: { scope: ['root'] } })).status, 400, 'unknown scope refused');

    const status = await call(a, 'POST', AGENT_API.status, { token: await token(a, ['status:write']), body: { edition: 'licensed', services: [] } });
    t.equal(status.status, 202);
    const seen = await s.req('GET', `/api/v1/agents/${a.id}`);
    t.equal(seen.body.host, 'tok-a', 'status filed under the machine the certificate names');
    const tel = await call(a, 'POST', AGENT_API.telemetry, { token: await token(a, ['telemetry']), body: { events: [{ kind: 'host.load', at: new Date().toISOString(), fields: { cpu: 0.1 } }] } });
    t.same([tel.status, tel.body], [202, { accepted: 1 }], 'telemetry filed as events');
    const loose = await call(a, 'POST', AGENT_API.telemetry, { token: await token(a, ['telemetry']), body: { cpu: 0.1 } });
    t.equal(loose.status, 400, 'telemetry is a batch of events, not any object');

    // The replay record is in the database: a second server replica shares it.
    const rows = await s.app.ctx.db.selectFrom('used_proofs').select('jti').where('jti', '=', `agent-jti:${claims.jti}`).execute();
    t.equal(rows.length, 1, 'jti recorded in used_proofs');
  });

  t.test('renewal over mTLS: a new certificate from a CSR, the old one still valid until it expires', async (t) => {
    const m = await activate('renew');
    const csr = await createHostCsr(m.host.privateKey, 'renew');
    const r = await call(m, 'POST', AGENT_API.refresh, { token: await token(m, ['license:refresh']), body: { csr } });
    t.equal(r.status, 200, JSON.stringify(r.body));
    t.ok(r.body.license_token && r.body.kernel_token, 'fresh tokens');
    t.not(r.body.client_certificate_serial, certificateValidity(m.cert)!.serial, 'a new serial');
    const renewed = { ...m, cert: r.body.client_certificate as string };
    t.equal((await call(renewed, 'POST', AGENT_API.token, { body: {} })).status, 200, 'the new certificate works');
    t.equal((await call(m, 'POST', AGENT_API.token, { body: {} })).status, 200, 'the old one too, until it expires');
    const foreign = await createHostCsr(generateKeyPairSync('ed25519').privateKey, 'x');
    const bad = await call(m, 'POST', AGENT_API.refresh, { token: await token(m, ['license:refresh']), body: { csr: foreign } });
    t.equal(bad.status, 400, 'a CSR for another key is refused');

    // The host-proof refresh on the main listener also renews (an agent whose certificate lapsed).
    const viaProof = await s.req('POST', `/api/v1/machines/${m.id}/refresh`, { proof: m.host.proof(AUD_REFRESH_PROOF), csr }, { key: null });
    t.equal(viaProof.status, 200);
    t.match(viaProof.body.client_certificate, /BEGIN CERTIFICATE/);
  });

  t.test("deactivation and license revocation refuse the machine's unexpired certificates at once", async (t) => {
    const lic = await license();
    const m = await activate('revoke-1', lic);
    const n = await activate('revoke-2', lic);
    const early = await token(m);
    t.equal((await call(m, 'GET', AGENT_API.snapshots, { token: await token(m) })).status, 200);

    const d = await s.req('DELETE', `/api/v1/machines/${m.id}`, { proof: m.host.proof(AUD_DEACTIVATION_PROOF) }, { key: null });
    t.equal(d.status, 200);
    const after = await call(m, 'POST', AGENT_API.token, { body: {} });
    t.equal(after.status, 401, 'deactivated: certificate refused');
    t.match(after.body.error.message, /revoked/);
    t.equal((await call(m, 'GET', AGENT_API.snapshots, { token: early })).status, 401, 'and its tokens with it');
    const recs = await s.app.certs.forMachine(m.id);
    t.ok(recs.every((r) => r.revoked_at !== null), 'records marked revoked');

    t.equal((await call(n, 'POST', AGENT_API.token, { body: {} })).status, 200, 'the other machine still works');
    const rv = await s.req('DELETE', `/api/v1/licenses/${lic.id}/revoke`, { reason: 'chargeback' });
    t.equal(rv.status, 200);
    const revoked = await call(n, 'POST', AGENT_API.token, { body: {} });
    t.equal(revoked.status, 401, 'license revoked: certificate refused');
  });

  t.test("force-deleting a customer revokes its machines' certificates, and the audit says so", async (t) => {
    const c = await s.req('POST', '/api/v1/customers', { name: `mTLS delete ${Math.random().toString(36).slice(2, 7)}` });
    const l = await s.req('POST', '/api/v1/licenses', { customer_id: c.body.id, tier: 'server', license_type: 'perpetual', max_machines: 2 });
    const lic = { id: l.body.id as string, key: l.body.license_key as string };
    const m = await activate('gone-1', lic);
    const n = await activate('gone-2', lic);
    const early = await token(m);
    t.equal((await call(m, 'GET', AGENT_API.snapshots, { token: await token(m) })).status, 200, 'works before the deletion');
    const bystander = await activate('bystander');

    t.equal((await s.req('DELETE', `/api/v1/customers/${c.body.id}`)).status, 409, 'refused without force');
    t.equal((await call(m, 'POST', AGENT_API.token, { body: {} })).status, 200, 'a refused deletion revokes nothing');
    t.equal((await s.req('DELETE', `/api/v1/customers/${c.body.id}?force=true`)).status, 204);

    for (const x of [m, n]) {
      const r = await call(x, 'POST', AGENT_API.token, { body: {} });
      t.equal(r.status, 401, `${x.host.name}: certificate refused`);
      t.match(r.body.error.message, /revoked/);
      const recs = await s.app.certs.forMachine(x.id);
      t.ok(recs.length > 0 && recs.every((rec) => rec.revoked_at !== null), `${x.host.name}: records marked revoked`);
    }
    t.equal((await call(m, 'GET', AGENT_API.snapshots, { token: early })).status, 401, 'and its tokens with it');
    t.equal((await call(bystander, 'POST', AGENT_API.token, { body: {} })).status, 200, "another customer's machine still works");

    const log = await s.req('GET', `/api/v1/admin/audit-logs?event_type=customer.deleted&customer_id=${c.body.id}`);
    t.equal(log.body.items.length, 1);
    t.match(log.body.items[0].event_data, { certificates_revoked: 2, nats_users_revoked: 0, licenses_removed_while_active: [lic.id] });
    t.same([...log.body.items[0].event_data.machines_removed].sort(), [m.id, n.id].sort());
  });

  t.test('an expired certificate record is refused on a kept connection', async (t) => {
    const m = await activate('clock');
    t.equal((await call(m, 'POST', AGENT_API.token, { body: {} })).status, 200);
    s.clock.offsetMs = 25 * 3_600_000;
    t.teardown(() => {
      s.clock.offsetMs = 0;
    });
    const r = await call(m, 'POST', AGENT_API.token, { body: {} });
    t.equal(r.status, 401);
    t.match(r.body.error.message, /expired/);
  });

  t.test('without mTLS the agent routes take host-proof tokens on the main listener', async (t) => {
    const url = await newDatabase();
    const plain = await startMtlsServer({ ...(url === undefined ? {} : { databaseUrl: url }), mtls: false });
    t.teardown(() => plain.close());
    t.equal(plain.agentUrl, '', 'no agent listener');
    const c = await plain.req('POST', '/api/v1/customers', { name: 'plain' });
    const l = await plain.req('POST', '/api/v1/licenses', { customer_id: c.body.id, tier: 'server', license_type: 'perpetual' });
    const host = new TestHost('plain');
    const a = await plain.req('POST', '/api/v1/activations', host.activation(l.body.license_key), { key: null });
    t.equal(a.status, 201);
    const tok = await plain.req('POST', AGENT_API.token, { machine_id: a.body.machine_id, proof: host.proof(AUD_AGENT_TOKEN_PROOF), scope: ['snapshots:read'] }, { key: null });
    t.equal(tok.status, 200, JSON.stringify(tok.body));
    t.notOk(JSON.parse(Buffer.from(tok.body.access_token.split('.')[1], 'base64url').toString()).cnf, 'unbound without a certificate');
    const get = (tk: string) => fetch(plain.url + AGENT_API.snapshots, { headers: { authorization: `Bearer ${tk}` } }).then((r) => r.status);
    t.equal(await get(tok.body.access_token), 200);
    t.equal(await get(tok.body.access_token), 401, 'replay refused');
    const again = await plain.req('POST', AGENT_API.token, { machine_id: a.body.machine_id, proof: host.proof(AUD_ACTIVATION_PROOF) }, { key: null });
    t.equal(again.status, 401, 'a proof for another audience is refused');
  });
}
