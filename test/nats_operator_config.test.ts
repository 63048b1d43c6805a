/**
 * deploy/nats in operator mode: scripts/nats-config --operator/--tls-* renders a config
 * that nats-server accepts, and that, with the fragment aegis-server writes
 * (NatsAuthority), carries snapshots from ServerBus to AgentBus over TLS with JWT
 * credentials, and drops a revoked agent on reload.
 */
import t from 'tap';
import { randomUUID } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { commandPath, missingCommand, requireCapability } from './harness/capabilities.js';
import { memoryLog, startNats, waitFor } from './harness/nats.js';
import { makeTestCa } from './harness/tls.js';
import { NatsAuthority } from '../server/src/nats/credentials.js';
import { ServerBus } from '../server/src/nats/server_bus.js';
import { AgentBus } from '../agent/src/nats/agent_bus.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SCRIPT = join(ROOT, 'scripts/nats-config');
const DEPLOY_CONF = join(ROOT, 'deploy/nats/nats-server.operator.conf');
/** The arguments deploy/nats/nats-server.operator.conf was rendered with (deploy/nats/README.md). */
const EXAMPLE_ARGS = ['--operator', 'aegis-operator.conf', '--tls-cert', '/etc/nats/tls/server.pem', '--tls-key', '/etc/nats/tls/server.key'];
/** Machine ids: what agent credentials and subjects are named by. */
const MACHINE_WEB = randomUUID();
const MACHINE_DB = randomUUID();

function render(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const env = { ...process.env };
  delete env.NODE_OPTIONS;
  const r = spawnSync('bash', [SCRIPT, ...args], { encoding: 'utf8', env });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

t.test('scripts/nats-config --operator and --tls-*', async (t) => {
  t.test('deploy/nats/nats-server.operator.conf is its output for the documented arguments', async (t) => {
    const r = render(EXAMPLE_ARGS);
    t.equal(r.status, 0, r.stderr);
    t.equal(readFileSync(DEPLOY_CONF, 'utf8'), r.stdout, 're-render with the arguments in deploy/nats/README.md');
    t.notMatch(r.stdout, /password|authorization/, 'no passwords in operator mode');
    t.match(r.stdout, 'include "aegis-operator.conf"');
    t.match(r.stdout, /tls \{\n  cert_file: "\/etc\/nats\/tls\/server.pem"/);
  });

  t.test('bad input is refused with a reason and exit 2', async (t) => {
    const cases: Array<[string[], RegExp]> = [
      [['--operator', '/etc/nats/x.conf'], /relative to the config file's directory/],
      [['--operator', '../x.conf'], /relative to the config file's directory/],
      [['--operator', 'x.conf', '--fleet', 'f'], /--fleet does not apply to --operator/],
      [['--operator', 'x.conf', '--machine', `${MACHINE_WEB}:host-password-1`], /--machine does not apply/],
      [['--operator', 'x.conf', '--machines-file', '/m'], /--machines-file does not apply/],
      [['--operator', 'x.conf', '--tls-cert', '/c.pem'], /--tls-cert and --tls-key go together/],
      [['--operator', 'x.conf', '--tls-ca', '/ca.pem'], /need --tls-cert and --tls-key/],
      [['--operator', 'x.conf', '--tls-cert', '/c.pem', '--tls-key', '/k.pem', '--tls-verify'], /--tls-verify needs --tls-ca/],
      [['--operator', 'x.conf', '--tls-cert', 'c.pem', '--tls-key', '/k.pem'], /--tls-cert must be a path/],
      [['--fleet', 'f', '--server-pass', 'server-password-1', '--tls-key', '/k.pem'], /go together/],
    ];
    for (const [args, re] of cases) {
      const r = render(args);
      t.equal(r.status, 2, args.join(' '));
      t.match(r.stderr, re, args.join(' '));
    }
  });

  t.test('password mode with TLS keeps its users and adds the tls block', async (t) => {
    const r = render(['--fleet', 'f', '--server-pass', 'server-password-1', '--machine', `${MACHINE_WEB}:host-password-1`, '--tls-cert', '/c.pem', '--tls-key', '/k.pem', '--tls-ca', '/ca.pem', '--tls-verify']);
    t.equal(r.status, 0, r.stderr);
    t.match(r.stdout, /tls \{\n  cert_file: "\/c.pem"\n  key_file: "\/k.pem"\n  ca_file: "\/ca.pem"\n  verify: true/);
    t.match(r.stdout, `user: "agent-${MACHINE_WEB}"`);
  });
});

t.test('a nats-server run from the rendered operator-mode config', async (t) => {
  if (!requireCapability(t, missingCommand('nats-server'))) return;
  const work = mkdtempSync(join(tmpdir(), 'aegis-nats-operator-'));
  t.teardown(() => rmSync(work, { recursive: true, force: true }));
  const ca = await makeTestCa();
  t.teardown(() => ca.cleanup());
  const leaf = await ca.issue({ cn: 'nats', dns: ['localhost'], ips: ['127.0.0.1'] });
  const keysDir = join(work, 'keys', 'nats');
  const authority = await NatsAuthority.open({ dir: keysDir, configPath: join(work, 'aegis-operator.conf') });
  const files = { 'aegis-operator.conf': authority.renderServerConfig() };

  t.test('nats-server -t accepts the full rendering', async (t) => {
    const conf = join(work, 'full.conf');
    const r = render(['--operator', 'aegis-operator.conf', '--tls-cert', leaf.certFile, '--tls-key', leaf.keyFile, '--tls-ca', ca.caFile, '--tls-verify', '--store-dir', join(work, 'js'), '-o', conf]);
    t.equal(r.status, 0, r.stderr);
    const v = spawnSync(commandPath('nats-server') as string, ['-c', conf, '-t'], { encoding: 'utf8' });
    t.equal(v.status, 0, v.stderr + v.stdout);
  });

  t.test('snapshots flow over TLS with JWT credentials; a revoked agent is dropped at once', async (t) => {
    const r = render(['--auth-only', '--operator', 'aegis-operator.conf', '--tls-cert', leaf.certFile, '--tls-key', leaf.keyFile]);
    t.equal(r.status, 0, r.stderr);
    const nats = await startNats({ config: r.stdout, files });
    t.teardown(() => nats.stop());
    // aegis-server keeps the fragment nats-server includes (same keys, same JWTs) and pushes
    // account updates through the system account.
    const authority = await NatsAuthority.open({ dir: keysDir, configPath: join(nats.dir, 'aegis-operator.conf'), push: { url: nats.url, tls: { caFile: ca.caFile } } });
    const tls = { caFile: ca.caFile };
    const slog = memoryLog();
    const server = await ServerBus.connect({ url: nats.url, creds: (await authority.issueServerCredentials()).creds, tls, log: slog });
    t.teardown(() => server.close());
    await server.ensureStream();
    await server.publishSegMap(MACHINE_WEB, 3, 'stored-before-connect');

    const issued = await authority.issueAgentCredentials({ machineId: MACHINE_WEB, fleet: 'default', hostname: 'web-1' });
    const credsFile = join(work, 'web-1.creds');
    writeFileSync(credsFile, issued.creds, { mode: 0o600 });
    const agent = await AgentBus.connect({ url: nats.url, machine: MACHINE_WEB, credsFile, tls, reconnectWaitMs: 100 });
    t.teardown(() => agent.close());
    const got: string[] = [];
    await agent.watchSegMaps([3], (_s, d) => void got.push(d));
    t.same(got, ['stored-before-connect'], 'last value by Direct Get');
    await server.publishSegMap(MACHINE_WEB, 3, 'live');
    await waitFor(() => got.includes('live'), 'live snapshot');

    const res = await authority.revokeAgent(MACHINE_WEB);
    t.same(res, { revoked: [issued.userPublicKey], pushed: true });
    await waitFor(() => !agent.isConnected(), 'the revoked agent is disconnected');
    try {
      await AgentBus.connect({ url: nats.url, machine: MACHINE_WEB, credsFile, tls });
      t.fail('a revoked agent connected');
    } catch (err) {
      t.equal((err as { code?: string }).code, 'NATS_AUTH', (err as Error).message);
    }
    t.ok(server.isConnected(), 'the server user is unaffected');
    t.same(slog.lines.filter((l) => /disconnected/.test(l.msg)), [], 'and was never disconnected');
  });

  t.test('--tls-verify: clients need a certificate of the CA as well as credentials', async (t) => {
    const r = render(['--auth-only', '--operator', 'aegis-operator.conf', '--tls-cert', leaf.certFile, '--tls-key', leaf.keyFile, '--tls-ca', ca.caFile, '--tls-verify']);
    t.equal(r.status, 0, r.stderr);
    const nats = await startNats({ config: r.stdout, files });
    t.teardown(() => nats.stop());
    const creds = (await authority.issueAgentCredentials({ machineId: MACHINE_DB, fleet: 'default', hostname: 'db-1' })).creds;
    try {
      await AgentBus.connect({ url: nats.url, machine: MACHINE_DB, creds, tls: { caFile: ca.caFile } });
      t.fail('connected without a client certificate');
    } catch (err) {
      t.ok(['NATS_TLS', 'NATS_UNREACHABLE'].includes((err as { code?: string }).code ?? ''), (err as Error).message);
    }
    const client = await ca.issue({ cn: MACHINE_DB, client: true });
    const agent = await AgentBus.connect({ url: nats.url, machine: MACHINE_DB, creds, tls: { caFile: ca.caFile, ...client } });
    t.ok(agent.isConnected(), 'with a client certificate');
    await agent.close();
  });
});
