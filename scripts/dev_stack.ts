/**
 * `npm start`: the whole of Aegis on this machine — nats-server (the deploy/ permission
 * model in operator mode, data in ./var), aegis-server on SQLite, and an aegis-agent for
 * this host. The first run creates a demo customer, a fleet license, activates this host
 * and posts a canary snapshot. Ctrl-C stops everything.
 *
 * NATS runs in operator mode because agent users are named by machine id, which exists
 * only once the host has activated: aegis-server signs each machine its credentials at
 * activation (kept by the agent as <state>/nats.creds), so nothing here needs to know the
 * machine id beforehand, and the agent reconnects with them as soon as it has them.
 *
 * Settings: AEGIS_DEV_DIR (default ./var), AEGIS_LISTEN (127.0.0.1:8000),
 * AEGIS_DEV_NATS_PORT (4222).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { connect as tcpConnect } from 'node:net';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NatsAuthority } from '../server/src/nats/credentials.js';

const ROOT = resolve(fileURLToPath(new URL('../../', import.meta.url)));
const DIR = resolve(process.env.AEGIS_DEV_DIR ?? join(ROOT, 'var'));
const LISTEN = process.env.AEGIS_LISTEN ?? '127.0.0.1:8000';
const NATS_PORT = Number(process.env.AEGIS_DEV_NATS_PORT ?? 4222);
const SERVER_URL = `http://${LISTEN}`;
const NATS_URL = `nats://127.0.0.1:${NATS_PORT}`;
const HOST = (process.env.AEGIS_HOSTNAME ?? hostname()).replace(/[^A-Za-z0-9_-]/g, '-').slice(0, 64) || 'localhost';
const FLEET = 'dev';
const DEMO_SERVICE = 100;
const STATE = join(DIR, 'dev-stack.json');
const KEYS_DIR = join(DIR, 'keys');
/** The operator-mode fragment aegis-server writes and nats.conf includes (same directory: includes resolve there). */
const OPERATOR_CONF = 'aegis-operator.conf';

interface DevState {
  admin_key?: string;
  fleet_key: string;
  customer_id?: string;
  license_id?: string;
  license_key?: string;
}

const children: Array<{ name: string; proc: ChildProcess }> = [];
const say = (s: string) => process.stdout.write(`${s}\n`);

function loadState(): DevState {
  if (existsSync(STATE)) return JSON.parse(readFileSync(STATE, 'utf8')) as DevState;
  return { fleet_key: randomBytes(32).toString('base64') };
}

function saveState(s: DevState): void {
  writeFileSync(STATE, JSON.stringify(s, null, 2) + '\n', { mode: 0o600 });
}

function start(name: string, cmd: string, args: string[], env: NodeJS.ProcessEnv, logFile: string): ChildProcess {
  const proc = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const log = join(DIR, logFile);
  writeFileSync(log, '');
  const append = (d: Buffer) => writeFileSync(log, d, { flag: 'a' });
  proc.stdout!.on('data', append);
  proc.stderr!.on('data', append);
  proc.once('exit', (code, signal) => {
    if (!stopping) {
      say(`dev-stack: ${name} exited (${code ?? signal}); see ${log}`);
      void stopAll(1);
    }
  });
  children.push({ name, proc });
  return proc;
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check().catch(() => false))) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 150));
  }
}

const portOpen = (port: number) =>
  new Promise<boolean>((res) => {
    const s = tcpConnect(port, '127.0.0.1');
    s.once('connect', () => (s.destroy(), res(true)));
    s.once('error', () => res(false));
  });

async function api(method: string, path: string, body: unknown, key?: string): Promise<any> {
  const res = await fetch(SERVER_URL + path, {
    method,
    headers: { 'content-type': 'application/json', ...(key ? { 'x-api-key': key } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const out = (await res.json()) as any;
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(out)}`);
  return out;
}

function agentApi(socket: string, method: string, path: string, body?: unknown): Promise<any> {
  return new Promise((resolveP, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = request({ socketPath: socket, method, path, headers: data ? { 'content-type': 'application/json' } : {} }, (res) => {
      let out = '';
      res.on('data', (c) => (out += c));
      res.on('end', () => resolveP(out ? JSON.parse(out) : null));
    });
    req.on('error', reject);
    req.end(data);
  });
}

let stopping = false;
async function stopAll(code: number): Promise<void> {
  if (stopping) return;
  stopping = true;
  say('\ndev-stack: stopping agent, server and nats-server…');
  for (const { proc } of [...children].reverse()) {
    if (proc.exitCode !== null || proc.signalCode !== null) continue;
    proc.kill('SIGTERM');
    await new Promise<void>((r) => {
      const t = setTimeout(() => (proc.kill('SIGKILL'), r()), 6000);
      proc.once('exit', () => (clearTimeout(t), r()));
    });
  }
  say('dev-stack: stopped');
  process.exit(code);
}

async function main(): Promise<void> {
  mkdirSync(DIR, { recursive: true, mode: 0o700 });
  const st = loadState();
  const firstRun = st.license_key === undefined;
  saveState(st);

  // nats-server in operator mode (deploy/nats): the operator and account JWTs come from the
  // fragment aegis-server's NATS authority writes; opening it here, with the keys aegis-server
  // will use, writes the fragment before nats-server needs it. aegis-server then owns it
  // (revocations are pushed to nats-server and written there).
  const operatorConf = join(DIR, OPERATOR_CONF);
  await NatsAuthority.open({ dir: join(KEYS_DIR, 'nats'), configPath: operatorConf });
  const conf = join(DIR, 'nats.conf');
  const r = spawnSync(
    process.execPath,
    [join(ROOT, 'scripts/nats-config.mjs'), '--operator', OPERATOR_CONF, '--store-dir', join(DIR, 'nats'), '--listen', `127.0.0.1:${NATS_PORT}`, '--http', 'off', '-o', conf],
    { encoding: 'utf8' },
  );
  if (r.status !== 0) throw new Error(`nats-config failed: ${r.stderr}`);
  start('nats-server', 'nats-server', ['-c', conf], {}, 'nats.log');
  await waitFor('nats-server', () => portOpen(NATS_PORT));

  const server = start(
    'aegis-server',
    process.execPath,
    [join(ROOT, 'dist/server/src/cli.js'), '--listen', LISTEN],
    {
      DATABASE_URL: `sqlite:${join(DIR, 'aegis.db')}`,
      AEGIS_KEYS_DIR: KEYS_DIR,
      NATS_URL,
      // Operator mode: aegis-server connects with credentials it issues itself and gives each
      // machine its own at activation.
      AEGIS_NATS_OPERATOR_CONFIG: operatorConf,
      AEGIS_FLEET_KEY: st.fleet_key,
      LOG_FORMAT: 'text',
    },
    'server.log',
  );
  let banner = '';
  server.stdout!.on('data', (d: Buffer) => (banner += d.toString()));
  await waitFor('aegis-server', async () => (await fetch(`${SERVER_URL}/health`)).ok);
  const printed = /aegis_sk_[A-Za-z0-9_-]{43}/.exec(banner)?.[0];
  if (printed && !st.admin_key) {
    st.admin_key = printed;
    saveState(st);
  }
  if (!st.admin_key) throw new Error(`no admin key: remove ${DIR} to start over`);

  if (firstRun) {
    const cust = await api('POST', '/api/v1/customers', { name: 'Demo Customer', email: 'demo@example.com', company: 'Demo Inc' }, st.admin_key);
    const lic = await api('POST', '/api/v1/licenses', { customer_id: cust.id, tier: 'server', license_type: 'perpetual', fleet: FLEET, max_machines: 5 }, st.admin_key);
    Object.assign(st, { customer_id: cust.id, license_id: lic.id, license_key: lic.license_key });
    saveState(st);
  }

  // The agent: BPF needs root; without it the agent runs on and says why in its status.
  const mount = readFileSync('/proc/self/mounts', 'utf8').split('\n').map((l) => l.split(' ')).find((f) => f[2] === 'cgroup2')?.[1];
  const services: Record<string, string> = {};
  if (mount && process.getuid?.() === 0) {
    const cg = join(mount, 'aegis-demo');
    mkdirSync(cg, { recursive: true });
    services[String(DEMO_SERVICE)] = cg;
  }
  // The agent holds the dev fleet's own key (derived from the server's master fleet key at
  // the fleet's current generation), as an operator would install it.
  const shown = spawnSync(process.execPath, [join(ROOT, 'dist/server/src/cli.js'), 'fleet-key', 'show', FLEET], {
    encoding: 'utf8',
    env: { ...process.env, DATABASE_URL: `sqlite:${join(DIR, 'aegis.db')}`, AEGIS_KEYS_DIR: join(DIR, 'keys'), AEGIS_FLEET_KEY: st.fleet_key },
  });
  if (shown.status !== 0) throw new Error(`aegis-server fleet-key show ${FLEET}: ${shown.stderr}`);
  const fleetKey = shown.stdout.trim();
  const socket = join(DIR, 'agent.sock');
  const agentConfig = join(DIR, 'agent.json');
  writeFileSync(
    agentConfig,
    JSON.stringify(
      {
        server_url: SERVER_URL,
        // No NATS user: the credentials come with activation (<state>/nats.creds).
        nats_url: NATS_URL,
        fleet: FLEET,
        fleet_key: fleetKey,
        hostname: HOST,
        services,
        state_dir: join(DIR, 'agent-state'),
        socket_path: socket,
        token_path: join(DIR, 'auth.token'),
        pin_root: '/sys/fs/bpf/aegis-dev',
        log_format: 'text',
      },
      null,
      2,
    ),
    { mode: 0o600 },
  );
  start('aegis-agent', process.execPath, [join(ROOT, 'dist/agent/src/main.js'), '--config', agentConfig], {}, 'agent.log');
  await waitFor('aegis-agent', async () => (await agentApi(socket, 'GET', '/v1/status')) !== null);

  const status = await agentApi(socket, 'GET', '/v1/status');
  if (firstRun || status.machine_id === null) {
    const activated = await agentApi(socket, 'POST', '/v1/activate', { license_key: st.license_key });
    if (typeof activated?.machine_id !== 'string') throw new Error(`activation failed: ${JSON.stringify(activated)}`);
    if (services[String(DEMO_SERVICE)]) {
      // Addressed to this machine by id: hostnames are labels several machines may share.
      await api(
        'POST',
        `/seg/maps?target_machine=${activated.machine_id}`,
        {
          version: 1,
          service_id: DEMO_SERVICE,
          edges: [
            { dst_cidr: '127.0.0.1/32', proto: 'tcp', port: Number(LISTEN.split(':')[1]) },
            { dst_cidr: '127.0.0.53/32', proto: 'udp', port: 53 },
          ],
          ttl_seconds: 3600,
          meta: { note: 'demo canary from npm start' },
        },
        st.admin_key,
      );
    }
  }
  // The agent reconnects NATS with the credentials activation gave it; the demo snapshot
  // reaches it that way (or by the HTTP fallback). Wait a little for both, then say what is.
  const demoApplied = async () =>
    ((await agentApi(socket, 'GET', '/v1/snapshots')) as { services: Array<{ service_id: number; revision: number | null }> }).services.some(
      (v) => v.service_id === DEMO_SERVICE && v.revision !== null,
    );
  await waitFor('NATS', async () => (await agentApi(socket, 'GET', '/v1/status')).nats.connected === true, 15_000).catch(() => undefined);
  if (services[String(DEMO_SERVICE)]) await waitFor('the demo snapshot', demoApplied, 30_000).catch(() => undefined);
  const now = await agentApi(socket, 'GET', '/v1/status');
  const demo = ((await agentApi(socket, 'GET', '/v1/snapshots')) as { services: Array<{ service_id: number; revision: number | null; stage: string | null; mode: string | null }> }).services.find(
    (v) => v.service_id === DEMO_SERVICE,
  );
  const ctl = `node ${join(ROOT, 'dist/agent/src/ctl/main.js')}`;
  say('');
  say('Aegis is running:');
  say(`  nats-server   ${NATS_URL}  (JetStream, operator mode; data ${join(DIR, 'nats')})`);
  say(`  aegis-server  ${SERVER_URL}  (SQLite ${join(DIR, 'aegis.db')}; log ${join(DIR, 'server.log')})`);
  say(`  aegis-agent   host ${HOST}, machine ${now.machine_id ?? '(not activated)'}, socket ${socket}: ${now.edition}${now.tier ? ` (${now.tier})` : ''}; ${now.datapath.available ? 'eBPF datapath on' : now.datapath.reason}`);
  say(`                NATS ${now.nats.connected ? 'connected with its issued credentials' : 'not connected (HTTP fallback)'}; log ${join(DIR, 'agent.log')}`);
  if (demo?.revision != null) {
    say(`  snapshot      service ${DEMO_SERVICE} revision ${demo.revision}, stage ${demo.stage}, ${demo.mode} mode (via ${now.snapshot_source ?? 'unknown'})`);
  } else if (services[String(DEMO_SERVICE)]) {
    say(`  snapshot      service ${DEMO_SERVICE}: none applied yet`);
  }
  say(`  admin API key ${st.admin_key}  (kept in ${STATE})`);
  say('');
  say('Try:');
  say(`  ${ctl} --socket ${socket} status`);
  say(`  ${ctl} --socket ${socket} snapshots`);
  say(`  AEGIS_API_KEY=${st.admin_key} ${ctl} --server ${SERVER_URL} licenses list`);
  say('');
  say('Ctrl-C stops everything.');
}

process.on('SIGINT', () => void stopAll(0));
process.on('SIGTERM', () => void stopAll(0));
main().catch((e: unknown) => {
  say(`dev-stack: ${(e as Error).message}`);
  void stopAll(1);
});
