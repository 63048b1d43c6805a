/**
 * deploy/nats: the config scripts/nats-config renders, and nats-server enforcing it. The
 * server user alone publishes snapshots and license envelopes; an agent user (one per
 * machine id) reads only its own machine's (and _all) snapshots, live and by Direct Get, and its fleet's license,
 * and publishes only its own reports.
 */
import t from 'tap';
import { randomUUID } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect, Empty, Events, type NatsConnection } from 'nats';
import { commandPath, missingCommand, requireCapability } from './harness/capabilities.js';
import { memoryLog, startNats, waitFor, type TestNats } from './harness/nats.js';
import { ServerBus, type AgentReportKind } from '../server/src/nats/server_bus.js';
import { AgentBus, AgentBusError } from '../agent/src/nats/agent_bus.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SCRIPT = join(ROOT, 'scripts/nats-config');
const DEPLOY_CONF = join(ROOT, 'deploy/nats/nats-server.conf');
/** The arguments deploy/nats/nats-server.conf was rendered with (deploy/nats/README.md). */
const EXAMPLE_ARGS = [
  '--fleet',
  'default',
  '--server-pass',
  'CHANGE-ME-server-password',
  '--machine',
  '0b6f3c52-8d1e-4a7f-9c2b-5e4d3a2f1b0c:CHANGE-ME-machine-1-password',
  '--machine',
  '7e9a1d04-2c3b-4f5e-8a6d-1b0c9f8e7d6a:CHANGE-ME-machine-2-password',
];
/** Machine ids: agent users and their subjects are named by these (one per simulated host). */
const MACHINE_A = randomUUID();
const MACHINE_B = randomUUID();

const FLEET = 'fleet-1';
const PASS = { server: 'server-secret-0001', a: 'host-a-secret-0001', b: 'host-b-secret-0001' };
const te = new TextEncoder();
const td = new TextDecoder();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The environment without tap's loaders, which must not reach the script. */
function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env = { ...process.env, ...extra };
  delete env.NODE_OPTIONS;
  return env;
}

function render(args: string[], env: NodeJS.ProcessEnv = {}): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync('bash', [SCRIPT, ...args], { encoding: 'utf8', env: cleanEnv(env) });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

t.test('scripts/nats-config', async (t) => {
  t.test('deploy/nats/nats-server.conf is its output for the example machines', async (t) => {
    const r = render(EXAMPLE_ARGS);
    t.equal(r.status, 0, r.stderr);
    t.equal(readFileSync(DEPLOY_CONF, 'utf8'), r.stdout, 're-render with the arguments in deploy/nats/README.md');
    t.match(r.stdout, 'store_dir: "/var/lib/aegis-nats"');
  });

  t.test('nats-server accepts the rendered config', async (t) => {
    if (!requireCapability(t, missingCommand('nats-server'))) return;
    const v = spawnSync(commandPath('nats-server') as string, ['-c', DEPLOY_CONF, '-t'], { encoding: 'utf8' });
    t.equal(v.status, 0, v.stderr + v.stdout);
  });

  t.test('machines file, output file mode, auth-only', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'aegis-nats-config-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const [m1, m2] = [randomUUID(), randomUUID()];
    writeFileSync(join(dir, 'machines'), `# fleet machines\n${m1}:web-1-password-x\n\n ${m2}:db-2-password-xx \n`);
    const out = join(dir, 'nats.conf');
    const r = render(['--fleet', 'prod', '--machines-file', join(dir, 'machines'), '-o', out], { AEGIS_NATS_SERVER_PASS: 'from-the-environment' });
    t.equal(r.status, 0, r.stderr);
    t.match(r.stderr, 'wrote');
    t.equal(statSync(out).mode & 0o777, 0o600, 'passwords are not world-readable');
    const conf = readFileSync(out, 'utf8');
    t.match(conf, 'password: "from-the-environment"');
    t.match(conf, `user: "agent-${m1}"`);
    t.match(conf, `user: "agent-${m2}"`);
    t.match(conf, '"aegis.license.prod"');
    const a = render(['--fleet', 'prod', '--server-pass', 'server-password-1', '--auth-only']);
    t.equal(a.status, 0, a.stderr);
    t.ok(a.stdout.startsWith('authorization {'), 'only the authorization block');
    t.notMatch(a.stdout, 'jetstream');
  });

  t.test('bad input is refused with a reason and exit 2', async (t) => {
    const cases: Array<[string[], RegExp]> = [
      [['--server-pass', 'server-password-1'], /--fleet is required/],
      [['--fleet', 'f'], /--server-pass or AEGIS_NATS_SERVER_PASS/],
      [['--fleet', 'f', '--server-pass', 'short'], /at least 12 characters/],
      [['--fleet', 'f', '--server-pass', 'has"quote-password'], /at least 12 characters/],
      [['--fleet', 'f.x', '--server-pass', 'server-password-1'], /fleet "f.x"/],
      [['--fleet', 'f', '--server-pass', 'server-password-1', '--machine', 'a.b:host-password-1'], /"a\.b" \(--machine #1\) is not a machine id/],
      // A hostname, even one that is a valid subject token, names no machine.
      [['--fleet', 'f', '--server-pass', 'server-password-1', '--machine', 'web-1:host-password-1'], /"web-1" \(--machine #1\) is not a machine id.*not by hostname/],
      [['--fleet', 'f', '--server-pass', 'server-password-1', '--machine', `${MACHINE_A.toUpperCase()}:host-password-1`], /is not a machine id/],
      [['--fleet', 'f', '--server-pass', 'server-password-1', '--machine', '_all:host-password-1'], /reserved/],
      [['--fleet', 'f', '--server-pass', 'server-password-1', '--machine', 'nopass'], /MACHINE_ID:PASS/],
      [['--fleet', 'f', '--server-pass', 'server-password-1', '--machine', `${MACHINE_A}:short`], /at least 12 characters/],
      [['--fleet', 'f', '--server-pass', 'server-password-1', '--machine', `${MACHINE_A}:host-password-1`, '--machine', `${MACHINE_A}:host-password-2`], /listed twice/],
      [['--fleet', 'f', '--server-pass', 'server-password-1', '--machines-file', '/nonexistent'], /cannot read --machines-file/],
      // The per-host options of old are refused with the way forward, not silently ignored.
      [['--fleet', 'f', '--server-pass', 'server-password-1', '--host', 'web-1:host-password-1'], /--host and --hosts-file are gone.*--machine MACHINE_ID:PASS/],
      [['--fleet', 'f', '--server-pass', 'server-password-1', '--hosts-file', '/etc/hosts'], /--host and --hosts-file are gone/],
      [['--operator', 'aegis-operator.conf', '--machine', `${MACHINE_A}:host-password-1`], /--machine does not apply to --operator/],
      [['--fleet', 'f', '--server-pass', 'server-password-1', '--server-user', 'agent-x'], /reserved for agent users/],
      [['--fleet', 'f', '--server-pass', 'server-password-1', '--bogus'], /Unknown option/],
    ];
    for (const [args, re] of cases) {
      const r = render(args);
      t.equal(r.status, 2, args.join(' '));
      t.match(r.stderr, re, args.join(' '));
      t.notMatch(r.stderr, /\n\s+at /, 'no stack trace');
    }
  });
});

/** Permission violations nats-server reported on this connection. */
function denials(nc: NatsConnection): Array<{ operation: string; subject: string }> {
  const out: Array<{ operation: string; subject: string }> = [];
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === Events.Error && s.permissionContext) out.push({ ...s.permissionContext });
    }
  })();
  return out;
}

/** Resolves with the error code when nats-server refuses the subscription, null when it takes it. */
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

async function tryRequest(nc: NatsConnection, subject: string, body: Uint8Array = Empty): Promise<{ ok: boolean; code?: string; status?: number; data?: string }> {
  try {
    const m = await nc.request(subject, body, { timeout: 2000, noMux: true });
    return { ok: true, status: m.headers?.code || 200, data: td.decode(m.data) };
  } catch (err) {
    return { ok: false, code: (err as { code?: string }).code ?? String(err) };
  }
}

t.test('nats-server enforces the rendered authorization', async (t) => {
  if (!requireCapability(t, missingCommand('nats-server'))) return;
  const r = render(['--fleet', FLEET, '--server-pass', PASS.server, '--machine', `${MACHINE_A}:${PASS.a}`, '--machine', `${MACHINE_B}:${PASS.b}`, '--auth-only']);
  if (r.status !== 0) throw new Error(r.stderr);
  let nats: TestNats;
  let server: ServerBus;
  let serverNc: NatsConnection;
  const reports: Array<[AgentReportKind, string, unknown]> = [];
  const serverLog = memoryLog();
  const userNc = async (user: string, pass: string, inboxMachine?: string) => {
    const nc = await connect({ servers: nats.url, user, pass, ...(inboxMachine ? { inboxPrefix: `_INBOX.${inboxMachine}` } : {}) });
    t.teardown(() => nc.close());
    return nc;
  };
  t.before(async () => {
    nats = await startNats({ config: r.stdout });
    server = await ServerBus.connect({ url: nats.url, user: 'aegis-server', pass: PASS.server, log: serverLog });
    await server.ensureStream();
    server.onAgentReport((kind, machine, data) => void reports.push([kind, machine, data]));
    await server.publishSegMap(MACHINE_A, 7, 'legit-a-7');
    await server.publishSegMap(MACHINE_B, 7, 'legit-b-7');
    await server.publishSegMap('_all', 7, 'legit-all-7');
    serverNc = await connect({ servers: nats.url, user: 'aegis-server', pass: PASS.server });
  });
  t.teardown(async () => {
    await serverNc?.close();
    await server?.close();
    await nats?.stop();
  });

  const lastValue = async (subject: string) => {
    const m = await serverNc.request(`$JS.API.DIRECT.GET.AEGIS_SEG_MAPS.${subject}`, Empty, { timeout: 2000 });
    return td.decode(m.data);
  };

  t.test('anonymous and wrong passwords are refused at connect', async (t) => {
    for (const opts of [{}, { user: `agent-${MACHINE_A}`, pass: 'wrong-password-123' }, { user: MACHINE_A, pass: PASS.a }, { user: 'agent-host-a', pass: PASS.a }]) {
      try {
        await AgentBus.connect({ url: nats.url, machine: MACHINE_A, ...opts });
        t.fail(`connected with ${JSON.stringify(opts)}`);
      } catch (err) {
        t.equal((err as AgentBusError).code, 'NATS_AUTH', (err as Error).message);
      }
    }
  });

  t.test('the server user publishes snapshots and licenses and manages the stream', async (t) => {
    const { seq } = await server.publishSegMap(MACHINE_A, 8, 'legit-a-8');
    t.ok(seq > 0);
    await server.publishLicense(FLEET, 'legit-envelope');
    await server.ensureStream();
    t.equal(serverLog.lines.filter((l) => l.level === 'error').length, 0, JSON.stringify(serverLog.lines));
  });

  t.test('an agent user gets its own and _all snapshots, its license, and reports', async (t) => {
    const log = memoryLog();
    const a = await AgentBus.connect({ url: nats.url, machine: MACHINE_A, user: `agent-${MACHINE_A}`, pass: PASS.a, log });
    t.teardown(() => a.close());
    const got: Array<[string, string]> = [];
    await a.watchSegMaps([7], (s, d) => void got.push([s, d]));
    t.same([...got].sort(), [['aegis.seg.maps._all.7', 'legit-all-7'], [`aegis.seg.maps.${MACHINE_A}.7`, 'legit-a-7']].sort(), 'Direct Get of own and _all');
    const lic: string[] = [];
    a.watchLicense(FLEET, (d) => void lic.push(d));
    await sleep(50);
    await server.publishSegMap(MACHINE_A, 7, 'legit-a-7-r2');
    await server.publishSegMap(MACHINE_B, 7, 'legit-b-7-r2');
    await server.publishLicense(FLEET, 'legit-envelope-2');
    await waitFor(() => got.length === 3 && lic.length === 1, 'live snapshot and license');
    t.same(got[2], [`aegis.seg.maps.${MACHINE_A}.7`, 'legit-a-7-r2']);
    t.same(lic, ['legit-envelope-2']);
    await a.publishStatus({ host: 'host-a' });
    await a.publishAck({ host: 'host-a', revision: 1 });
    await waitFor(() => reports.some(([k, h]) => k === 'ack' && h === MACHINE_A), 'reports');
    t.ok(reports.some(([k, h]) => k === 'status' && h === MACHINE_A));
    await sleep(100);
    t.same(got.length, 3, "machine B's snapshot never arrives");
    t.equal(log.lines.filter((l) => l.level === 'error').length, 0, JSON.stringify(log.lines));
  });

  t.test('an agent user cannot publish snapshots, licenses or another machine\'s reports', async (t) => {
    const a = await AgentBus.connect({ url: nats.url, machine: MACHINE_A, user: `agent-${MACHINE_A}`, pass: PASS.a });
    t.teardown(() => a.close());
    const got: string[] = [];
    await a.watchSegMaps([7], (_s, d) => void got.push(d));
    const b = await AgentBus.connect({ url: nats.url, machine: MACHINE_B, user: `agent-${MACHINE_B}`, pass: PASS.b });
    t.teardown(() => b.close());
    const lic: string[] = [];
    b.watchLicense(FLEET, (d) => void lic.push(d));
    const before = { a7: await lastValue(`aegis.seg.maps.${MACHINE_A}.7`), all7: await lastValue('aegis.seg.maps._all.7') };
    const reportsBefore = reports.length;
    got.length = 0;

    const nc = await userNc(`agent-${MACHINE_B}`, PASS.b, MACHINE_B);
    const denied = denials(nc);
    const forged: Array<[string, string]> = [
      [`aegis.seg.maps.${MACHINE_A}.7`, 'forged snapshot for another machine'],
      [`aegis.seg.maps.${MACHINE_B}.7`, 'forged snapshot for itself'],
      ['aegis.seg.maps._all.7', 'forged snapshot for everyone'],
      [`aegis.license.${FLEET}`, 'forged license envelope'],
      ['aegis.license.other', 'forged license envelope'],
      [`aegis.agent.${MACHINE_A}.status`, '{"forged":"report as machine A"}'],
      [`aegis.agent.${MACHINE_A}.ack`, '{"forged":"ack as machine A"}'],
      ['$JS.API.STREAM.PURGE.AEGIS_SEG_MAPS', ''],
      ['$JS.API.STREAM.DELETE.AEGIS_SEG_MAPS', ''],
    ];
    for (const [subject, body] of forged) nc.publish(subject, te.encode(body));
    await nc.flush();
    await waitFor(() => denied.length >= forged.length, 'a violation per forged publish', 5000);
    t.same(
      denied.map((d) => `${d.operation} ${d.subject}`).sort(),
      forged.map(([s]) => `publish ${s}`).sort(),
      'nats-server refused each publish',
    );
    await sleep(200);
    t.same(got, [], 'no forged snapshot reached machine A');
    t.same(lic, [], 'no forged license reached machine B');
    t.equal(reports.length, reportsBefore, 'no forged report reached the server');
    t.same({ a7: await lastValue(`aegis.seg.maps.${MACHINE_A}.7`), all7: await lastValue('aegis.seg.maps._all.7') }, before, 'stored last values untouched');

    // Its own reports do go through on the same connection.
    nc.publish(`aegis.agent.${MACHINE_B}.status`, te.encode('{"own":true}'));
    await waitFor(() => reports.some(([k, h, d]) => k === 'status' && h === MACHINE_B && JSON.stringify(d) === '{"own":true}'), 'own report');
  });

  t.test('an agent user cannot subscribe to or Direct-Get another machine\'s subjects', async (t) => {
    const nc = await userNc(`agent-${MACHINE_B}`, PASS.b, MACHINE_B);
    for (const subject of [
      `aegis.seg.maps.${MACHINE_A}.>`,
      `aegis.seg.maps.${MACHINE_A}.7`,
      'aegis.seg.maps.>',
      'aegis.seg.maps.*.7',
      'aegis.license.other',
      'aegis.license.>',
      'aegis.agent.>',
      '_INBOX.>',
      `_INBOX.${MACHINE_A}.>`,
      '>',
    ]) {
      t.equal(await trySubscribe(nc, subject), 'PERMISSIONS_VIOLATION', `subscribe ${subject}`);
    }
    for (const subject of [`aegis.seg.maps.${MACHINE_B}.>`, 'aegis.seg.maps._all.>', `aegis.license.${FLEET}`, `_INBOX.${MACHINE_B}.x`]) {
      t.equal(await trySubscribe(nc, subject), null, `subscribe ${subject} is allowed`);
    }

    const own = await tryRequest(nc, `$JS.API.DIRECT.GET.AEGIS_SEG_MAPS.aegis.seg.maps.${MACHINE_B}.7`);
    t.same(own, { ok: true, status: 200, data: await lastValue(`aegis.seg.maps.${MACHINE_B}.7`) }, 'Direct Get of its own subject');
    const all = await tryRequest(nc, '$JS.API.DIRECT.GET.AEGIS_SEG_MAPS.aegis.seg.maps._all.7');
    t.equal(all.data, await lastValue('aegis.seg.maps._all.7'), 'Direct Get of _all');
    for (const [subject, body] of [
      [`$JS.API.DIRECT.GET.AEGIS_SEG_MAPS.aegis.seg.maps.${MACHINE_A}.7`, Empty],
      ['$JS.API.DIRECT.GET.AEGIS_SEG_MAPS', te.encode(`{"last_by_subj":"aegis.seg.maps.${MACHINE_A}.7"}`)],
      ['$JS.API.DIRECT.GET.AEGIS_SEG_MAPS', te.encode('{"seq":1}')],
      ['$JS.API.STREAM.MSG.GET.AEGIS_SEG_MAPS', te.encode(`{"last_by_subj":"aegis.seg.maps.${MACHINE_A}.7"}`)],
      ['$JS.API.STREAM.INFO.AEGIS_SEG_MAPS', Empty],
      ['$JS.API.CONSUMER.CREATE.AEGIS_SEG_MAPS', te.encode(`{"config":{"filter_subject":"aegis.seg.maps.${MACHINE_A}.>"}}`)],
      ['$JS.API.INFO', Empty],
    ] as Array<[string, Uint8Array]>) {
      const res = await tryRequest(nc, subject, body);
      t.same(res, { ok: false, code: 'PERMISSIONS_VIOLATION' }, `request ${subject} ${td.decode(body)}`);
    }
  });

  t.test('an agent bus run with another machine\'s id gets nothing and says why', async (t) => {
    const log = memoryLog();
    const b = await AgentBus.connect({ url: nats.url, machine: MACHINE_A, user: `agent-${MACHINE_B}`, pass: PASS.b, log, requestTimeoutMs: 500 });
    t.teardown(() => b.close());
    const got: string[] = [];
    await b.watchSegMaps([7], (_s, d) => void got.push(d));
    await waitFor(() => log.lines.some((l) => l.level === 'error' && /denied/.test(l.msg)), 'a permission error in the log');
    t.ok(log.lines.some((l) => l.level === 'error' && l.msg.includes(`aegis.seg.maps.${MACHINE_A}.>`)), JSON.stringify(log.lines));
    t.same(got, [], 'nothing of machine A (and its replies cannot reach it: the inbox is not its own)');
    try {
      await b.publishStatus({});
    } catch (err) {
      t.fail(`core publish does not throw on denial: ${String(err)}`);
    }
    await waitFor(() => log.lines.some((l) => l.msg.includes(`denied publish on aegis.agent.${MACHINE_A}.status`)), 'the denied publish is logged');
  });

  t.test('the server user cannot forge agent reports', async (t) => {
    const nc = await userNc('aegis-server', PASS.server);
    const denied = denials(nc);
    nc.publish(`aegis.agent.${MACHINE_A}.status`, te.encode('{}'));
    await nc.flush();
    await waitFor(() => denied.length === 1, 'violation');
    t.same(denied, [{ operation: 'publish', subject: `aegis.agent.${MACHINE_A}.status` }]);
  });
});
