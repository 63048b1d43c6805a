/** deploy/cluster: the replica and NATS node units pass systemd-analyze, the node configs are scripts/nats-config's output. */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { commandPath, missingCommand, requireCapability } from './harness/capabilities.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const DIR = join(ROOT, 'deploy/cluster');

t.test('units pass systemd-analyze verify', async (t) => {
  if (!requireCapability(t, missingCommand('systemd-analyze'))) return;
  if (!requireCapability(t, missingCommand('nats-server'))) return;
  const dest = mkdtempSync(join(tmpdir(), 'aegis-cluster-units-'));
  t.teardown(() => rmSync(dest, { recursive: true, force: true }));
  // verify wants the executables to exist: point them at real ones.
  writeFileSync(join(dest, 'aegis-server@.service'), readFileSync(join(DIR, 'aegis-server@.service'), 'utf8').replace('/usr/local/bin/aegis-server', process.execPath));
  writeFileSync(join(dest, 'aegis-nats.service'), readFileSync(join(DIR, 'aegis-nats.service'), 'utf8').replace('/usr/bin/nats-server', commandPath('nats-server') as string));
  const v = spawnSync('systemd-analyze', ['verify', 'aegis-server@1.service', 'aegis-nats.service'], { cwd: dest, encoding: 'utf8' });
  t.equal(v.status, 0, v.stderr);
  t.equal(v.stderr.trim(), '', 'no warnings');
  const unit = readFileSync(join(DIR, 'aegis-server@.service'), 'utf8');
  t.match(unit, 'EnvironmentFile=-/etc/aegis/server-%i.env', 'per-replica settings');
});

t.test('nats/NODE.conf are what scripts/nats-config renders (commands in deploy/cluster/README.md)', async (t) => {
  const out = mkdtempSync(join(tmpdir(), 'aegis-cluster-conf-'));
  t.teardown(() => rmSync(out, { recursive: true, force: true }));
  const r = spawnSync(
    'bash',
    [
      join(ROOT, 'scripts/nats-config'),
      '--operator', 'aegis-operator.conf', '--tls-cert', '/etc/aegis-nats/tls/server.crt', '--tls-key', '/etc/aegis-nats/tls/server.key',
      '--store-dir', '/var/lib/aegis-nats', '--cluster', 'aegis',
      '--node', 'nats-1@nats-1.internal', '--node', 'nats-2@nats-2.internal', '--node', 'nats-3@nats-3.internal', '--output-dir', out,
    ],
    { encoding: 'utf8', env: { ...process.env, AEGIS_NATS_CLUSTER_PASS: 'REPLACE-route-password' } },
  );
  t.equal(r.status, 0, r.stderr);
  for (const n of ['nats-1', 'nats-2', 'nats-3']) {
    t.equal(readFileSync(join(DIR, 'nats', `${n}.conf`), 'utf8'), readFileSync(join(out, `${n}.conf`), 'utf8'), `${n}.conf`);
  }
});
