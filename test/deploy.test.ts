/** The systemd unit, the install target, and the daemon's systemd conversation. */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { requireCapability, missingCommand } from './harness/capabilities.js';
import { startAgent, agentDir, cleanupDir } from './harness/agent.js';
import { makeTestCa } from './harness/tls.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const UNIT = join(ROOT, 'deploy/systemd/aegis-agent.service');

t.test('the unit declares what the daemon relies on', async (t) => {
  const unit = readFileSync(UNIT, 'utf8');
  for (const line of [
    'Type=notify',
    'WatchdogSec=30s',
    'Restart=on-failure',
    'ProtectSystem=strict',
    'ReadWritePaths=/etc/aegis /var/lib/aegis /run/aegis',
    'CapabilityBoundingSet=CAP_BPF CAP_PERFMON CAP_NET_ADMIN CAP_CHOWN',
    'ExecReload=/bin/kill -HUP $MAINPID',
  ]) {
    t.ok(unit.split('\n').includes(line), line);
  }
});

t.test('install target stages the tree, commands, config and unit; systemd-analyze verify passes', async (t) => {
  if (!requireCapability(t, missingCommand('systemd-analyze'))) return;
  const dest = mkdtempSync(join(tmpdir(), 'aegis-install-'));
  t.teardown(() => rmSync(dest, { recursive: true, force: true }));
  const r = spawnSync('bash', [join(ROOT, 'scripts/install-agent'), '--destdir', dest], { encoding: 'utf8' });
  t.equal(r.status, 0, r.stderr);
  const lib = join(dest, 'usr/local/lib/aegis');
  for (const f of ['dist/agent/src/main.js', 'dist/agent/src/ctl/main.js', 'dist/protocol/src/index.js', 'dist/runtime/src/atomic_file.js', 'build/Release/aegis.node', 'node_modules/commander/package.json']) {
    t.ok(existsSync(join(lib, f)), f);
  }
  // No test code is installed: no *.test.js (or its map), no test/ directory, no test helpers.
  const dist = readdirSync(join(lib, 'dist'), { recursive: true, withFileTypes: true });
  const testish = dist
    .filter((e) => (e.isDirectory() && (e.name === 'test' || e.name === 'bench')) || /\.test\.js(\.map)?$|^test_support\.js/.test(e.name))
    .map((e) => join(e.parentPath, e.name).slice(lib.length + 1));
  t.same(testish, [], 'no tests, test directories or test helpers in the installed tree');
  for (const cmd of ['aegis-agent', 'aegisctl']) {
    const p = join(dest, 'usr/local/bin', cmd);
    t.equal(statSync(p).mode & 0o111, 0o111, `${cmd} is executable`);
    t.match(readFileSync(p, 'utf8'), '/usr/local/lib/aegis/dist/');
  }
  const cfg = JSON.parse(readFileSync(join(dest, 'etc/aegis/agent.json'), 'utf8'));
  t.equal(cfg.token_path, '/etc/aegis/auth.token');
  // The staged tree runs on its own (the wrapper points at the final prefix).
  const v = spawnSync(process.execPath, [join(lib, 'dist/agent/src/ctl/main.js'), '--version'], { encoding: 'utf8' });
  t.equal(v.status, 0, v.stderr);
  const a = spawnSync(process.execPath, [join(lib, 'dist/agent/src/main.js'), '--version'], { encoding: 'utf8' });
  t.equal(a.status, 0, a.stderr);
  const help = spawnSync(process.execPath, [join(lib, 'dist/agent/src/main.js'), '--help'], { encoding: 'utf8' });
  t.equal(help.status, 0, help.stderr);
  t.match(help.stdout, /aegis-agent/, 'aegis-agent --help runs from the installed tree');
  const hw = spawnSync(process.execPath, [join(lib, 'dist/agent/src/main.js'), 'hwid'], { encoding: 'utf8' });
  t.equal(hw.status, 0, hw.stderr);
  t.match(hw.stdout, /^[0-9a-f]{64}\n$/, 'aegis-agent hwid prints the hardware id and exits');
  // verify resolves ExecStart on this filesystem, so point it at the staged command.
  const unitPath = join(dest, 'etc/systemd/system/aegis-agent.service');
  const unit = readFileSync(unitPath, 'utf8');
  const probe = join(dest, 'aegis-agent.service');
  writeFileSync(probe, unit.replace('/usr/local/bin/aegis-agent', join(dest, 'usr/local/bin/aegis-agent')));
  const verify = spawnSync('systemd-analyze', ['verify', probe], { encoding: 'utf8' });
  t.equal(verify.status, 0, `systemd-analyze verify: ${verify.stderr}`);
  t.equal(verify.stderr.trim(), '', 'no warnings');
  // Re-running keeps an operator's config.
  writeFileSync(join(dest, 'etc/aegis/agent.json'), '{"fleet":"mine"}');
  t.equal(spawnSync('bash', [join(ROOT, 'scripts/install-agent'), '--destdir', dest]).status, 0);
  t.equal(readFileSync(join(dest, 'etc/aegis/agent.json'), 'utf8'), '{"fleet":"mine"}', 'config kept');
});

t.test('with --kmod-pubkeys the module is staged with modprobe options binding it to the hardware id', async (t) => {
  const dest = mkdtempSync(join(tmpdir(), 'aegis-install-kmod-'));
  t.teardown(() => rmSync(dest, { recursive: true, force: true }));
  // A stand-in for the built module: the install copies it, it is never loaded here.
  const ko = join(dest, 'aegis.ko');
  writeFileSync(ko, 'not a real module');
  const install = (...extra: string[]) =>
    spawnSync('bash', [join(ROOT, 'scripts/install-agent'), '--destdir', join(dest, 'root'), '--kmod-module', ko, '--kernel-version', '6.1.0-test', ...extra], { encoding: 'utf8' });
  const hwid = 'AB'.repeat(32);
  const noHwid = install('--kmod-pubkeys', 'aegis-2026-01=abc_DEF-123');
  t.equal(noHwid.status, 2, 'a staged image needs --hwid: the build machine is not the one it runs on');
  t.match(noHwid.stderr, /--hwid is required/);
  t.equal(install('--kmod-pubkeys', 'k=x y', '--hwid', hwid).status, 2, 'pubkeys that could break the options line are refused');
  t.equal(install('--kmod-pubkeys', 'k=x', '--hwid', 'abc').status, 2, 'a hwid that is no hardware id is refused');
  const ok = install('--kmod-pubkeys', 'aegis-2026-01=abc_DEF-123', '--hwid', hwid);
  t.equal(ok.status, 0, ok.stderr);
  const root = join(dest, 'root');
  t.equal(readFileSync(join(root, 'lib/modules/6.1.0-test/extra/aegis.ko'), 'utf8'), 'not a real module', 'module installed for its kernel');
  const conf = readFileSync(join(root, 'etc/modprobe.d/aegis.conf'), 'utf8');
  t.ok(conf.split('\n').includes(`options aegis hwid=${hwid.toLowerCase()} pubkeys=aegis-2026-01=abc_DEF-123`), conf);
  t.equal(readFileSync(join(root, 'etc/modules-load.d/aegis.conf'), 'utf8'), 'aegis\n', 'loaded at boot');
});

t.test('--trusted-jwks and --ca-cert pin the trust anchors at install', async (t) => {
  const dest = mkdtempSync(join(tmpdir(), 'aegis-install-pins-'));
  t.teardown(() => rmSync(dest, { recursive: true, force: true }));
  const ca = await makeTestCa();
  t.teardown(() => ca.cleanup());
  const { publicKey } = generateKeyPairSync('ed25519');
  const jwksFile = join(dest, 'jwks.json');
  writeFileSync(jwksFile, JSON.stringify({ keys: [{ ...publicKey.export({ format: 'jwk' }), kid: 'aegis-2026-01', alg: 'EdDSA', use: 'sig' }] }));
  const junk = join(dest, 'junk.json');
  writeFileSync(junk, '{"keys":[]}');
  const install = (...extra: string[]) => spawnSync('bash', [join(ROOT, 'scripts/install-agent'), '--destdir', join(dest, 'root'), ...extra], { encoding: 'utf8' });
  const bad = install('--trusted-jwks', junk);
  t.equal(bad.status, 2, 'a key set without Ed25519 keys is refused before anything is installed');
  t.match(bad.stderr, /not a JWKS with Ed25519 keys/);
  t.equal(install('--ca-cert', jwksFile).status, 2, 'a CA that is no certificate is refused');
  t.notOk(existsSync(join(dest, 'root/etc/aegis/agent.json')), 'nothing installed by a refused run');
  const ok = install('--trusted-jwks', jwksFile, '--ca-cert', ca.caFile);
  t.equal(ok.status, 0, ok.stderr);
  const etc = join(dest, 'root/etc/aegis');
  const cfg = JSON.parse(readFileSync(join(etc, 'agent.json'), 'utf8'));
  t.equal(cfg.trusted_jwks_path, '/etc/aegis/trusted_jwks.json');
  t.equal(cfg.ca_cert_path, '/etc/aegis/ca.crt');
  t.equal(readFileSync(join(etc, 'trusted_jwks.json'), 'utf8'), readFileSync(jwksFile, 'utf8'), 'the key set is installed as given');
  t.equal(readFileSync(join(etc, 'ca.crt'), 'utf8'), readFileSync(ca.caFile, 'utf8'), 'the CA is installed as given');
  t.equal(cfg.server_url, JSON.parse(readFileSync(join(ROOT, 'deploy/agent.json'), 'utf8')).server_url, 'other settings kept');
});

t.test('READY, WATCHDOG, STATUS and SIGHUP reload as systemd sees them', async (t) => {
  const dir = agentDir();
  t.teardown(() => cleanupDir(dir));
  const a = await startAgent({ serverUrl: 'http://127.0.0.1:9', dir, env: { WATCHDOG_USEC: '1000000' } });
  await a.waitReady();
  t.ok(a.notifications.some((n) => /READY=1\|STATUS=community edition; /.test(n)), `READY with STATUS: ${a.notifications.join(' / ')}`);
  await a.waitFor(() => a.notifications.filter((n) => n === 'WATCHDOG=1').length >= 2, 5000, 'watchdog pings');
  t.pass('watchdog pings at half of WATCHDOG_USEC');

  const cfgPath = join(dir, 'agent.json');
  const cfg = JSON.parse(readFileSync(cfgPath, 'utf8'));
  writeFileSync(cfgPath, JSON.stringify({ ...cfg, log_level: 'info', services: { '9': '/no/such/cgroup' } }));
  a.proc.kill('SIGHUP');
  await a.waitFor(() => a.notifications.some((n) => n.startsWith('RELOADING=1')), 5000, 'RELOADING=1');
  await a.waitFor(() => a.logs.some((l) => l.includes('configuration reloaded')), 5000, 'reload');
  const st = await a.api('GET', '/v1/status');
  t.same(st.body.services.map((s: { service_id: number }) => s.service_id), [9], 'new service map in effect');

  writeFileSync(cfgPath, '{ broken');
  a.proc.kill('SIGHUP');
  await a.waitFor(() => a.logs.some((l) => l.includes('reload refused')), 5000, 'refused reload');
  t.equal((await a.api('GET', '/v1/status')).status, 200, 'still serving after a bad reload');
  const { code } = await a.stop();
  t.equal(code, 0);
});
