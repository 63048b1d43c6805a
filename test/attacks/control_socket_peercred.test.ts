/**
 * Attack: a local user who may read the agent's control socket (a member of socket_group,
 * there so it can run `aegisctl status`) uses the same socket to replace or withdraw
 * segmentation policy, deactivate the host's license or reload its configuration. The
 * agent must ask the kernel who is calling (SO_PEERCRED, and the caller's groups) and let
 * only root and members of admin_group write; everyone else gets 403 FORBIDDEN_CALLER and
 * nothing changes. A user in neither group cannot even connect (socket mode 0660).
 * (No database is involved: the control socket is the agent's.)
 */
import t from 'tap';
import { execFile, spawnSync } from 'node:child_process';
import { chmodSync } from 'node:fs';
import { join } from 'node:path';
import { agentDir, cleanupDir, startAgent, type TestAgent } from '../harness/agent.js';
import { missingCommand, missingRoot, requireCapability } from '../harness/capabilities.js';
import { CTL } from '../harness/ctl.js';

const SERVICE = 101;
const NOBODY = 65534;
const tag = `${process.pid.toString(36)}${Math.random().toString(36).slice(2, 5)}`;
const READ_GROUP = `aegis-rd-${tag}`;
const ADMIN_GROUP = `aegis-adm-${tag}`;

/** Who calls: a uid, its primary gid and its supplementary groups (set with setpriv). */
interface Caller {
  uid: number;
  gid: number;
  groups: number[];
}

type Answer = { status: number; body: any } | { errno: string };

/** A tiny HTTP-over-Unix-socket client run as the caller: prints one JSON line. */
const CLIENT = `
const [socketPath, method, path, body] = process.argv.slice(1);
const data = body === 'null' ? undefined : body;
const req = require('node:http').request({ socketPath, method, path, headers: data ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } : {} }, (res) => {
  let out = '';
  res.on('data', (c) => (out += c));
  res.on('end', () => console.log(JSON.stringify({ status: res.statusCode, body: out ? JSON.parse(out) : null })));
});
req.on('error', (e) => console.log(JSON.stringify({ errno: e.code ?? e.message })));
req.end(data);
`;

function asUser(c: Caller, argv: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const groups = c.groups.length > 0 ? ['--groups', c.groups.join(',')] : ['--clear-groups'];
  return new Promise((resolve) => {
    execFile(
      'setpriv',
      // env -u: the test runner's process tracking (NODE_OPTIONS) would write where nobody may.
      ['--reuid', String(c.uid), '--regid', String(c.gid), ...groups, '--', 'env', '-u', 'NODE_OPTIONS', process.execPath, ...argv],
      { env: { PATH: process.env.PATH, HOME: '/', ...env }, encoding: 'utf8', timeout: 30_000 },
      (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

async function call(c: Caller, agent: TestAgent, method: string, path: string, body: unknown = null): Promise<Answer> {
  const r = await asUser(c, ['-e', CLIENT, agent.socket, method, path, JSON.stringify(body)]);
  const line = r.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as Answer;
  } catch {
    throw new Error(`client as uid ${c.uid} printed no answer (exit ${r.code}): ${r.stderr}`);
  }
}

const statusOf = (a: Answer) => ('status' in a ? a.status : a.errno);
const codeOf = (a: Answer) => ('status' in a ? (a.body?.error?.code ?? null) : a.errno);

function gidOf(name: string): number {
  return Number(spawnSync('getent', ['group', name], { encoding: 'utf8' }).stdout.split(':')[2]);
}

const snapshot = { version: 1, service_id: SERVICE, edges: [{ dst_cidr: '10.0.0.0/8', proto: 'tcp', port: 443 }], ttl_seconds: 600 };

t.test('only root and admin_group members may write through the control socket', async (t) => {
  if (!requireCapability(t, missingRoot() ?? missingCommand('setpriv', 'groupadd', 'groupdel', 'getent'))) return;
  for (const g of [READ_GROUP, ADMIN_GROUP]) {
    const r = spawnSync('groupadd', [g], { encoding: 'utf8' });
    t.equal(r.status, 0, `groupadd ${g}: ${r.stderr}`);
    t.teardown(() => void spawnSync('groupdel', [g]));
  }
  const readGid = gidOf(READ_GROUP);
  const adminGid = gidOf(ADMIN_GROUP);
  const otherGid = gidOf('nogroup') || NOBODY;

  const dir = agentDir();
  t.teardown(() => cleanupDir(dir));
  chmodSync(dir, 0o755); // others may reach the socket; its own mode decides who connects
  const agent = await startAgent({
    serverUrl: 'http://127.0.0.1:9',
    dir,
    services: { [String(SERVICE)]: join(dir, 'no-cgroup') },
    extraConfig: { socket_group: READ_GROUP, admin_group: ADMIN_GROUP },
  });
  t.teardown(() => agent.stop());
  await agent.waitReady();

  const reader: Caller = { uid: NOBODY, gid: readGid, groups: [] };
  const supplementaryReader: Caller = { uid: NOBODY, gid: otherGid, groups: [readGid] };
  const admin: Caller = { uid: NOBODY, gid: otherGid, groups: [readGid, adminGid] };
  const outsider: Caller = { uid: NOBODY, gid: otherGid, groups: [] };
  const root: Caller = { uid: 0, gid: 0, groups: [] };

  const revision = async () => {
    const services = (await agent.api('GET', '/v1/snapshots')).body.services as Array<{ service_id: number; revision: number | null }>;
    return services.find((s) => s.service_id === SERVICE)?.revision ?? null;
  };

  await t.test('a socket_group member reads: status, snapshots, license', async (t) => {
    for (const c of [reader, supplementaryReader]) {
      for (const path of ['/v1/status', '/v1/snapshots', '/v1/license']) {
        t.equal(statusOf(await call(c, agent, 'GET', path)), 200, `GET ${path} as gid ${c.gid} groups [${c.groups}]`);
      }
    }
  });

  await t.test('a socket_group member cannot replace, withdraw, deactivate, activate or reload', async (t) => {
    const writes: Array<[string, string, unknown]> = [
      ['PUT', `/v1/snapshots/${SERVICE}`, snapshot],
      ['DELETE', `/v1/snapshots/${SERVICE}`, null],
      ['POST', '/v1/deactivate', null],
      ['POST', '/v1/activate', { license_key: 'AEGIS-00000-00000-00000-00000' }],
      ['POST', '/v1/refresh', null],
      ['POST', '/v1/reload', null],
    ];
    for (const c of [reader, supplementaryReader]) {
      for (const [method, path, body] of writes) {
        const a = await call(c, agent, method, path, body);
        t.equal(statusOf(a), 403, `${method} ${path} refused`);
        t.equal(codeOf(a), 'FORBIDDEN_CALLER', `${method} ${path}: stable code`);
        const message = 'status' in a ? String(a.body?.error?.message) : '';
        t.match(message, `uid ${NOBODY}`, 'the message names the caller');
        t.match(message, ADMIN_GROUP, 'and what it would need');
      }
    }
    t.equal(await revision(), null, 'no snapshot was installed');
    t.ok(agent.logs.some((l) => l.includes('control socket caller refused') && l.includes(`"uid":${NOBODY}`)), 'the refusal is logged with the uid');
  });

  await t.test('aegisctl shows the refusal and exits 4 (unauthorized)', async (t) => {
    const r = await asUser(reader, [CTL, 'reload'], { AEGIS_SOCKET: agent.socket });
    t.equal(r.code, 4, `exit code (stderr: ${r.stderr})`);
    t.match(r.stderr, `uid ${NOBODY}`);
    t.match(r.stderr, 'may not POST /v1/reload');
    t.match(r.stderr, /admin_group/);
    t.notMatch(r.stderr, /^\s+at .+[:(]\d+/m, 'no stack trace');
  });

  await t.test('a user in neither group cannot connect at all', async (t) => {
    t.equal(statusOf(await call(outsider, agent, 'GET', '/v1/status')), 'EACCES', 'socket mode 0660 keeps it out');
    const onlyAdmin: Caller = { uid: NOBODY, gid: adminGid, groups: [] };
    t.equal(statusOf(await call(onlyAdmin, agent, 'GET', '/v1/status')), 'EACCES', 'admin_group alone does not open the socket');
  });

  await t.test('an admin_group member (a supplementary group) writes', async (t) => {
    const put = await call(admin, agent, 'PUT', `/v1/snapshots/${SERVICE}`, snapshot);
    t.equal(statusOf(put), 200, `PUT as admin: ${JSON.stringify(put)}`);
    t.not(await revision(), null, 'the snapshot is installed');
    t.equal(statusOf(await call(admin, agent, 'DELETE', `/v1/snapshots/${SERVICE}`)), 200, 'DELETE as admin');
    t.equal(await revision(), null, 'and withdrawn');
    t.equal(statusOf(await call(admin, agent, 'POST', '/v1/reload')), 200, 'reload as admin');
  });

  await t.test('root writes', async (t) => {
    t.equal(statusOf(await call(root, agent, 'PUT', `/v1/snapshots/${SERVICE}`, snapshot)), 200, 'PUT as root');
    t.not(await revision(), null, 'installed');
    t.equal(statusOf(await call(root, agent, 'DELETE', `/v1/snapshots/${SERVICE}`)), 200, 'DELETE as root');
    const d = await call(root, agent, 'POST', '/v1/deactivate');
    t.equal(codeOf(d), 'NOT_ACTIVATED', 'deactivate as root gets past the caller check (this host has no license to release)');
  });
});
