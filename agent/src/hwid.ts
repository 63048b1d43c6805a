/**
 * The host's hardware facts, from systeminformation, hashed with protocol/'s canonical
 * fingerprint (the same function as the server's fingerprint endpoint).
 *
 * Only physical NICs count: an interface is physical when the kernel shows a backing
 * device (/sys/class/net/<if>/device); veth, docker, bridges, tunnels and other virtual
 * interfaces come and go and would make the fingerprint unstable.
 */
import { existsSync, readFileSync } from 'node:fs';
import si from 'systeminformation';
import { computeFingerprint, type Fingerprint, type HardwareFacts } from '../../protocol/src/index.js';

const VIRTUAL_NAME = /^(lo|docker|veth|br-|virbr|vnet|tun|tap|cni|flannel|cali|cilium|lxc|vxlan|genev|dummy|kube|wg|tailscale|zt|podman)/;

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
  const [system, board, cpu, disks, nics] = await Promise.all([
    safe(si.system(), null),
    safe(si.baseboard(), null),
    safe(si.cpu(), null),
    safe(si.diskLayout(), []),
    safe(si.networkInterfaces() as Promise<si.Systeminformation.NetworkInterfacesData[]>, []),
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
 */
export async function hostFingerprint(overrideFile?: string): Promise<HardwareReport> {
  const { facts, ignored } = await collectHardwareFacts();
  let merged: HardwareFacts = facts;
  if (overrideFile) merged = { ...facts, ...(JSON.parse(readFileSync(overrideFile, 'utf8')) as HardwareFacts) };
  return { ...computeFingerprint(merged), ignored_interfaces: ignored };
}
