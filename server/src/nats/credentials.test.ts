/**
 * NatsAuthority against a real nats-server in operator mode with TLS: per-agent user JWTs
 * allow only the agent's own subjects, the server user runs the stream, plain and
 * wrongly-trusting clients are refused, and a revoked agent is cut off (live push and
 * config reload/restart).
 */
import t, { type Test } from 'tap';
import { randomUUID } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, credsAuthenticator, Empty, Events, type NatsConnection } from 'nats';
import { missingCommand, requireCapability } from '../../../test/harness/capabilities.js';
import { memoryLog, startNats, waitFor, type TestNats } from '../../../test/harness/nats.js';
import { makeTestCa, type TestCa } from '../../../test/harness/tls.js';
import { AgentBus, AgentBusError } from '../../../agent/src/nats/agent_bus.js';
import { agentPermissions, NatsAuthority, NatsAuthorityError } from './credentials.js';
import { ServerBus } from './server_bus.js';

const FLEET = 'fleet-1';
/** Machine ids (what an agent's subjects and credentials are named by), one per simulated host. */
const MACHINE_A = randomUUID();
const MACHINE_B = randomUUID();
const MACHINE_C = randomUUID();
const MACHINE_D = randomUUID();
const te = new TextEncoder();
const td = new TextDecoder();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function tmp(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'aegis-nats-auth-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function rejectsWithCode(t: Test, p: Promise<unknown>, code: string, what: string): Promise<void> {
  try {
    await p;
    t.fail(`${what}: expected ${code}`);
  } catch (err) {
    t.equal((err as { code?: string }).code, code, `${what}: ${(err as Error).message}`);
  }
}

/** Permission violations nats-server reported on this connection. */
function denials(nc: NatsConnection): string[] {
  const out: string[] = [];
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === Events.Error && s.permissionContext) out.push(`${s.permissionContext.operation} ${s.permissionContext.subject}`);
    }
  })();
  return out;
}

async function trySubscribe(nc: NatsConnection, subject: string): Promise<string | null> {
  let code: string | null = null;
  nc.subscribe(subject, {
    callback: (err) => {
      if (err) code = err.code;
    },
  });
  await nc.flush();
  await sleep(50);
  return code;
}

async function tryRequest(nc: NatsConnection, subject: string, body: Uint8Array = Empty): Promise<{ ok: boolean; code?: string; data?: string }> {
  try {
    const m = await nc.request(subject, body, { timeout: 2000, noMux: true });
    return { ok: true, data: td.decode(m.data) };
  } catch (err) {
    return { ok: false, code: (err as { code?: string }).code ?? String(err) };
  }
}

t.test('NatsAuthority keys and credentials (no server)', async (t) => {
  const dir = join(tmp(t), 'nats');
  const a = await NatsAuthority.open({ dir });
  t.equal(statSync(dir).mode & 0o777, 0o700, 'key directory 0700');
  for (const f of ['operator.nk', 'system_account.nk', 'account.nk']) t.equal(statSync(join(dir, f)).mode & 0o777, 0o600, `${f} is 0600`);
  t.match(a.operatorPublicKey, /^O[A-Z2-7]{55}$/);
  t.match(a.accountPublicKey, /^A[A-Z2-7]{55}$/);

  const again = await NatsAuthority.open({ dir });
  t.equal(again.operatorPublicKey, a.operatorPublicKey, 'same keys on reopen');
  t.equal(again.accountPublicKey, a.accountPublicKey);

  const conf = a.renderServerConfig();
  t.match(conf, /^operator: eyJ/m);
  t.match(conf, `system_account: ${a.systemAccountPublicKey}`);
  t.match(conf, 'resolver: MEMORY');
  t.match(conf, `${a.accountPublicKey}: eyJ`);

  const m1 = randomUUID();
  const c = await a.issueAgentCredentials({ machineId: m1, fleet: FLEET, hostname: 'web-1', ttlSeconds: 3600 });
  t.match(c.creds, /-----BEGIN NATS USER JWT-----\neyJ[^\n]+\n------END NATS USER JWT------/);
  t.match(c.creds, /-----BEGIN USER NKEY SEED-----\nSU[A-Z2-7]+\n------END USER NKEY SEED------/);
  t.match(c.userPublicKey, /^U[A-Z2-7]{55}$/);
  t.ok(c.expiresAt && Math.abs(c.expiresAt.getTime() - Date.now() - 3600_000) < 5000, 'expiry from ttlSeconds');
  const claims = JSON.parse(Buffer.from(c.creds.split('\n')[1]!.split('.')[1]!, 'base64url').toString()) as { iss: string; sub: string; name: string; nats: Record<string, unknown> };
  t.equal(claims.iss, a.accountPublicKey, 'signed by the account');
  t.equal(claims.sub, c.userPublicKey);
  t.equal(claims.name, `agent web-1 (${m1})`, 'the hostname is only a label in the name');
  t.same(claims.nats.pub, agentPermissions(m1, FLEET).pub);
  t.same(claims.nats.sub, agentPermissions(m1, FLEET).sub);
  t.equal(claims.nats.bearer_token, false, 'the seed must sign the server nonce');

  // Only a machine id names an agent user's subjects: not a hostname (even a valid subject
  // token), not _all, not subject syntax, not an uppercase UUID.
  for (const bad of [
    { machineId: '_all', fleet: FLEET },
    { machineId: 'a.b', fleet: FLEET },
    { machineId: 'web-1', fleet: FLEET, hostname: 'web-1' },
    { machineId: m1.toUpperCase(), fleet: FLEET },
    { machineId: `${m1}.>`, fleet: FLEET },
    { machineId: randomUUID(), fleet: 'f>' },
    { machineId: '', fleet: FLEET },
  ]) {
    await rejectsWithCode(t, a.issueAgentCredentials(bad), 'NATS_BAD_ARGUMENT', JSON.stringify(bad));
  }

  const r = await a.revokeAgent(m1);
  t.same(r.revoked, [c.userPublicKey]);
  t.equal(r.pushed, false);
  t.match(r.pushError, /push option not set/);
  t.same(Object.keys(a.revocations()), [c.userPublicKey]);
  t.same((await a.revokeAgent(m1)).revoked, [], 'revoking twice is a no-op');
  t.same((await a.revokeAgent(randomUUID())).revoked, [], 'an unknown machine has nothing to revoke');
  const reopened = await NatsAuthority.open({ dir });
  t.same(Object.keys(reopened.revocations()), [c.userPublicKey], 'revocations survive a restart');
  t.equal(reopened.renderServerConfig(), a.renderServerConfig(), 'the same config after a restart (nats-server cannot reload a changed operator JWT)');
  const accountClaims = JSON.parse(Buffer.from(reopened.currentAccountJwt.split('.')[1]!, 'base64url').toString()) as { nats: { revocations?: Record<string, number> } };
  t.ok(accountClaims.nats.revocations?.[c.userPublicKey], 'the account JWT carries the revocation');

  chmodSync(join(dir, 'account.nk'), 0o644);
  await rejectsWithCode(t, NatsAuthority.open({ dir }), 'NATS_INSECURE_KEY_FILE', 'a world-readable seed');
  chmodSync(join(dir, 'account.nk'), 0o600);
  writeFileSync(join(dir, 'state.json'), '{nope');
  await t.rejects(NatsAuthority.open({ dir }), NatsAuthorityError);
});

t.test('nats-server in operator mode with TLS', async (t) => {
  if (!requireCapability(t, missingCommand('nats-server'))) return;
  const work = tmp(t);
  const keysDir = join(work, 'nats');
  let ca: TestCa;
  let otherCa: TestCa;
  let nats: TestNats;
  let authority: NatsAuthority;
  let server: ServerBus;
  let tls: { caFile: string };
  const credsA = { file: join(work, `${MACHINE_A}.creds`), pub: '' };
  const credsB = { file: join(work, `${MACHINE_B}.creds`), pub: '' };
  const serverLog = memoryLog();

  t.before(async () => {
    ca = await makeTestCa();
    otherCa = await makeTestCa('Some Other CA');
    const leaf = await ca.issue({ cn: 'nats', dns: ['localhost'], ips: ['127.0.0.1'] });
    tls = { caFile: ca.caFile };
    const first = await NatsAuthority.open({ dir: keysDir });
    nats = await startNats({ operatorConfig: first.renderServerConfig(), tls: leaf });
    authority = await NatsAuthority.open({ dir: keysDir, configPath: nats.operatorConfigPath, push: { url: nats.url, tls } });
    const sc = await authority.issueServerCredentials();
    server = await ServerBus.connect({ url: nats.url, creds: sc.creds, tls, log: serverLog });
    await server.ensureStream();
    for (const [machineId, c] of [[MACHINE_A, credsA], [MACHINE_B, credsB]] as const) {
      const issued = await authority.issueAgentCredentials({ machineId, fleet: FLEET, hostname: `host-of-${machineId}`, ttlSeconds: 3600 });
      writeFileSync(c.file, issued.creds, { mode: 0o600 });
      c.pub = issued.userPublicKey;
    }
    await server.publishSegMap(MACHINE_A, 7, 'legit-a-7');
    await server.publishSegMap(MACHINE_B, 7, 'legit-b-7');
    await server.publishSegMap('_all', 7, 'legit-all-7');
  });
  t.teardown(async () => {
    await server?.close();
    await nats?.stop();
    ca?.cleanup();
    otherCa?.cleanup();
  });

  const userNc = async (t: Test, credsFile: string, inboxMachine?: string): Promise<NatsConnection> => {
    const nc = await connect({
      servers: nats.url,
      tls,
      authenticator: credsAuthenticator(readFileSync(credsFile)),
      maxReconnectAttempts: 0,
      ...(inboxMachine ? { inboxPrefix: `_INBOX.${inboxMachine}` } : {}),
    });
    t.teardown(() => nc.close());
    return nc;
  };

  t.test('TLS is required, and only nats-server certificates of the pinned CA are trusted', async (t) => {
    // A client that speaks plain NATS gets the INFO line and nothing more.
    const text = await new Promise<string>((resolve) => {
      let got = '';
      const sock = createConnection({ host: '127.0.0.1', port: nats.port }, () => sock.write('CONNECT {"verbose":false}\r\nPING\r\n'));
      sock.on('data', (d) => (got += d.toString()));
      sock.on('close', () => resolve(got));
      sock.on('error', () => resolve(got));
      setTimeout(() => sock.destroy(), 4000);
    });
    t.match(text, /"tls_required":true/);
    t.notMatch(text, /PONG/, 'no protocol over plain TCP');

    await rejectsWithCode(t, AgentBus.connect({ url: nats.url, machine: MACHINE_A, credsFile: credsA.file, tls: { caFile: otherCa.caFile } }), 'NATS_TLS', 'agent trusting another CA');
    await rejectsWithCode(t, AgentBus.connect({ url: nats.url, machine: MACHINE_A, credsFile: credsA.file }), 'NATS_TLS', 'agent trusting only the system CAs');
    await rejectsWithCode(t, ServerBus.connect({ url: nats.url, creds: readFileSync(credsA.file, 'utf8'), tls: { caFile: otherCa.caFile } }), 'NATS_TLS', 'server trusting another CA');

    const ok = await AgentBus.connect({ url: nats.url, machine: MACHINE_A, credsFile: credsA.file, tls });
    t.ok(ok.isConnected(), 'with the right CA');
    await ok.close();
  });

  t.test('credentials are required and must be signed by the account', async (t) => {
    await rejectsWithCode(t, AgentBus.connect({ url: nats.url, machine: MACHINE_A, tls }), 'NATS_AUTH', 'no credentials');
    await rejectsWithCode(t, AgentBus.connect({ url: nats.url, machine: MACHINE_A, tls, user: `agent-${MACHINE_A}`, pass: 'some-password-1' }), 'NATS_AUTH', 'a password');
    const foreign = await NatsAuthority.open({ dir: join(work, 'foreign') });
    const fc = await foreign.issueAgentCredentials({ machineId: MACHINE_A, fleet: FLEET });
    await rejectsWithCode(t, AgentBus.connect({ url: nats.url, machine: MACHINE_A, tls, creds: fc.creds }), 'NATS_AUTH', 'credentials of another operator');
    await rejectsWithCode(t, AgentBus.connect({ url: nats.url, machine: MACHINE_A, tls, credsFile: join(work, 'missing.creds') }), 'NATS_AUTH', 'a missing creds file');
  });

  t.test('ServerBus and AgentBus end to end over TLS with JWT credentials', async (t) => {
    const log = memoryLog();
    const a = await AgentBus.connect({ url: nats.url, machine: MACHINE_A, credsFile: credsA.file, tls, log });
    t.teardown(() => a.close());
    const got: Array<[string, string]> = [];
    await a.watchSegMaps([7], (s, d) => void got.push([s, d]));
    t.same([...got].sort(), [['aegis.seg.maps._all.7', 'legit-all-7'], [`aegis.seg.maps.${MACHINE_A}.7`, 'legit-a-7']].sort(), 'last values by Direct Get');
    const reports: Array<[string, string]> = [];
    const stop = server.onAgentReport((kind, machine) => void reports.push([kind, machine]));
    t.teardown(stop);
    const stopLicense = server.serveLicense((fleet) => `envelope-of-${fleet}`);
    t.teardown(stopLicense);
    await server.publishSegMap(MACHINE_A, 7, 'legit-a-7-r2');
    await server.publishSegMap(MACHINE_B, 7, 'legit-b-7-r2');
    await waitFor(() => got.length === 3, 'live snapshot');
    t.same(got[2], [`aegis.seg.maps.${MACHINE_A}.7`, 'legit-a-7-r2']);
    t.equal(await a.waitForLicense(FLEET, 3000), `envelope-of-${FLEET}`, 'license request answered');
    await a.publishStatus({ ok: true });
    await waitFor(() => reports.some(([k, h]) => k === 'status' && h === MACHINE_A), 'status report');
    await sleep(100);
    t.equal(got.length, 3, "machine B's snapshot never arrives");
    t.same(log.lines.filter((l) => l.level === 'error'), []);
    t.same(serverLog.lines.filter((l) => l.level === 'error'), []);
  });

  t.test("an agent's credentials allow only its own subjects", async (t) => {
    const nc = await userNc(t, credsB.file, MACHINE_B);
    const denied = denials(nc);
    const forged = [
      `aegis.seg.maps.${MACHINE_A}.7`,
      `aegis.seg.maps.${MACHINE_B}.7`,
      'aegis.seg.maps._all.7',
      `aegis.license.${FLEET}`,
      `aegis.agent.${MACHINE_A}.status`,
      '$JS.API.STREAM.PURGE.AEGIS_SEG_MAPS',
      '$JS.API.STREAM.DELETE.AEGIS_SEG_MAPS',
    ];
    for (const s of forged) nc.publish(s, te.encode('forged'));
    await nc.flush();
    await waitFor(() => denied.length >= forged.length, 'a violation per forged publish', 5000);
    t.same([...denied].sort(), forged.map((s) => `publish ${s}`).sort(), 'nats-server refused each publish');

    for (const s of [`aegis.seg.maps.${MACHINE_A}.>`, 'aegis.seg.maps.>', 'aegis.license.other', 'aegis.agent.>', '_INBOX.>', `_INBOX.${MACHINE_A}.>`, '>']) {
      t.equal(await trySubscribe(nc, s), 'PERMISSIONS_VIOLATION', `subscribe ${s}`);
    }
    for (const s of [`aegis.seg.maps.${MACHINE_B}.>`, 'aegis.seg.maps._all.>', `aegis.license.${FLEET}`]) {
      t.equal(await trySubscribe(nc, s), null, `subscribe ${s} is allowed`);
    }
    const own = await tryRequest(nc, `$JS.API.DIRECT.GET.AEGIS_SEG_MAPS.aegis.seg.maps.${MACHINE_B}.7`);
    t.equal(own.ok, true, 'Direct Get of its own last value');
    t.match(own.data, /^legit-b-7/);
    for (const [subject, body] of [
      [`$JS.API.DIRECT.GET.AEGIS_SEG_MAPS.aegis.seg.maps.${MACHINE_A}.7`, Empty],
      ['$JS.API.DIRECT.GET.AEGIS_SEG_MAPS', te.encode(`{"last_by_subj":"aegis.seg.maps.${MACHINE_A}.7"}`)],
      ['$JS.API.STREAM.MSG.GET.AEGIS_SEG_MAPS', te.encode(`{"last_by_subj":"aegis.seg.maps.${MACHINE_A}.7"}`)],
      ['$JS.API.STREAM.INFO.AEGIS_SEG_MAPS', Empty],
    ] as Array<[string, Uint8Array]>) {
      t.same(await tryRequest(nc, subject, body), { ok: false, code: 'PERMISSIONS_VIOLATION' }, `request ${subject} ${td.decode(body)}`);
    }
    // Its own report goes through.
    const reports: string[] = [];
    const stop = server.onAgentReport((_k, machine) => void reports.push(machine));
    t.teardown(stop);
    // The server's subscription is on another connection: repeat until it is in place.
    const timer = setInterval(() => nc.publish(`aegis.agent.${MACHINE_B}.status`, te.encode('{}')), 100);
    t.teardown(() => clearInterval(timer));
    await waitFor(() => reports.includes(MACHINE_B), 'own report');
    clearInterval(timer);
  });

  t.test('the server user cannot forge agent reports', async (t) => {
    const sc = await authority.issueServerCredentials();
    const nc = await connect({ servers: nats.url, tls, authenticator: credsAuthenticator(te.encode(sc.creds)) });
    t.teardown(() => nc.close());
    const denied = denials(nc);
    nc.publish(`aegis.agent.${MACHINE_A}.status`, te.encode('{}'));
    await nc.flush();
    await waitFor(() => denied.length === 1, 'violation');
    t.same(denied, [`publish aegis.agent.${MACHINE_A}.status`]);
  });

  t.test('revokeAgent pushes the revocation: the live connection is closed and reconnects are refused', async (t) => {
    const log = memoryLog();
    const a = await AgentBus.connect({ url: nats.url, machine: MACHINE_A, credsFile: credsA.file, tls, log, reconnectWaitMs: 100 });
    t.teardown(() => a.close());
    const logB = memoryLog();
    const b = await AgentBus.connect({ url: nats.url, machine: MACHINE_B, credsFile: credsB.file, tls, log: logB });
    t.teardown(() => b.close());
    const raw = await userNc(t, credsA.file, MACHINE_A);
    const gotB: string[] = [];
    await b.watchSegMaps([7], (_s, d) => void gotB.push(d));

    const r = await authority.revokeAgent(MACHINE_A);
    t.same(r, { revoked: [credsA.pub], pushed: true });
    const closed = await Promise.race([raw.closed().then((err) => (err as { code?: string } | undefined)?.code ?? 'closed'), sleep(5000).then(() => 'still open')]);
    t.not(closed, 'still open', `nats-server closed the revoked user's connection (${closed})`);
    await waitFor(() => !a.isConnected(), 'the revoked AgentBus is disconnected');
    await sleep(500);
    t.notOk(a.isConnected(), 'and its reconnects are refused');
    await rejectsWithCode(t, AgentBus.connect({ url: nats.url, machine: MACHINE_A, credsFile: credsA.file, tls }), 'NATS_AUTH', 'a new connection');

    t.ok(b.isConnected(), 'machine B is unaffected');
    t.same(logB.lines.filter((l) => /disconnected/.test(l.msg)), [], 'machine B was never disconnected (a pushed update touches only the revoked user)');
    await server.publishSegMap(MACHINE_B, 7, 'after-revocation');
    await waitFor(() => gotB.includes('after-revocation'), 'machine B still receives');
    t.match(readFileSync(nats.operatorConfigPath, 'utf8'), authority.currentAccountJwt, 'the config fragment carries the new account JWT');

    // A nats-server restarted from the config fragment still refuses the revoked user.
    await nats.restart();
    await rejectsWithCode(t, AgentBus.connect({ url: nats.url, machine: MACHINE_A, credsFile: credsA.file, tls }), 'NATS_AUTH', 'after a nats-server restart');
    const b2 = await AgentBus.connect({ url: nats.url, machine: MACHINE_B, credsFile: credsB.file, tls });
    t.ok(b2.isConnected(), 'machine B connects after the restart');
    await b2.close();
    await waitFor(() => server.isConnected(), 'the server bus reconnected');
  });

  // Fallback only: nats-server 2.9.10 closes every JWT user's connection on any config
  // reload (they reconnect), so a push is the way to revoke on a running server.
  t.test('without a push, a config reload (SIGHUP) applies the revocation', async (t) => {
    const offline = await NatsAuthority.open({ dir: keysDir, configPath: nats.operatorConfigPath });
    const issued = await offline.issueAgentCredentials({ machineId: MACHINE_C, fleet: FLEET, hostname: 'host-c' });
    const file = join(work, `${MACHINE_C}.creds`);
    writeFileSync(file, issued.creds, { mode: 0o600 });
    const nc = await userNc(t, file, MACHINE_C);
    const r = await offline.revokeAgent(issued.userPublicKey);
    t.same(r.revoked, [issued.userPublicKey]);
    t.equal(r.pushed, false);
    await sleep(300);
    t.notOk(nc.isClosed(), 'still connected before the reload');
    await nats.reload();
    const closed = await Promise.race([nc.closed().then(() => 'closed'), sleep(5000).then(() => 'still open')]);
    t.equal(closed, 'closed', 'the reload closed the revoked connection');
    await rejectsWithCode(t, AgentBus.connect({ url: nats.url, machine: MACHINE_C, credsFile: file, tls }), 'NATS_AUTH', 'reconnect after the reload');
  });

  t.test('expired credentials are refused', async (t) => {
    const issued = await authority.issueAgentCredentials({ machineId: MACHINE_D, fleet: FLEET, hostname: 'host-d', ttlSeconds: 1 });
    await sleep(2100);
    try {
      await AgentBus.connect({ url: nats.url, machine: MACHINE_D, creds: issued.creds, tls });
      t.fail('connected with expired credentials');
    } catch (err) {
      t.type(err, AgentBusError);
      t.equal((err as AgentBusError).code, 'NATS_AUTH', (err as Error).message);
    }
  });
});
