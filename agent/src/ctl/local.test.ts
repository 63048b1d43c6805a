/**
 * aegisctl's local commands as a child process. Without a daemon: a missing socket is exit
 * 3 with a hint, a malformed key is exit 2 before any connection. Against a stand-in that
 * answers the socket API's contract on a real Unix socket: every command's table and
 * --json, and the error envelopes of activation mapped to exit codes. (End-to-end tests
 * against the real aegis-agent live with the daemon.)
 */
import t, { type Test } from 'tap';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateLicenseKey } from '../../../protocol/src/index.js';
import { aegisctl, STACK_FRAME, type CtlRun } from '../../../test/harness/ctl.js';
import { ExitCode } from './exit_codes.js';

const dir = mkdtempSync(join(tmpdir(), 'aegisctl-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

function failedCleanly(t: Test, r: CtlRun, code: number, pattern: RegExp, what: string): void {
  t.equal(r.code, code, `${what}: exit ${code}; stderr: ${r.stderr}`);
  t.match(r.stderr, pattern, `${what}: message`);
  t.equal(r.stderr.split('\n').filter((l) => l.startsWith('aegisctl: error:')).length, 1, `${what}: one error line`);
  t.notMatch(r.stderr, STACK_FRAME, `${what}: no stack trace`);
  t.equal(r.stdout, '', `${what}: nothing on stdout`);
}

const in42m = new Date(Date.now() + 42 * 60_000 + 20_000).toISOString();
const in30d = new Date(Date.now() + 30 * 86_400_000 + 20_000).toISOString();
const ago5m = new Date(Date.now() - 5 * 60_000).toISOString();

/** Answers as the contract says; `activateReply` decides what POST /v1/activate returns. */
const ANSWERS: Record<string, unknown> = {
  'GET /v1/status': {
    version: '1.2.0',
    hostname: 'web-01',
    edition: 'licensed',
    edition_reason: 'server license 3f2a',
    machine_id: 'm-123',
    tier: 'server',
    features: ['basic_features', 'segmentation_enforce'],
    datapath: { available: false, reason: 'datapath unavailable: BPF needs CAP_BPF' },
    token_path: '/var/lib/aegis/auth.token',
    token_fallback: true,
    kmod: {
      status: 'valid',
      state: 'unbound',
      module_hwid: '',
      hardware_id: 'a'.repeat(64),
      warning: 'the kernel module was loaded without hwid: it accepts a kernel token copied from any machine',
    },
    services: [
      { service_id: 7, cgroup: '/sys/fs/cgroup/web.slice', bound: true, error: null },
      { service_id: 'db', cgroup: null, bound: false, error: 'cgroup not found' },
    ],
    uptime_s: 3725,
  },
  'GET /v1/license': {
    state: 'licensed',
    machine_id: 'm-123',
    license: { license_id: 'lic-9', license_type: 'subscription', customer: { id: 'c1', name: 'Acme' }, tier: 'server', features: ['basic_features'] },
    license_expires_at: in30d,
    kernel_token_expires_at: in42m,
    last_refresh_at: ago5m,
    next_refresh_at: in42m,
    last_error: { code: 'SERVER_UNREACHABLE', message: 'connection refused' },
    retrying: true,
  },
  'GET /v1/hwid': {
    hardware_id: 'a'.repeat(64),
    version: 1,
    components: { machine_id: 'mid', system_uuid: 'uuid', cpu_model: 'Xeon', macs: ['52:54:00:00:00:01', '52:54:00:00:00:02'], disk_serials: [] },
    ignored_interfaces: ['docker0', 'veth1'],
  },
  'GET /v1/snapshots': {
    services: [
      { service_id: 7, cgroup: '/sys/fs/cgroup/web.slice', revision: 4, stage: 'promote', mode: 'enforce', ttl_left_s: 250, counters: { allowed: 1200, dropped: 3, would_drop: 0 } },
      { service_id: 8, cgroup: '/sys/fs/cgroup/db.slice', revision: null, stage: null, mode: null, ttl_left_s: null, counters: null },
    ],
  },
  'GET /v1/token': {
    path: '/etc/aegis/auth.token',
    present: true,
    header: { alg: 'EdDSA', kid: 'aegis-2026-01', typ: 'JWT' },
    claims: { aud: 'aegis-kmod', sub: 'm-123', hwid: 'a'.repeat(64), tier: 'server', features: ['basic_features'], fmask: 4097, iat: Math.floor(Date.now() / 1000) - 60, exp: Math.floor(Date.parse(in42m) / 1000) },
    expires_at: in42m,
    seconds_left: 2540,
    kmod_status: 'valid',
  },
  'POST /v1/deactivate': { deactivated: true, machine_id: 'm-123' },
  'POST /v1/reload': { reloaded: true },
  'POST /v1/refresh': { state: 'licensed', reason: 'server license', kernel_token_expires_at: in42m, last_error: null },
};

let activateReply: { status: number; body: unknown } = { status: 200, body: {} };
const received: Array<{ method: string; url: string; body: string }> = [];
let connections = 0;
let garbage = false;

function answer(req: IncomingMessage, res: ServerResponse): void {
  let body = '';
  req.on('data', (c: Buffer) => (body += c.toString('utf8')));
  req.on('end', () => {
    received.push({ method: req.method!, url: req.url!, body });
    const send = (status: number, value: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(value));
    };
    if (req.method === 'POST' && req.url === '/v1/activate') return send(activateReply.status, activateReply.body);
    if (garbage) {
      res.writeHead(200);
      return res.end('<<not json>>');
    }
    const a = ANSWERS[`${req.method} ${req.url}`];
    if (a === undefined) return send(404, { error: { code: 'NOT_FOUND', message: `no ${req.method} ${req.url}`, details: null } });
    send(200, a);
  });
}

const socket = join(dir, 'agent.sock');
const stub = createServer(answer);
stub.on('connection', () => connections++);
t.before(() => new Promise<void>((r) => stub.listen(socket, r)));
t.teardown(() => new Promise<void>((r) => stub.close(() => r())));

const run = (args: string[], stdin?: string) => aegisctl({ AEGIS_SOCKET: socket }, args, stdin);

t.test('no agent: every local command exits 3 and says where it looked', async (t) => {
  const missing = join(dir, 'nothing-here.sock');
  const key = generateLicenseKey();
  for (const args of [['status'], ['hwid'], ['license'], ['snapshots'], ['token', 'show'], ['reload'], ['deactivate'], ['refresh'], ['activate', key]]) {
    const r = await aegisctl({ AEGIS_SOCKET: missing }, args);
    failedCleanly(t, r, ExitCode.UNREACHABLE, /cannot reach aegis-agent: no such socket .*nothing-here\.sock; is aegis-agent running\? \(socket .*nothing-here\.sock/, args.join(' '));
  }
  const flag = await aegisctl({}, ['--socket', missing, 'status']);
  failedCleanly(t, flag, ExitCode.UNREACHABLE, /nothing-here\.sock/, '--socket flag');
  const dflt = await aegisctl({}, ['status', '--socket', '/nonexistent/aegis/agent.sock']);
  t.equal(dflt.code, ExitCode.UNREACHABLE);

  const notSocket = join(dir, 'plain-file');
  writeFileSync(notSocket, 'x');
  failedCleanly(t, await aegisctl({ AEGIS_SOCKET: notSocket }, ['status']), ExitCode.UNREACHABLE, /cannot reach aegis-agent: connection refused/, 'a file that is not a socket');
});

t.test('a malformed license key is refused with exit 2 before any connection', async (t) => {
  const before = connections;
  const key = generateLicenseKey();
  const typo = key.slice(0, 6) + (key[6] === '2' ? '3' : '2') + key.slice(7);
  failedCleanly(t, await run(['activate', 'AEGIS-1234']), ExitCode.USAGE, /malformed license key: expected AEGIS-XXXXX/, 'too short');
  failedCleanly(t, await run(['activate', typo]), ExitCode.USAGE, /check character does not match/, 'typo');
  failedCleanly(t, await run(['activate', 'AEGIS-!!!!!-00000-00000-00000']), ExitCode.USAGE, /contains "!"/, 'bad characters');
  failedCleanly(t, await run(['activate']), ExitCode.USAGE, /missing required argument 'key'/, 'no key');
  failedCleanly(t, await run(['activate', '-'], ''), ExitCode.USAGE, /no license key on standard input/, 'empty stdin');
  t.notMatch((await run(['activate', typo])).stderr, typo.slice(6, 11), 'the key is not echoed');
  t.equal(connections, before, 'no connection was made');
});

t.test('activate: the canonical key goes to the agent; the result is shown', async (t) => {
  const key = generateLicenseKey();
  activateReply = { status: 200, body: { machine_id: 'm-123', tier: 'server', features: ['basic_features', 'segmentation_enforce'], license_expires_at: in30d } };
  received.length = 0;
  const r = await run(['activate', key.toLowerCase().replace(/-/g, ' ')]);
  t.equal(r.code, 0, r.stderr);
  t.same(JSON.parse(received.at(-1)!.body), { license_key: key }, 'sent normalised');
  t.match(r.stdout, /activated: this host is machine m-123/);
  t.match(r.stdout, /License expires:\s+in 30d \(/);
  t.match(r.stderr, /activating/, 'progress line');
  const j = await run(['--json', 'activate', '-'], `${key}\n`);
  t.equal(j.code, 0, j.stderr);
  t.same(JSON.parse(j.stdout), activateReply.body, '--json, key from stdin');
  t.same(JSON.parse(received.at(-1)!.body), { license_key: key });
});

t.test('activate: refusals map to exit codes with a hint', async (t) => {
  const key = generateLicenseKey();
  const cases: Array<[string, number, number, RegExp]> = [
    ['SEAT_LIMIT', 409, ExitCode.LICENSING_REFUSED, /all seats taken; every seat of this license is taken/],
    ['LICENSE_REVOKED', 403, ExitCode.LICENSING_REFUSED, /revoked/],
    ['LICENSE_EXPIRED', 403, ExitCode.LICENSING_REFUSED, /expired/],
    ['VERSION_MISMATCH', 403, ExitCode.LICENSING_REFUSED, /major version/],
    ['HOST_KEY_MISMATCH', 409, ExitCode.LICENSING_REFUSED, /another host key/],
    ['NOT_FOUND', 404, ExitCode.NOT_FOUND, /check it for typos/],
    ['SERVER_UNREACHABLE', 503, ExitCode.UNREACHABLE, /cannot reach aegis-server/],
    ['ALREADY_ACTIVATING', 409, ExitCode.FAILURE, /already under way/],
    ['INTERNAL', 500, ExitCode.FAILURE, /journalctl -u aegis-agent/],
  ];
  for (const [code, status, exit, pattern] of cases) {
    const message = code === 'SEAT_LIMIT' ? 'all seats taken' : `refused: ${code.toLowerCase()}`;
    activateReply = { status, body: { error: { code, message, details: null } } };
    failedCleanly(t, await run(['activate', key]), exit, pattern, code);
    failedCleanly(t, await run(['--json', 'activate', key]), exit, pattern, `${code} --json`);
  }
});

t.test('status, hwid, license, snapshots, token show: tables and --json', async (t) => {
  const status = await run(['status']);
  t.equal(status.code, 0, status.stderr);
  t.match(status.stdout, /Edition:\s+licensed \(server license 3f2a\)/);
  t.match(status.stdout, /Datapath:\s+unavailable: BPF needs CAP_BPF\n/);
  t.match(status.stdout, /Kernel token:\s+\/var\/lib\/aegis\/auth\.token \(fallback/);
  t.match(status.stdout, /Uptime:\s+1h 2m/);
  t.match(status.stdout, /Kernel module:\s+valid \(WARNING: the kernel module was loaded without hwid: it accepts a kernel token copied from any machine\)/, 'an unbound module is shown loudly');
  t.match(status.stdout, /^SERVICE\s+CGROUP\s+BOUND\s+ERROR$/m);
  t.match(status.stdout, /^7\s+\/sys\/fs\/cgroup\/web\.slice\s+yes\s+-$/m);
  t.match(status.stdout, /^db\s+-\s+no\s+cgroup not found$/m);

  const hwid = await run(['hwid']);
  t.equal(hwid.code, 0);
  t.match(hwid.stdout, new RegExp(`Hardware id:\\s+${'a'.repeat(64)}`));
  t.match(hwid.stdout, /MACs:\s+52:54:00:00:00:01, 52:54:00:00:00:02/);
  t.match(hwid.stdout, /Board serial:\s+-/);
  t.match(hwid.stdout, /Ignored interfaces:\s+docker0, veth1/);

  const lic = await run(['license']);
  t.equal(lic.code, 0);
  t.match(lic.stdout, /State:\s+licensed \(retrying\)/);
  t.match(lic.stdout, /Customer:\s+Acme/);
  // The answers were made when the file loaded, so allow for the time the run took.
  t.match(lic.stdout, /Kernel token expires:\s+in 4\dm( \d+s)? \(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\)/);
  t.match(lic.stdout, /Last refresh:\s+\dm( \d+s)? ago \(/);
  t.match(lic.stdout, /Last error:\s+SERVER_UNREACHABLE: connection refused/);

  const snaps = await run(['snapshots']);
  t.equal(snaps.code, 0);
  t.match(snaps.stdout, /^SERVICE\s+CGROUP\s+REV\s+STAGE\s+MODE\s+TTL LEFT\s+ALLOWED\s+DROPPED\s+WOULD DROP$/m);
  t.match(snaps.stdout, /^7\s+\S+web\.slice\s+4\s+promote\s+enforce\s+4m 10s\s+1200\s+3\s+0$/m);
  t.match(snaps.stdout, /^8\s+\S+db\.slice\s+-\s+-\s+-\s+-\s+-\s+-\s+-$/m);

  const tok = await run(['token', 'show']);
  t.equal(tok.code, 0);
  t.match(tok.stdout, /Key id:\s+aegis-2026-01/);
  t.match(tok.stdout, /Feature mask:\s+0x1001 \(4097\)/);
  t.match(tok.stdout, /Expires:\s+in 4\dm( \d+s)? \(/);
  t.match(tok.stdout, /Kernel module:\s+valid/);
  const savedToken = ANSWERS['GET /v1/token'];
  ANSWERS['GET /v1/token'] = { ...(savedToken as object), kmod_hwid: { state: 'mismatch', module_hwid: 'b'.repeat(64), hardware_id: 'a'.repeat(64), warning: 'loaded with another hwid' } };
  t.match((await run(['token', 'show'])).stdout, /Kernel module:\s+valid \(WARNING: loaded with another hwid\)/, 'a mismatched module is shown loudly');
  ANSWERS['GET /v1/token'] = { ...(savedToken as object), kmod_hwid: { state: 'bound', module_hwid: 'a'.repeat(64), hardware_id: 'a'.repeat(64), warning: null } };
  t.match((await run(['token', 'show'])).stdout, /Kernel module:\s+valid \(hwid bound to this machine\)/);
  ANSWERS['GET /v1/token'] = savedToken;

  for (const [args, path] of [
    [['status'], 'GET /v1/status'],
    [['hwid'], 'GET /v1/hwid'],
    [['license'], 'GET /v1/license'],
    [['snapshots'], 'GET /v1/snapshots'],
    [['token', 'show'], 'GET /v1/token'],
    [['reload'], 'POST /v1/reload'],
    [['deactivate'], 'POST /v1/deactivate'],
    [['refresh'], 'POST /v1/refresh'],
  ] as Array<[string[], string]>) {
    const r = await run(['--json', ...args]);
    t.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
    t.same(JSON.parse(r.stdout), ANSWERS[path], `${args.join(' ')} --json is the agent's answer`);
  }
  t.match((await run(['reload'])).stdout, /reloaded/);
  t.match((await run(['deactivate'])).stdout, /deactivated machine m-123/);
});

t.test('odd answers from the agent: one clear line', async (t) => {
  const saved = ANSWERS['GET /v1/token'];
  ANSWERS['GET /v1/token'] = { path: '/etc/aegis/auth.token', present: false, header: null, claims: null, expires_at: null, seconds_left: null, kmod_status: null };
  const absent = await run(['token', 'show']);
  t.equal(absent.code, 0);
  t.match(absent.stdout, /Present:\s+no/);
  ANSWERS['GET /v1/token'] = saved;
  ANSWERS['GET /v1/status'] = undefined;
  failedCleanly(t, await run(['status']), ExitCode.NOT_FOUND, /no GET \/v1\/status/, 'route missing');
  garbage = true;
  t.teardown(() => {
    garbage = false;
  });
  failedCleanly(t, await run(['license']), ExitCode.FAILURE, /unexpected answer from aegis-agent \(HTTP 200, not JSON\)/, 'not JSON');
});
