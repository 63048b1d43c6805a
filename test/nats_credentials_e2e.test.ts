/**
 * Per-host NATS credentials end to end: nats-server in operator mode with aegis-server's
 * account; a host gets its own NATS credentials at activation, uses them to receive its
 * snapshots, and loses them when its seat ends (deactivation, or deletion of its
 * customer), the revocation pushed to nats-server.
 */
import t from 'tap';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as natsConnect, credsAuthenticator, StringCodec } from 'nats';
import { readFileSync } from 'node:fs';
import { NatsAuthority } from '../server/src/nats/credentials.js';
import { startNats } from './harness/nats.js';
import { makeTestCa } from './harness/tls.js';
import { startTestServer, TestHost } from './harness/server.js';
import { agentDir, cleanupDir, startAgent } from './harness/agent.js';
import { requireCapability, missingCommand } from './harness/capabilities.js';

/** iat/exp of the user JWT in a .creds file. */
function userJwtClaims(creds: string): { iat: number; exp: number } {
  const jwt = /-----BEGIN NATS USER JWT-----\s+(\S+)\s+------END NATS USER JWT------/.exec(creds)?.[1];
  if (!jwt) throw new Error('no user JWT in the .creds file');
  const c = JSON.parse(Buffer.from(jwt.split('.')[1]!, 'base64url').toString('utf8')) as { iat: number; exp?: number };
  return { iat: c.iat, exp: c.exp ?? 0 };
}

t.test('per-host NATS credentials over TLS: issued at activation, used, revoked at deactivation', async (t) => {
  if (!requireCapability(t, missingCommand('nats-server'))) return;
  const keysDir = mkdtempSync(join(tmpdir(), 'aegis-natskeys-'));
  t.teardown(() => rmSync(keysDir, { recursive: true, force: true }));
  const ca = await makeTestCa();
  t.teardown(() => ca.cleanup());
  const leaf = await ca.issue({ cn: 'nats', dns: ['localhost'], ips: ['127.0.0.1'] });
  const authority = await NatsAuthority.open({ dir: join(keysDir, 'nats') });
  const nats = await startNats({ operatorConfig: authority.renderServerConfig(), tls: leaf });
  t.teardown(() => nats.stop());
  const s = await startTestServer({ keysDir, natsUrl: nats.url, natsOperatorConfig: nats.operatorConfigPath, natsCa: ca.caFile, republishSeconds: 1 });
  t.teardown(() => s.close());

  const host = `creds-${process.pid}`;
  const dir = agentDir();
  t.teardown(() => cleanupDir(dir));
  const agent = await startAgent({
    serverUrl: s.url,
    dir,
    services: { '31': '/nonexistent-cgroup-for-nats-test' },
    hardwareFacts: { machine_id: host },
    extraConfig: { hostname: host, nats_url: nats.url, nats_tls_ca: ca.caFile, fallback_interval_seconds: 3600 },
  });
  await agent.waitReady();
  t.teardown(() => agent.stop());
  t.equal((await agent.api('GET', '/v1/status')).body.nats.connected, false, 'no credentials before activation: not on NATS');

  const cust = await s.req('POST', '/api/v1/customers', { name: 'NATS creds' });
  const lic = await s.req('POST', '/api/v1/licenses', { customer_id: cust.body.id, tier: 'server', license_type: 'perpetual' });
  t.equal((await agent.api('POST', '/v1/activate', { license_key: lic.body.license_key })).status, 200);
  const credsPath = join(agent.stateDir, 'nats.creds');
  await agent.waitFor(() => agent.logs.some((l) => l.includes('connected to NATS')), 15_000, 'NATS with issued credentials');
  t.equal(statSync(credsPath).mode & 0o777, 0o600, 'credentials kept 0600');
  const jwtExp = userJwtClaims(readFileSync(credsPath, 'utf8'));
  t.ok(jwtExp.exp > 0 && jwtExp.exp - jwtExp.iat <= 86_400, `the user JWT expires (default one day, perpetual license or not): ${jwtExp.exp - jwtExp.iat} s`);

  // The issued user may read its own subjects only.
  const sc = StringCodec();
  const creds = readFileSync(credsPath);
  const tls = { caFile: ca.caFile };
  const plain = await natsConnect({ servers: nats.url, authenticator: credsAuthenticator(creds), reconnect: false, timeout: 3000 }).then(
    (c) => c.close().then(() => 'connected'),
    (e: Error) => e.message,
  );
  t.not(plain, 'connected', `TLS required: a client without the CA is refused (${plain})`);
  const machineId = (await agent.api('GET', '/v1/status')).body.machine_id as string;
  const nc = await natsConnect({ servers: nats.url, authenticator: credsAuthenticator(creds), inboxPrefix: `_INBOX.${machineId}`, tls });
  const denied: string[] = [];
  (async () => {
    for await (const st of nc.status()) if (st.type === 'error' || String(st.data).includes('Permissions')) denied.push(String(st.data));
  })().catch(() => undefined);
  nc.publish('aegis.seg.maps._all.31', sc.encode('forged'));
  nc.subscribe('aegis.seg.maps.00000000-0000-4000-8000-000000000000.>');
  nc.subscribe(`aegis.seg.maps.${host}.>`); // its hostname names no subjects of its own
  await nc.flush();
  await new Promise((r) => setTimeout(r, 500));
  t.ok(denied.length >= 1, `nats-server refused the issued user outside its subjects: ${denied.join(' | ')}`);
  await nc.close().catch(() => undefined);

  const posted = await s.req('POST', `/seg/maps?target_host=${host}`, { version: 1, service_id: 31, edges: [], ttl_seconds: 600 });
  await agent.waitFor(() => agent.logs.some((l) => l.includes('snapshot applied') && l.includes('"source":"nats"')), 15_000, 'snapshot over NATS');
  t.equal((await agent.api('GET', '/v1/snapshots')).body.services[0].revision, posted.body.revision, 'snapshot received with the issued credentials');

  t.equal((await agent.api('POST', '/v1/deactivate')).status, 200);
  // The server revoked the user: a connection with the old credentials is refused.
  const again = await natsConnect({ servers: nats.url, authenticator: credsAuthenticator(creds), reconnect: false, timeout: 3000, tls }).then(
    (c) => c.close().then(() => 'connected'),
    (e: Error) => e.message,
  );
  t.match(again, /authorization|authentication|revoked/i, `revoked credentials refused: ${again}`);
  await agent.waitFor(() => !existsSync(credsPath), 5000, 'credentials removed');
  t.pass('the agent dropped its credentials');
  const st = (await agent.api('GET', '/v1/status')).body;
  t.equal(st.nats.connected, false, 'off NATS after deactivation');
});

t.test("force-deleting a customer revokes its machines' NATS users; a subscription's user expires with it", async (t) => {
  if (!requireCapability(t, missingCommand('nats-server'))) return;
  const keysDir = mkdtempSync(join(tmpdir(), 'aegis-natskeys-'));
  t.teardown(() => rmSync(keysDir, { recursive: true, force: true }));
  const ca = await makeTestCa();
  t.teardown(() => ca.cleanup());
  const leaf = await ca.issue({ cn: 'nats', dns: ['localhost'], ips: ['127.0.0.1'] });
  const authority = await NatsAuthority.open({ dir: join(keysDir, 'nats') });
  const nats = await startNats({ operatorConfig: authority.renderServerConfig(), tls: leaf });
  t.teardown(() => nats.stop());
  // Credentials longer-lived than the license: they are cut to the license's end.
  const s = await startTestServer({ keysDir, natsUrl: nats.url, natsOperatorConfig: nats.operatorConfigPath, natsCa: ca.caFile, env: { AEGIS_NATS_CREDS_TTL: String(40 * 86400) } });
  t.teardown(() => s.close());
  const tls = { caFile: ca.caFile };
  const tryConnect = (creds: string) =>
    natsConnect({ servers: nats.url, authenticator: credsAuthenticator(new TextEncoder().encode(creds)), reconnect: false, timeout: 3000, tls }).then(
      (c) => c.close().then(() => 'connected'),
      (e: Error) => e.message,
    );

  const cust = await s.req('POST', '/api/v1/customers', { name: 'NATS doomed' });
  const lic = await s.req('POST', '/api/v1/licenses', { customer_id: cust.body.id, tier: 'server', license_type: 'subscription', duration_days: 30, max_machines: 2 });
  const activated = [];
  for (const name of [`doomed-a-${process.pid}`, `doomed-b-${process.pid}`]) {
    const r = await s.req('POST', '/api/v1/activations', new TestHost(name).activation(lic.body.license_key), { key: null });
    t.equal(r.status, 201, JSON.stringify(r.body));
    t.ok(r.body.nats?.creds, 'NATS credentials issued');
    const skew = Math.abs(Date.parse(r.body.nats.expires_at) - Date.parse(lic.body.expires_at));
    t.ok(skew <= 2000, `the NATS user expires with the license (${r.body.nats.expires_at} vs ${lic.body.expires_at})`);
    activated.push(r.body);
  }
  for (const a of activated) t.equal(await tryConnect(a.nats.creds), 'connected', 'credentials work before the deletion');

  t.equal((await s.req('DELETE', `/api/v1/customers/${cust.body.id}?force=true`)).status, 204);
  const revoked = s.app.nats!.revocations();
  for (const a of activated) {
    t.ok(revoked[a.nats.user_public_key] !== undefined, 'user key in the account revocations');
    t.match(await tryConnect(a.nats.creds), /authorization|authentication|revoked/i, 'revoked credentials refused by nats-server');
  }
  const log = await s.req('GET', `/api/v1/admin/audit-logs?event_type=customer.deleted&customer_id=${cust.body.id}`);
  t.equal(log.body.items[0].event_data.nats_users_revoked, 2, 'the audit counts the revoked NATS users');
  const notPushed = await s.req('GET', '/api/v1/admin/audit-logs?event_type=nats.revocation_not_pushed');
  t.equal(notPushed.body.items.length, 0, 'the revocation reached nats-server');
});

t.test('NATS credentials are renewed on refresh before they expire, and the agent moves to the new ones', async (t) => {
  if (!requireCapability(t, missingCommand('nats-server'))) return;
  const keysDir = mkdtempSync(join(tmpdir(), 'aegis-natskeys-'));
  t.teardown(() => rmSync(keysDir, { recursive: true, force: true }));
  const authority = await NatsAuthority.open({ dir: join(keysDir, 'nats') });
  const nats = await startNats({ operatorConfig: authority.renderServerConfig() });
  t.teardown(() => nats.stop());
  // One-minute credentials and kernel tokens: the agent refreshes every ~30 s, and a
  // refresh past half the credentials' life renews them.
  const s = await startTestServer({
    keysDir,
    natsUrl: nats.url,
    natsOperatorConfig: nats.operatorConfigPath,
    republishSeconds: 1,
    env: { AEGIS_KERNEL_TOKEN_TTL: '60', AEGIS_NATS_CREDS_TTL: '60' },
  });
  t.teardown(() => s.close());
  const host = `renew-${process.pid}`;
  const dir = agentDir();
  t.teardown(() => cleanupDir(dir));
  const agent = await startAgent({
    serverUrl: s.url,
    dir,
    services: { '32': '/nonexistent-cgroup-for-nats-test' },
    hardwareFacts: { machine_id: host },
    extraConfig: { hostname: host, nats_url: nats.url, fallback_interval_seconds: 3600 },
  });
  await agent.waitReady();
  t.teardown(() => agent.stop());
  const cust = await s.req('POST', '/api/v1/customers', { name: 'NATS renewal' });
  const lic = await s.req('POST', '/api/v1/licenses', { customer_id: cust.body.id, tier: 'server', license_type: 'perpetual' });
  t.equal((await agent.api('POST', '/v1/activate', { license_key: lic.body.license_key })).status, 200);
  const credsPath = join(agent.stateDir, 'nats.creds');
  await agent.waitFor(() => existsSync(credsPath), 10_000, 'credentials issued');
  const first = readFileSync(credsPath, 'utf8');
  const c1 = userJwtClaims(first);
  t.ok(c1.exp - c1.iat <= 60, `one-minute credentials: ${c1.exp - c1.iat} s`);
  // A refresh early in their life does not mint another user.
  t.equal((await agent.api('POST', '/v1/refresh')).status, 200);
  t.equal(readFileSync(credsPath, 'utf8'), first, 'not renewed while more than half their life is left');

  await agent.waitFor(() => readFileSync(credsPath, 'utf8') !== first, 50_000, 'credentials renewed by a refresh');
  const c2 = userJwtClaims(readFileSync(credsPath, 'utf8'));
  t.ok(c2.exp > c1.exp, `the new user JWT lasts longer (${c1.exp} -> ${c2.exp})`);
  await agent.waitFor(() => agent.logs.some((l) => l.includes('reconnecting NATS') && l.includes('new NATS credentials')), 10_000, 'reconnected with them');
  // Past the first credentials' expiry, the agent still gets snapshots over NATS.
  await new Promise((r) => setTimeout(r, Math.max(0, (c1.exp + 2) * 1000 - Date.now())));
  const posted = await s.req('POST', `/seg/maps?target_host=${host}`, { version: 1, service_id: 32, edges: [], ttl_seconds: 600 });
  t.equal(posted.status, 200, JSON.stringify(posted.body));
  await agent.waitFor(() => agent.logs.some((l) => l.includes('snapshot applied') && l.includes('"source":"nats"')), 15_000, 'snapshot over NATS after the first credentials expired');
  t.equal((await agent.api('GET', '/v1/status')).body.nats.connected, true, 'on NATS with the renewed credentials');
});
