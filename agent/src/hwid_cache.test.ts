/**
 * The fingerprint cache saves collecting hardware facts on a restart, and only there: a
 * cache copied to another host (a cloned disk: another boot id, machine id, DMI uuid,
 * MAC or disk serial) or edited by hand is not used; the fingerprint is collected again.
 * The binding facts are read from a made-up host tree here, so each attack changes one
 * of them; the facts themselves come from the real collector plus an override file.
 */
import t, { type Test } from 'tap';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { computeFingerprint } from '../../protocol/src/index.js';
import { hostBinding, hostFingerprint, type BindingSources } from './hwid.js';

interface FakeHost {
  root: string;
  sources: BindingSources;
  override: string;
  cache: string;
}

/** A host tree: machine-id, boot id, DMI, one physical NIC, one disk, cpuinfo, and an override file. */
function fakeHost(t: Test, tag: string): FakeHost {
  const root = mkdtempSync(join(tmpdir(), `aegis-hwid-${tag}-`));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const w = (p: string, v: string) => {
    mkdirSync(join(root, p, '..'), { recursive: true });
    writeFileSync(join(root, p), v);
  };
  w('etc/machine-id', '3d1219c7c4c5404aaa1f6d2a48adfda4\n');
  w('proc/boot_id', '9b2f5c62-7f35-4a35-9a55-3d8e0f5d1a01\n');
  w('dmi/product_uuid', '4c4c4544-0042-3510-8051-b4c04f4d3732\n');
  w('dmi/board_serial', 'BSN-0001\n');
  w('net/eth0/address', '52:54:00:12:34:56\n');
  mkdirSync(join(root, 'net/eth0/device'), { recursive: true });
  w('net/lo/address', '00:00:00:00:00:00\n');
  w('block/sda/device/serial', 'DISK-AAAA\n');
  w('block/sda/size', '1000000\n');
  w('cpuinfo', 'vendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n');
  w('hwfacts.json', JSON.stringify({ machine_id: `hwid-cache-${tag}` }));
  return {
    root,
    sources: {
      machineIdPaths: [join(root, 'etc/machine-id')],
      bootIdPath: join(root, 'proc/boot_id'),
      dmiDir: join(root, 'dmi'),
      sysClassNet: join(root, 'net'),
      sysBlock: join(root, 'block'),
      cpuinfoPath: join(root, 'cpuinfo'),
    },
    override: join(root, 'hwfacts.json'),
    cache: join(root, 'state', 'hwid-cache.json'),
  };
}

const fp = (h: FakeHost) => hostFingerprint(h.override, { cachePath: h.cache, sources: h.sources });

t.test('a restart on the same host uses the cache; the id is the one collected', async (t) => {
  const h = fakeHost(t, 'same');
  mkdirSync(join(h.root, 'state'));
  const first = await fp(h);
  t.equal(first.cached, false, 'first start collects');
  const again = await fp(h);
  t.equal(again.cached, true, 'restart uses the cache');
  t.equal(again.hardware_id, first.hardware_id);
  t.same(again.components, first.components);
  const uncached = await hostFingerprint(h.override, { sources: h.sources });
  t.equal(uncached.hardware_id, first.hardware_id, 'the same id as without a cache');
});

t.test('a cache copied to another host is not used (cloned disk)', async (t) => {
  const clones: Array<[string, (h: FakeHost) => void]> = [
    ['another boot (the disk booted elsewhere)', (h) => writeFileSync(h.sources.bootIdPath, '0e6a1f3c-1111-4222-8333-944455556666\n')],
    ['another machine-id', (h) => writeFileSync(h.sources.machineIdPaths[0]!, 'ffffffffffffffffffffffffffffffff\n')],
    ['another DMI product_uuid', (h) => writeFileSync(join(h.sources.dmiDir, 'product_uuid'), '00000000-0000-0000-0000-000000000001\n')],
    ['another MAC', (h) => writeFileSync(join(h.sources.sysClassNet, 'eth0/address'), '52:54:00:ab:cd:ef\n')],
    ['another disk serial', (h) => writeFileSync(join(h.sources.sysBlock, 'sda/device/serial'), 'DISK-BBBB\n')],
    ['another AEGIS_HWID_FACTS', (h) => writeFileSync(h.override, JSON.stringify({ machine_id: 'hwid-cache-other' }))],
  ];
  const origin = fakeHost(t, 'origin');
  mkdirSync(join(origin.root, 'state'));
  const real = await fp(origin);
  // The original host's cache carries a planted id (consistent with planted components),
  // so a use of the cache shows in the answer.
  const planted = computeFingerprint({ machine_id: 'the-original-host', system_uuid: 'original-uuid' });
  const cache = JSON.parse(readFileSync(origin.cache, 'utf8')) as { binding: string; report: Record<string, unknown> };
  cache.report = { ...cache.report, ...planted };
  writeFileSync(origin.cache, JSON.stringify(cache));
  const control = await fp(origin);
  t.equal(control.cached, true, 'control: on the host it was made for, the cache is used');
  t.equal(control.hardware_id, planted.hardware_id, 'control: and its id is what the host reports');

  for (const [what, change] of clones) {
    const clone = fakeHost(t, 'clone');
    cpSync(origin.root, clone.root, { recursive: true });
    // The override file path is part of the tree; keep the origin's facts unless the case changes them.
    change(clone);
    t.not(hostBinding(clone.override, clone.sources), cache.binding, `${what}: the binding differs`);
    const r = await fp(clone);
    t.equal(r.cached, false, `${what}: the copied cache is not used`);
    t.not(r.hardware_id, planted.hardware_id, `${what}: the original host's id is not reported`);
    if (what === 'another AEGIS_HWID_FACTS') t.not(r.hardware_id, real.hardware_id, `${what}: the new facts count`);
    else t.equal(r.hardware_id, real.hardware_id, `${what}: the id is collected again (same facts here)`);
    const rewritten = JSON.parse(readFileSync(clone.cache, 'utf8')) as { binding: string };
    t.equal(rewritten.binding, hostBinding(clone.override, clone.sources), `${what}: the cache is rewritten for this host`);
  }
});

t.test('a cache edited by hand or damaged is not used', async (t) => {
  const h = fakeHost(t, 'edit');
  mkdirSync(join(h.root, 'state'));
  const real = await fp(h);
  const good = readFileSync(h.cache, 'utf8');
  const edits: Array<[string, (c: { binding: string; report: Record<string, unknown> }) => unknown]> = [
    ['an id that does not hash from its components', (c) => ({ ...c, report: { ...c.report, hardware_id: 'f'.repeat(64) } })],
    ['components changed under the same id', (c) => ({ ...c, report: { ...c.report, components: { machine_id: 'someone-else', macs: [], disk_serials: [] } } })],
    ['another fingerprint version', (c) => ({ ...c, report: { ...c.report, version: 'v0' } })],
    ['no report', (c) => ({ binding: c.binding })],
    ['ignored_interfaces not strings', (c) => ({ ...c, report: { ...c.report, ignored_interfaces: [1] } })],
  ];
  for (const [what, edit] of edits) {
    writeFileSync(h.cache, JSON.stringify(edit(JSON.parse(good) as { binding: string; report: Record<string, unknown> })));
    const r = await fp(h);
    t.equal(r.cached, false, `${what}: not used`);
    t.equal(r.hardware_id, real.hardware_id, `${what}: the id is collected again`);
  }
  writeFileSync(h.cache, '{"binding": ');
  const r = await fp(h);
  t.equal(r.cached, false, 'truncated JSON: not used');
  t.equal(r.hardware_id, real.hardware_id);
});
