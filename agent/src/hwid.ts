/**
 * The host's hardware facts, from systeminformation, hashed with protocol/'s canonical
 * fingerprint (the same function as the server's fingerprint endpoint).
 *
 * Only physical NICs count: an interface is physical when the kernel shows a backing
 * device (/sys/class/net/<if>/device); veth, docker, bridges, tunnels and other virtual
 * interfaces come and go and would make the fingerprint unstable.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type si from 'systeminformation';
import { computeFingerprint, type Fingerprint, type HardwareFacts } from '../../protocol/src/index.js';
import { writeFileAtomicAsync } from '../../runtime/src/atomic_file.js';

const VIRTUAL_NAME = /^(lo|docker|veth|br-|virbr|vnet|tun|tap|cni|flannel|cali|cilium|lxc|vxlan|genev|dummy|kube|wg|tailscale|zt|podman)/;

/** The fingerprint cache's file name in the state directory. */
export const HWID_CACHE_FILE = 'hwid-cache.json';

export interface HardwareReport extends Fingerprint {
  ignored_interfaces: string[];
}

function physical(iface: string, sysClassNet: string): boolean {
  return !VIRTUAL_NAME.test(iface) && existsSync(`${sysClassNet}/${iface}/device`);
}

function readMachineId(): string | undefined {
  for (const p of ['/etc/machine-id', '/var/lib/dbus/machine-id']) {
    try {
      const v = readFileSync(p, 'utf8').trim();
      if (v) return v;
    } catch {
      /* try the next */
    }
  }
  return undefined;
}

async function safe<T>(p: Promise<T>, fallback: T): Promise<T> {
  try {
    return await p;
  } catch {
    return fallback;
  }
}

/** Gathers facts; any that cannot be read are left out (the fingerprint tolerates gaps). */
export async function collectHardwareFacts(sysClassNet = '/sys/class/net'): Promise<{ facts: HardwareFacts; ignored: string[] }> {
  // Loaded here, not at import: a start with a valid fingerprint cache never needs it.
  const { default: sysinfo } = await import('systeminformation');
  const [system, board, cpu, disks, nics] = await Promise.all([
    safe(sysinfo.system(), null),
    safe(sysinfo.baseboard(), null),
    safe(sysinfo.cpu(), null),
    safe(sysinfo.diskLayout(), []),
    safe(sysinfo.networkInterfaces() as Promise<si.Systeminformation.NetworkInterfacesData[]>, []),
  ]);
  const ignored: string[] = [];
  const macs: string[] = [];
  for (const n of Array.isArray(nics) ? nics : [nics]) {
    if (!n?.iface) continue;
    if (n.internal || n.virtual || !physical(n.iface, sysClassNet)) ignored.push(n.iface);
    else if (n.mac) macs.push(n.mac);
  }
  const facts: HardwareFacts = {
    machine_id: readMachineId() ?? null,
    system_uuid: system?.uuid || null,
    board_serial: board?.serial || system?.serial || null,
    cpu_model: cpu ? `${cpu.manufacturer} ${cpu.brand}`.trim() || null : null,
    macs,
    disk_serials: disks.map((d) => d.serialNum).filter((s): s is string => typeof s === 'string' && s.length > 0),
  };
  return { facts, ignored: ignored.sort() };
}

/**
 * The fingerprint of this host. `overrideFile` (AEGIS_HWID_FACTS, for containers and
 * tests that simulate several hosts on one machine) holds facts that replace the
 * collected ones field by field.
 *
 * With `cachePath` the fingerprint is kept between starts, bound to this host's binding
 * facts (hostBinding): cheap reads, made on every start, of what a copied disk cannot
 * bring along (the boot id) and of the sources the fingerprint comes from. A cache whose
 * binding differs, or whose fingerprint does not hash from its own components, is not
 * used: the fingerprint is collected again and the cache rewritten.
 */
export async function hostFingerprint(
  overrideFile?: string,
  o: { cachePath?: string; sources?: Partial<BindingSources> } = {},
): Promise<HardwareReport & { cached: boolean }> {
  const binding = o.cachePath ? hostBinding(overrideFile, o.sources) : null;
  if (o.cachePath && binding) {
    const hit = readCache(o.cachePath, binding);
    if (hit) return { ...hit, cached: true };
  }
  const { facts, ignored } = await collectHardwareFacts(o.sources?.sysClassNet);
  let merged: HardwareFacts = facts;
  if (overrideFile) merged = { ...facts, ...(JSON.parse(readFileSync(overrideFile, 'utf8')) as HardwareFacts) };
  const report: HardwareReport = { ...computeFingerprint(merged), ignored_interfaces: ignored };
  if (o.cachePath && binding) {
    const record: FingerprintCache = { binding, report };
    // Best effort: a start never fails because the cache cannot be written.
    await writeFileAtomicAsync(o.cachePath, JSON.stringify(record), 0o600).catch(() => undefined);
  }
  return { ...report, cached: false };
}

/** Where the binding facts are read; tests point them at a made-up host. */
export interface BindingSources {
  machineIdPaths: string[];
  bootIdPath: string;
  dmiDir: string;
  sysClassNet: string;
  sysBlock: string;
  cpuinfoPath: string;
}

const DEFAULT_SOURCES: BindingSources = {
  machineIdPaths: ['/etc/machine-id', '/var/lib/dbus/machine-id'],
  bootIdPath: '/proc/sys/kernel/random/boot_id',
  dmiDir: '/sys/class/dmi/id',
  sysClassNet: '/sys/class/net',
  sysBlock: '/sys/block',
  cpuinfoPath: '/proc/cpuinfo',
};

/** The DMI fields the fingerprint's system_uuid and board_serial come from, and the machine's model. */
const DMI_FIELDS = ['product_uuid', 'product_serial', 'board_serial', 'chassis_serial', 'sys_vendor', 'product_name', 'board_vendor', 'board_name'];

function readText(path: string, max = 4096): string | null {
  try {
    return readFileSync(path, 'utf8').slice(0, max).trim();
  } catch {
    return null;
  }
}

function list(dir: string): string[] {
  try {
    return readdirSync(dir).sort();
  } catch {
    return [];
  }
}

/**
 * A hash of the host facts the fingerprint cache is bound to, read on every start (a few
 * files of /proc and /sys, no processes spawned):
 *  - the boot id, new on every boot: a disk copied to another machine (or restored from
 *    an image) has to boot there, so its cache never matches; the cache only ever saves
 *    work for restarts within one boot;
 *  - /etc/machine-id, the DMI ids (product_uuid, serials, vendor and model), every
 *    network interface's name, MAC and whether it is physical, every block device with a
 *    backing device and its serial/wwid, the CPU model line: the sources of the
 *    fingerprint's own facts, so a change within a boot (a NIC or disk swapped live, a VM
 *    given a new identity) is seen too;
 *  - the AEGIS_HWID_FACTS override file's content.
 */
export function hostBinding(overrideFile?: string, sources: Partial<BindingSources> = {}): string {
  const s = { ...DEFAULT_SOURCES, ...sources };
  const h = createHash('sha256');
  const add = (k: string, v: string | null) => h.update(`${k}=${v === null ? '\u0000' : JSON.stringify(v)}\n`);
  add('version', 'aegis-hwid-cache-1');
  add('boot_id', readText(s.bootIdPath));
  s.machineIdPaths.forEach((p, i) => add(`machine_id.${i}`, readText(p)));
  for (const f of DMI_FIELDS) add(`dmi.${f}`, readText(join(s.dmiDir, f)));
  for (const iface of list(s.sysClassNet)) {
    add(`net.${iface}`, `${readText(join(s.sysClassNet, iface, 'address')) ?? ''} ${physical(iface, s.sysClassNet) ? 'physical' : 'virtual'}`);
  }
  for (const dev of list(s.sysBlock)) {
    if (!existsSync(join(s.sysBlock, dev, 'device'))) continue;
    add(`block.${dev}`, `${readText(join(s.sysBlock, dev, 'device', 'serial')) ?? ''} ${readText(join(s.sysBlock, dev, 'device', 'wwid')) ?? ''} ${readText(join(s.sysBlock, dev, 'size')) ?? ''}`);
  }
  const cpu = readText(s.cpuinfoPath, 64 * 1024);
  add('cpu', cpu === null ? null : (/^model name\s*:\s*(.*)$/m.exec(cpu)?.[1] ?? '') + ' ' + (/^vendor_id\s*:\s*(.*)$/m.exec(cpu)?.[1] ?? ''));
  add('override', overrideFile ? readText(overrideFile, 1 << 20) : null);
  return h.digest('hex');
}

interface FingerprintCache {
  binding: string;
  report: HardwareReport;
}

/** The cached report when its binding is this host's and it is consistent, else null. */
function readCache(path: string, binding: string): HardwareReport | null {
  let v: Partial<FingerprintCache>;
  try {
    v = JSON.parse(readFileSync(path, 'utf8')) as Partial<FingerprintCache>;
  } catch {
    return null;
  }
  if (typeof v !== 'object' || v === null || v.binding !== binding) return null;
  const r = v.report;
  if (typeof r !== 'object' || r === null || !Array.isArray(r.ignored_interfaces) || !r.ignored_interfaces.every((x) => typeof x === 'string')) return null;
  try {
    // The id must hash from the components it is stored with (and the current version).
    const again = computeFingerprint(r.components);
    if (again.hardware_id !== r.hardware_id || again.version !== r.version) return null;
    return { ...again, ignored_interfaces: [...r.ignored_interfaces] };
  } catch {
    return null;
  }
}
