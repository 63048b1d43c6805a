/**
 * Where this agent runs: on a host, in a VM, or in a container. The server refuses
 * containers on licenses that do not allow them, so a container must never pass for a
 * host: any one container signal is enough (they are cheap to read and hard to lose
 * inside a container, while a host shows none of them).
 *
 * Container signals: /.dockerenv (Docker), /run/.containerenv (Podman), a `container=`
 * variable in PID 1's environment (systemd-nspawn, LXC, Podman), PID 1's cgroup naming a
 * container runtime, and `systemd-detect-virt --container` when it is installed.
 * VM signals: `systemd-detect-virt --vm`, else the DMI vendor naming a hypervisor.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { HostEnvironment } from '../../protocol/src/index.js';

const CONTAINER_CGROUP = /(docker|kubepods|containerd|libpod|lxc|crio|podman|machine\.slice\/machine-)/;
const HYPERVISOR_VENDOR = /(qemu|kvm|vmware|virtualbox|innotek|xen|microsoft corporation|bochs|parallels|amazon ec2|google|openstack)/i;

export interface EnvironmentReport {
  environment: HostEnvironment;
  /** The signals that decided it (for status and logs). */
  signals: string[];
}

function read(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}

/** `systemd-detect-virt <flag>`'s answer, or null when it is absent or says none. */
function detectVirt(flag: '--container' | '--vm'): string | null {
  try {
    const out = execFileSync('systemd-detect-virt', [flag], { encoding: 'utf8', timeout: 2000, stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    return out && out !== 'none' ? out : null;
  } catch {
    return null; // absent, or exit 1 with "none"
  }
}

/**
 * Detects the environment. `root` prefixes every file read (tests point it at a fake
 * root); `useDetectVirt` false skips systemd-detect-virt, which answers for the real host.
 */
export function detectEnvironment(opts: { root?: string; useDetectVirt?: boolean } = {}): EnvironmentReport {
  const root = opts.root ?? '/';
  const useDetectVirt = opts.useDetectVirt ?? root === '/';
  const signals: string[] = [];
  if (existsSync(join(root, '.dockerenv'))) signals.push('/.dockerenv');
  if (existsSync(join(root, 'run/.containerenv'))) signals.push('/run/.containerenv');
  const environ = read(join(root, 'proc/1/environ'));
  if (environ !== null && environ.split('\0').some((v) => v.startsWith('container='))) signals.push('container= in PID 1 environment');
  const cgroup = read(join(root, 'proc/1/cgroup'));
  if (cgroup !== null && CONTAINER_CGROUP.test(cgroup)) signals.push('PID 1 cgroup names a container runtime');
  if (useDetectVirt) {
    const c = detectVirt('--container');
    if (c) signals.push(`systemd-detect-virt --container: ${c}`);
  }
  if (signals.length > 0) return { environment: 'container', signals };
  const vm = useDetectVirt ? detectVirt('--vm') : null;
  if (vm) return { environment: 'vm', signals: [`systemd-detect-virt --vm: ${vm}`] };
  const vendor = read(join(root, 'sys/class/dmi/id/sys_vendor'))?.trim() ?? '';
  const product = read(join(root, 'sys/class/dmi/id/product_name'))?.trim() ?? '';
  if (HYPERVISOR_VENDOR.test(vendor) || HYPERVISOR_VENDOR.test(product)) return { environment: 'vm', signals: [`DMI: ${vendor} ${product}`.trim()] };
  return { environment: 'host', signals: [] };
}
