/**
 * cgroup v2 discovery: where the unified hierarchy is mounted (read from /proc/self/mounts,
 * since it is /sys/fs/cgroup on most hosts and /sys/fs/cgroup/unified on hybrid ones) and
 * which cgroup a process is in.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

export const CGROUP2_SUPER_MAGIC = 0x63677270;
export const BPF_FS_MAGIC = 0xcafe4a11;

/** /proc/mounts escapes space, tab, newline and backslash as octal. */
function unescapeMountField(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** Mount points of the given filesystem type, in mount order. */
export function mountsOfType(fstype: string, mountsText?: string): string[] {
  let text = mountsText;
  if (text === undefined) {
    try {
      text = readFileSync('/proc/self/mounts', 'utf8');
    } catch {
      return [];
    }
  }
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    if (f.length >= 3 && f[2] === fstype) out.push(unescapeMountField(f[1]!));
  }
  return out;
}

/** The cgroup v2 mount point, or null when there is none. */
export function cgroup2Mount(mountsText?: string): string | null {
  return mountsOfType('cgroup2', mountsText)[0] ?? null;
}

/** Absolute path of the cgroup v2 group `pid` belongs to (default: this process). */
export function cgroupPathOfPid(pid: number | 'self' = 'self'): string | null {
  const mount = cgroup2Mount();
  if (mount === null) return null;
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/cgroup`, 'utf8');
  } catch {
    return null;
  }
  const line = text.split('\n').find((l) => l.startsWith('0::'));
  if (line === undefined) return null;
  return join(mount, line.slice(3));
}
