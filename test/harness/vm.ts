/**
 * Booting Debian's own kernel under qemu (TCG: no KVM needed) with a busybox initramfs,
 * for the tests that must run in the kernel the product targets rather than the host's:
 * the kernel module (kmod/test/vm.test.ts) and the BPF datapath (test/vm_datapath.test.ts).
 */
import { spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';

export interface VmKernel {
  image: string;
  version: string;
  /** The matching /usr/src/linux-headers-<version>, when installed. */
  kdir: string | null;
}

/**
 * The newest /boot/vmlinuz-* (with `headers`: the newest one whose headers are installed
 * too, for building a module against it). Null when there is none.
 */
export function findKernel(opts: { headers?: boolean } = {}): VmKernel | null {
  let versions: string[];
  try {
    versions = readdirSync('/boot').filter((f) => f.startsWith('vmlinuz-')).map((f) => f.slice('vmlinuz-'.length));
  } catch {
    return null;
  }
  const kdirOf = (v: string): string | null => (existsSync(`/usr/src/linux-headers-${v}/Makefile`) ? `/usr/src/linux-headers-${v}` : null);
  const version = versions
    .filter((v) => !opts.headers || kdirOf(v) !== null)
    .sort((a, b) => a.localeCompare(b, 'en', { numeric: true }))
    .at(-1);
  return version ? { image: `/boot/vmlinuz-${version}`, version, kdir: kdirOf(version) } : null;
}

export interface VmRun {
  /** Serial console output, carriage returns removed. */
  output: string;
  code: number | null;
  timedOut: boolean;
  seconds: number;
}

/** Boots `image` with `initrd` (1 vCPU, `memMb` of RAM) until it powers off or `timeoutMs` passes. */
export function bootVm(image: string, initrd: string, timeoutMs: number, memMb = 512): Promise<VmRun> {
  const started = Date.now();
  return new Promise((resolve) => {
    const q = spawn('qemu-system-x86_64', [
      '-accel', 'tcg', '-m', String(memMb), '-smp', '1', '-nographic', '-no-reboot',
      '-kernel', image, '-initrd', initrd,
      '-append', 'console=ttyS0 panic=-1 quiet',
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    let timedOut = false;
    q.stdout.on('data', (d: Buffer) => { output += d.toString('utf8'); });
    q.stderr.on('data', (d: Buffer) => { output += d.toString('utf8'); });
    const timer = setTimeout(() => { timedOut = true; q.kill('SIGKILL'); }, timeoutMs);
    q.on('close', (code) => {
      clearTimeout(timer);
      resolve({ output: output.replace(/\r/g, ''), code, timedOut, seconds: (Date.now() - started) / 1000 });
    });
  });
}

/** Kernel log lines that mean the kernel itself went wrong. */
export const KERNEL_TROUBLE = /BUG|WARNING:|Oops|Call Trace|general protection|KASAN|refcount_t/;
