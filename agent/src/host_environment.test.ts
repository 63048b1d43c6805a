/**
 * Container and VM detection on fake roots holding the files each runtime leaves: a
 * container must never pass for a host (the server refuses containers where a license
 * does not allow them).
 */
import t from 'tap';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { detectEnvironment } from './host_environment.js';

function fakeRoot(files: Record<string, string>): string {
  const root = mkdtempSync(join(tmpdir(), 'aegis-env-'));
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(join(root, path, '..'), { recursive: true });
    writeFileSync(join(root, path), text);
  }
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  return root;
}

t.test('each container signal alone makes it a container', async (t) => {
  const cases: Record<string, Record<string, string>> = {
    docker: { '.dockerenv': '' },
    podman: { 'run/.containerenv': 'engine="podman"' },
    nspawn: { 'proc/1/environ': 'PATH=/bin\0container=systemd-nspawn\0' },
    kubernetes: { 'proc/1/cgroup': '0::/kubepods.slice/kubepods-besteffort.slice/cri-containerd-abc.scope\n' },
    'docker cgroup': { 'proc/1/cgroup': '0::/system.slice/docker-0123abcd.scope\n' },
  };
  for (const [name, files] of Object.entries(cases)) {
    const r = detectEnvironment({ root: fakeRoot(files) });
    t.equal(r.environment, 'container', name);
    t.ok(r.signals.length > 0, `${name}: says why`);
  }
});

t.test('a container on a VM is a container; a hypervisor vendor alone is a VM; nothing is a host', async (t) => {
  t.equal(detectEnvironment({ root: fakeRoot({ '.dockerenv': '', 'sys/class/dmi/id/sys_vendor': 'QEMU\n' }) }).environment, 'container');
  t.equal(detectEnvironment({ root: fakeRoot({ 'sys/class/dmi/id/sys_vendor': 'QEMU\n', 'proc/1/cgroup': '0::/init.scope\n' }) }).environment, 'vm');
  const host = detectEnvironment({ root: fakeRoot({ 'sys/class/dmi/id/sys_vendor': 'Dell Inc.\n', 'proc/1/cgroup': '0::/init.scope\n', 'proc/1/environ': 'PATH=/bin\0' }) });
  t.equal(host.environment, 'host');
  t.same(host.signals, []);
});

t.test('this machine answers one of the three, with systemd-detect-virt when present', async (t) => {
  const r = detectEnvironment();
  t.ok(['host', 'vm', 'container'].includes(r.environment), `${r.environment}: ${r.signals.join('; ')}`);
});
