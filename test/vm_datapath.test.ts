/**
 * The BPF datapath in Debian 12's own kernel (6.1), not only the host's: the same
 * aegis.bpf.o the addon embeds (build/bpf/, written by `npm run build:addon`) is loaded by
 * bpf/vmtest's static program, first on the host and then in a busybox initramfs booted
 * under qemu (TCG) with the newest /boot/vmlinuz-*. In each kernel the program loads every
 * program (2 cgroup_skb, 4 cgroup_sock_addr), binds a fresh cgroup and writes the policy
 * the way the addon does, and sends real loopback traffic from a child in that cgroup:
 * under enforce an allowed TCP connect (v4, v6) and UDP send echo both ways, denied TCP
 * connects and UDP sends fail with EPERM at the syscall, ICMP echo (v4, v6) without a rule
 * gets no reply; under observe (a swapped-in generation) the denied cases go through and
 * each is counted once as would-drop. Every case must pass in the VM and give the same
 * verdict and counters as on the host.
 */
import t from 'tap';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawnSync } from 'node:child_process';
import { missingCommand, missingRoot, requireCapability } from './harness/capabilities.js';
import { ensureBpffs } from './harness/datapath.js';
import { KERNEL_TROUBLE, bootVm, findKernel } from './harness/vm.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const OBJ = join(ROOT, 'build', 'bpf', 'aegis.bpf.o');
const STATIC_LIBS = ['libbpf.a', 'libelf.a', 'libz.a'].map((a) => `/usr/lib/x86_64-linux-gnu/${a}`);
const BOOT_TIMEOUT_MS = 100_000;

/** Cases every run must report: a missing line is a failure, not a pass by omission. */
const CASES = [
  'netns', 'load-all', 'bind', 'listeners', 'apply-enforce',
  'enforce-tcp4-allowed', 'enforce-tcp4-denied', 'enforce-udp4-allowed', 'enforce-udp4-denied',
  'enforce-tcp6-allowed', 'enforce-tcp6-denied', 'enforce-udp6-denied',
  'enforce-icmp4-echo-denied', 'enforce-icmp6-echo-denied', 'enforce-counters',
  'apply-observe',
  'observe-tcp4-denied', 'observe-udp4-denied', 'observe-tcp6-denied', 'observe-udp6-denied',
  'observe-icmp4-echo', 'observe-icmp6-echo', 'observe-counters',
];
/** Counters that follow from the verdicts alone (bypassed/replies also depend on how many
 * segments TCP needed, which a slow emulated CPU can change). */
const EXACT_COUNTERS = ['allowed', 'dropped', 'would_drop', 'expired', 'cut', 'unparsed', 'events', 'events_lost'];

interface Report {
  cases: Map<string, { ok: boolean; detail: string; verdict: string | null }>;
  counters: Map<string, Record<string, number>>;
  info: Map<string, string>;
}

function parse(output: string): Report {
  const r: Report = { cases: new Map(), counters: new Map(), info: new Map() };
  for (const line of output.split('\n')) {
    let m = /AEGIS-VM: (\S+) (ok|FAIL) ?(.*)$/.exec(line);
    if (m) {
      const verdict = /verdict=(\S+)/.exec(m[3]!)?.[1] ?? null;
      r.cases.set(m[1]!, { ok: m[2] === 'ok', detail: m[3]!, verdict });
      continue;
    }
    m = /AEGIS-VM-COUNTERS: (\S+) (.*)$/.exec(line);
    if (m) {
      r.counters.set(m[1]!, Object.fromEntries(m[2]!.split(' ').map((kv) => {
        const [k, v] = kv.split('=');
        return [k!, Number(v)];
      })));
      continue;
    }
    m = /AEGIS-VM-INFO: ([a-z0-9_]+)=(.*)$/.exec(line);
    if (m) r.info.set(m[1]!, m[2]!);
  }
  return r;
}

function missingStaticLibs(): string | null {
  const absent = STATIC_LIBS.filter((p) => !existsSync(p));
  return absent.length ? `static libraries missing: ${absent.join(', ')} (apt-get install libbpf-dev libelf-dev zlib1g-dev)` : null;
}

function missingObject(): string | null {
  if (!existsSync(OBJ)) return `${OBJ} missing (npm run build:addon)`;
  const built = statSync(OBJ).mtimeMs;
  const stale = ['aegis.bpf.c', 'aegis.h'].filter((f) => statSync(join(ROOT, 'bpf', f)).mtimeMs > built);
  return stale.length ? `${OBJ} is older than bpf/${stale.join(', bpf/')} (npm run build:addon)` : null;
}

t.test('aegis.bpf.o loads and enforces in Debian 12\'s kernel under qemu, as on the host', { timeout: 300_000 }, async (t) => {
  const kernel = findKernel();
  const missing = missingRoot()
    ?? missingCommand('qemu-system-x86_64', 'busybox', 'cpio', 'gcc', 'gzip')
    ?? (kernel ? null : 'no /boot/vmlinuz-* (apt-get install linux-image-amd64)')
    ?? missingStaticLibs()
    ?? missingObject()
    ?? (ensureBpffs() ? null : 'no BPF filesystem at /sys/fs/bpf');
  if (!requireCapability(t, missing) || !kernel) return;
  const started = Date.now();

  const dir = mkdtempSync(join(tmpdir(), 'aegis-vm-datapath-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const build = spawnSync('bash', [join(ROOT, 'bpf', 'vmtest', 'build.sh'), dir], { encoding: 'utf8' });
  t.equal(build.status, 0, `aegis-vmtest builds statically${build.status === 0 ? '' : `:\n${build.stderr}`}`);
  if (build.status !== 0) return;
  const prog = join(dir, 'aegis-vmtest');

  // The host run: its own network namespace, cgroup and pin root (named after its pid).
  const hostRun = spawnSync(prog, ['--obj', OBJ], { encoding: 'utf8', timeout: 60_000 });
  const host = parse(hostRun.stdout);
  t.equal(hostRun.status, 0, `host (${host.info.get('kernel')}): every case passes${hostRun.status === 0 ? '' : `:\n${hostRun.stdout}${hostRun.stderr}`}`);

  const initrd = join(dir, 'initrd.gz');
  const img = spawnSync('bash', [join(ROOT, 'scripts', 'build-vm-datapath-image'), '--prog', prog, '--obj', OBJ, '--out', initrd], { encoding: 'utf8' });
  t.equal(img.status, 0, `build-vm-datapath-image${img.status === 0 ? '' : `: ${img.stderr}`}`);
  if (img.status !== 0) return;

  const run = await bootVm(kernel.image, initrd, BOOT_TIMEOUT_MS);
  // AEGIS_VM_LOG=<file> keeps the serial console output for a person to read.
  if (process.env.AEGIS_VM_LOG) writeFileSync(process.env.AEGIS_VM_LOG, run.output);
  t.notOk(run.timedOut, `VM finished within ${BOOT_TIMEOUT_MS / 1000} s (took ${run.seconds.toFixed(1)} s)`);
  const vm = parse(run.output);
  if (vm.info.get('exit') !== '0') t.comment(run.output.split('\n').filter((l) => !l.startsWith('AEGIS-DMESG')).slice(-80).join('\n'));
  t.equal(vm.info.get('kernel'), kernel.version, `the VM ran ${kernel.version}`);
  t.equal(vm.info.get('btf_vmlinux'), 'yes', 'the VM kernel exposes /sys/kernel/btf/vmlinux');
  t.equal(vm.info.get('exit'), '0', 'aegis-vmtest exited 0 in the VM');

  for (const name of CASES) {
    const h = host.cases.get(name);
    const v = vm.cases.get(name);
    t.ok(h?.ok, `host ${name}: ${h ? h.detail : 'not reported'}`);
    t.ok(v?.ok, `${kernel.version} ${name}: ${v ? v.detail : 'not reported'}`);
    if (h?.verdict || v?.verdict) t.equal(v?.verdict, h?.verdict, `${name}: verdict as on the host (${h?.verdict})`);
  }
  t.same([...vm.cases.keys()].sort(), [...host.cases.keys()].sort(), 'the VM reports the same cases as the host');
  for (const phase of ['enforce', 'observe']) {
    const h = host.counters.get(phase);
    const v = vm.counters.get(phase);
    t.ok(h && v, `${phase} counters reported by both`);
    if (!h || !v) continue;
    t.same(Object.fromEntries(EXACT_COUNTERS.map((k) => [k, v[k]])), Object.fromEntries(EXACT_COUNTERS.map((k) => [k, h[k]])),
      `${phase} counters as on the host`);
    t.comment(`${phase} counters host: ${JSON.stringify(h)}`);
    t.comment(`${phase} counters ${kernel.version}: ${JSON.stringify(v)}`);
  }

  for (const [key, value] of vm.info) {
    if (key.startsWith('prog_')) t.comment(`${key.slice(5)}: host ${host.info.get(key)}; ${kernel.version} ${value}`);
  }

  const dmesg = run.output.split('\n').filter((l) => l.startsWith('AEGIS-DMESG: ')).map((l) => l.slice(13));
  t.same(dmesg.filter((l) => KERNEL_TROUBLE.test(l)), [], 'no kernel warnings, BUGs or oopses in dmesg');
  t.ok(run.output.includes('AEGIS-VM-INFO: init=done'), 'init ran to the end');

  const total = (Date.now() - started) / 1000;
  t.comment(`VM: uptime at /init ${vm.info.get('init_uptime')} s, at the end ${vm.info.get('end_uptime')} s; qemu wall time ${run.seconds.toFixed(1)} s; whole test ${total.toFixed(1)} s`);
  t.ok(total < 120, `whole VM datapath test under 2 minutes (${total.toFixed(1)} s)`);
});
