/**
 * Bad input: invalid CIDRs, ports, protocols, service ids, oversized snapshots, missing
 * cgroups and pins of an incompatible layout all fail with a clear, typed error, and the
 * policy in force stays exactly as it was (checked through verdicts and stats).
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { run, missingCommand, requireCapability } from '../../../test/harness/capabilities.js';
import { MAX_RULES_PER_SERVICE } from '../../../protocol/src/index.js';
import {
  buildPacket,
  BpfUnavailableError,
  CgroupNotFoundError,
  IncompatiblePinError,
  InvalidArgumentError,
  InvalidPolicyError,
  open,
  SnapshotTooLargeError,
  checkPolicyRules,
  encodeRules,
  probe,
} from './index.js';
import type { Datapath, PolicyRules } from './index.js';
import { missingDatapath, testPinRoot } from '../../../test/harness/datapath.js';

t.test('policy validation (no kernel needed)', async (t) => {
  const bad: Array<[string, PolicyRules, string]> = [
    ['not an IP', { edges: [{ dst_cidr: '10.0.0.300/32', proto: 'tcp', port: 1 }] }, '/edges/0/dst_cidr'],
    ['prefix too long', { edges: [{ dst_cidr: '10.0.0.0/33', proto: 'tcp', port: 1 }] }, '/edges/0/dst_cidr'],
    ['v6 prefix too long', { allow_cidrs: [{ cidr: '2001:db8::/129', proto: 'tcp', port: 1 }] }, '/allow_cidrs/0/cidr'],
    ['host bits set', { edges: [{ dst_cidr: '10.0.0.1/24', proto: 'tcp', port: 1 }] }, 'did you mean 10.0.0.0/24'],
    ['port too big', { edges: [{ dst_cidr: '10.0.0.0/24', proto: 'tcp', port: 65536 }] }, '/edges/0/port'],
    ['negative port', { edges: [{ dst_cidr: '10.0.0.0/24', proto: 'tcp', port: -1 }] }, '/edges/0/port'],
    ['fractional port', { edges: [{ dst_cidr: '10.0.0.0/24', proto: 'tcp', port: 1.5 }] }, '/edges/0/port'],
    ['unknown proto', { edges: [{ dst_cidr: '10.0.0.0/24', proto: 'sctp' as 'tcp', port: 1 }] }, '/edges/0/proto'],
    ['zone id', { edges: [{ dst_cidr: 'fe80::1%eth0/128', proto: 'tcp', port: 1 }] }, '/edges/0/dst_cidr'],
    ['edges not an array', { edges: 'x' as unknown as [] }, '/edges: must be array'],
    [
      'duplicate edge',
      { edges: [{ dst_cidr: '10.0.0.0/24', proto: 'tcp', port: 1 }, { dst_cidr: '10.0.0.0/24', proto: 'tcp', port: 1 }] },
      '/edges/1: duplicate of /edges/0',
    ],
    ['not an object', null as unknown as PolicyRules, '/: a policy object'],
  ];
  for (const [name, policy, mentions] of bad) {
    try {
      checkPolicyRules(policy);
      t.fail(`${name}: accepted`);
    } catch (e) {
      t.ok(e instanceof InvalidPolicyError, `${name}: InvalidPolicyError`);
      t.equal((e as InvalidPolicyError).code, 'INVALID_POLICY');
      t.match((e as Error).message, mentions, `${name}: message names ${mentions}`);
    }
  }
  const many = encodeRules(
    checkPolicyRules({
      edges: [
        { dst_cidr: '10.0.0.0/8', proto: 'any', port: 53 },
        { dst_cidr: '10.0.0.0/8', proto: 'udp', port: 53 },
        { dst_cidr: '::/0', proto: 'tcp', port: 0 },
      ],
    }),
  );
  t.equal(many.count, 3, '"any" expands to tcp+udp; the udp rule it repeats collapses');
  const cap = 10;
  const edges = Array.from({ length: 6 }, (_, i) => ({ dst_cidr: `10.0.${i}.0/24`, proto: 'any' as const, port: 1 }));
  t.throws(() => checkPolicyRules({ edges }, cap), SnapshotTooLargeError, '6 "any" edges = 12 rules > 10');
});

t.test('bad input leaves the policy in force untouched', { timeout: 120_000 }, async (t) => {
  if (!requireCapability(t, await missingDatapath())) return;
  const pinRoot = testPinRoot('validation');
  const dp: Datapath = await open({ pinRoot });
  t.teardown(() => dp.purge());
  const svc = 501;
  const future = Date.now() + 3_600_000;
  await dp.apply(svc, { edges: [{ dst_cidr: '10.0.0.0/8', proto: 'tcp', port: 443 }] }, { mode: 'enforce', expiresAt: future, generation: 5 });
  const allowedPkt = buildPacket({ src: '10.99.0.1', dst: '10.1.2.3', proto: 'tcp', sport: 40000, dport: 443 });
  const deniedPkt = buildPacket({ src: '10.99.0.1', dst: '11.1.2.3', proto: 'tcp', sport: 40000, dport: 443 });
  const snapshot = async (): Promise<string> => {
    const a = await dp.testVerdict('egress', allowedPkt, { serviceId: svc });
    const d = await dp.testVerdict('egress', deniedPkt, { serviceId: svc });
    const st = (await dp.stats()).find((s) => s.serviceId === svc)!;
    return JSON.stringify({ a: a.verdict, d: d.verdict, gen: st.policy?.generation, rules: st.policy?.rules, mode: st.policy?.mode });
  };
  const baseline = await snapshot();
  t.equal(baseline, JSON.stringify({ a: 'pass', d: 'drop', gen: 5, rules: 1, mode: 'enforce' }));

  const attempts: Array<[string, () => Promise<unknown>, new (...a: never[]) => Error]> = [
    ['invalid CIDR', () => dp.apply(svc, { edges: [{ dst_cidr: '0.0.0.0/0', proto: 'tcp', port: 443 }, { dst_cidr: 'nope', proto: 'tcp', port: 1 }] }, { mode: 'observe', expiresAt: future, generation: 6 }), InvalidPolicyError],
    ['host bits', () => dp.apply(svc, { edges: [{ dst_cidr: '11.1.2.3/8', proto: 'tcp', port: 443 }] }, { mode: 'enforce', expiresAt: future, generation: 6 }), InvalidPolicyError],
    ['bad port', () => dp.apply(svc, { edges: [{ dst_cidr: '0.0.0.0/0', proto: 'tcp', port: 99999 }] }, { mode: 'enforce', expiresAt: future, generation: 6 }), InvalidPolicyError],
    ['bad proto', () => dp.apply(svc, { edges: [{ dst_cidr: '0.0.0.0/0', proto: 'sctp' as 'tcp', port: 1 }] }, { mode: 'enforce', expiresAt: future, generation: 6 }), InvalidPolicyError],
    ['service id -1', () => dp.apply(-1, { edges: [] }, { mode: 'enforce', expiresAt: future, generation: 6 }), InvalidArgumentError],
    ['service id 2^32', () => dp.apply(2 ** 32, { edges: [] }, { mode: 'enforce', expiresAt: future, generation: 6 }), InvalidArgumentError],
    ['service id 1.5', () => dp.withdraw(1.5), InvalidArgumentError],
    ['mismatched service_id', () => dp.apply(svc, { service_id: 7, edges: [] }, { mode: 'enforce', expiresAt: future, generation: 6 }), InvalidArgumentError],
    ['bad mode', () => dp.apply(svc, { edges: [] }, { mode: 'block' as 'enforce', expiresAt: future, generation: 6 }), InvalidArgumentError],
    ['bad generation', () => dp.apply(svc, { edges: [] }, { mode: 'enforce', expiresAt: future, generation: -2 }), InvalidArgumentError],
    [
      'too large',
      () =>
        dp.apply(
          svc,
          {
            edges: Array.from({ length: MAX_RULES_PER_SERVICE / 2 + 1 }, (_, i) => ({
              dst_cidr: `${10 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}.0/24`,
              proto: 'any' as const,
              port: 80,
            })),
          },
          { mode: 'enforce', expiresAt: future, generation: 6 },
        ),
      SnapshotTooLargeError,
    ],
    ['missing cgroup', () => dp.bindService(svc, '/sys/fs/cgroup/unified/aegis-does-not-exist'), CgroupNotFoundError],
    ['cgroup not on cgroup2', () => dp.bindService(svc, '/tmp'), CgroupNotFoundError],
    ['relative cgroup path', () => dp.bindService(svc, 'aegis'), InvalidArgumentError],
  ];
  for (const [name, fn, cls] of attempts) {
    try {
      await fn();
      t.fail(`${name}: accepted`);
    } catch (e) {
      t.ok(e instanceof cls, `${name}: ${cls.name} (${(e as Error).message.slice(0, 120)})`);
    }
    t.equal(await snapshot(), baseline, `${name}: policy in force unchanged`);
  }
});

t.test('pins of an incompatible layout are refused and left alone', { timeout: 60_000 }, async (t) => {
  if (!requireCapability(t, (await missingDatapath()) ?? missingCommand('bpftool'))) return;
  const good = testPinRoot('validation-live');
  const live = await open({ pinRoot: good });
  t.teardown(() => live.purge());
  await live.apply(1, { edges: [{ dst_cidr: '10.0.0.0/8', proto: 'tcp', port: 443 }] }, { mode: 'enforce', expiresAt: null, generation: 1 });
  const pkt = buildPacket({ src: '10.99.0.1', dst: '11.1.2.3', proto: 'tcp', sport: 40000, dport: 443 });

  // A marker written by a future layout (version 99).
  const v99 = testPinRoot('validation-v99');
  mkdirSync(v99, { recursive: true });
  t.teardown(() => rmSync(v99, { recursive: true, force: true }));
  run('bpftool', ['map', 'create', `${v99}/aegis_layout`, 'type', 'array', 'key', '4', 'value', '16', 'entries', '1', 'name', 'aegis_layout']);
  // magic "AEGS" (0x53474541 LE), version 99, created 0
  run('bpftool', ['map', 'update', 'pinned', `${v99}/aegis_layout`, 'key', '0', '0', '0', '0', 'value', '0x41', '0x45', '0x47', '0x53', '99', '0', '0', '0', '0', '0', '0', '0', '0', '0', '0', '0']);
  await t.rejects(open({ pinRoot: v99 }), IncompatiblePinError, 'layout marker of version 99 refused');
  t.same(readdirSync(v99), ['aegis_layout'], 'nothing was added next to the foreign marker');

  // A versioned pin of a newer layout without a marker (an older layout's pins are an
  // upgrade instead: upgrade.test.ts).
  const v9 = testPinRoot('validation-v9');
  mkdirSync(v9, { recursive: true });
  t.teardown(() => rmSync(v9, { recursive: true, force: true }));
  run('bpftool', ['map', 'create', `${v9}/aegis_v9_pol`, 'type', 'hash', 'key', '4', 'value', '4', 'entries', '1', 'name', 'aegis_v9_pol']);
  const e = await open({ pinRoot: v9 }).catch((x: unknown) => x);
  t.ok(e instanceof IncompatiblePinError, 'aegis_v9_* pin refused');
  t.match((e as Error).message, /aegis_v9_pol/, 'the error names the offending pin');

  // A v2 name whose map does not match this build's layout (libbpf's reuse check).
  const bad = testPinRoot('validation-badmap');
  mkdirSync(bad, { recursive: true });
  t.teardown(() => rmSync(bad, { recursive: true, force: true }));
  run('bpftool', ['map', 'create', `${bad}/aegis_v2_cgrp`, 'type', 'hash', 'key', '4', 'value', '4', 'entries', '16', 'name', 'aegis_v2_cgrp']);
  const mismatch = await open({ pinRoot: bad }).catch((x: unknown) => x);
  t.ok(mismatch instanceof IncompatiblePinError, 'mismatched aegis_v2_cgrp refused');
  t.match((mismatch as Error).message, /aegis_v2_cgrp does not match/, 'the error names the mismatched map');
  t.same(readdirSync(bad), ['aegis_v2_cgrp'], 'no pins were added beside it');

  // Not a BPF filesystem.
  const notBpf = `/tmp/aegis-not-bpffs-${process.pid}`;
  t.teardown(() => rmSync(notBpf, { recursive: true, force: true }));
  await t.rejects(open({ pinRoot: notBpf }), BpfUnavailableError, 'pin root outside bpffs refused');

  const v = await live.testVerdict('egress', pkt, { serviceId: 1 });
  t.equal(v.verdict, 'drop', 'the live datapath kept enforcing throughout');
});

t.test('probe() says whether BPF is usable, and why not', async (t) => {
  if (!requireCapability(t, await missingDatapath())) return;
  const p = await probe();
  t.equal(p.ok, true, `usable as root: ${p.reasons.join('; ')}`);
  t.ok(p.cgroup2Mount, `cgroup v2 found at ${p.cgroup2Mount}`);
  t.match(p.features, { cgroupSkb: true, lpmTrie: true, hashOfMaps: true, ringbuf: true });
  // The same probe from an unprivileged child (uid nobody).
  const index = new URL('./index.js', import.meta.url).href;
  const r = spawnSync(
    process.execPath,
    ['--input-type=module', '-e', `process.setgid(65534); process.setuid(65534); const m = await import(${JSON.stringify(index)}); console.log(JSON.stringify(await m.probe()));`],
    { encoding: 'utf8' },
  );
  t.equal(r.status, 0, `unprivileged probe ran ${r.stderr}`);
  const np = JSON.parse(r.stdout) as { ok: boolean; reasons: string[] };
  t.equal(np.ok, false, 'not usable without privileges');
  t.match(np.reasons.join('; '), /root|CAP_BPF/, `reason given: ${np.reasons.join('; ')}`);
});
