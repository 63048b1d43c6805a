/**
 * What this host runs, for vulnerability matching: the installed dpkg packages (with their
 * source package and source version), the Debian release, and the sockets listening here
 * with the process holding each (/proc/net/{tcp,tcp6,udp,udp6} inode → /proc/<pid>/fd)
 * and the dpkg package owning that process's executable (/var/lib/dpkg/info/*.list).
 * Everything here reads files that a hostile or broken host may have filled with anything:
 * sizes are capped, unreadable parts are skipped and counted, and nothing throws past
 * `collect` except for the status file itself being unreadable.
 */
import { closeSync, fstatSync, openSync, readdirSync, readlinkSync, readSync } from 'node:fs';
import { join } from 'node:path';
import {
  DEBIAN_PACKAGE_NAME,
  MAX_INVENTORY_PACKAGES,
  MAX_INVENTORY_SOCKETS,
  parseDpkgStatus,
  type DpkgStatusProblem,
  type InventoryPackage,
  type ListeningSocket,
} from '../../../protocol/src/index.js';

/** Largest status file read (a large host's is a few MiB). */
export const MAX_DPKG_STATUS_BYTES = 64 << 20;
/** Largest single `.list` file or /proc/net table read. */
const MAX_LIST_BYTES = 16 << 20;
const VERSION_TEXT = /^[A-Za-z0-9.+~:-]{1,256}$/;

export interface InventoryPaths {
  dpkgStatus: string;
  dpkgInfoDir: string;
  osRelease: string;
  /** /proc, or another root for a test. */
  procRoot?: string;
}

export interface HostInventory {
  release: string;
  packages: InventoryPackage[];
  sockets: ListeningSocket[];
  /** Paragraphs of the status file that could not be read (skipped), and packages the report cannot carry. */
  problems: DpkgStatusProblem[];
  skipped: number;
}

/** Reads at most `max` bytes; larger is an error, never a silent truncation. */
export function readCapped(path: string, max: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    if (size > max) throw Object.assign(new Error(`${path} is ${size} bytes (at most ${max})`), { code: 'E2BIG' });
    // /proc files report size 0: read until EOF, within the cap.
    const chunks: Buffer[] = [];
    let total = 0;
    for (;;) {
      const buf = Buffer.alloc(65536);
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      total += n;
      if (total > max) throw Object.assign(new Error(`${path} passes ${max} bytes`), { code: 'E2BIG' });
      chunks.push(buf.subarray(0, n));
    }
    return Buffer.concat(chunks);
  } finally {
    closeSync(fd);
  }
}

/** VERSION_CODENAME from os-release, else `unknown` (nothing then matches). */
export function readRelease(path: string): string {
  try {
    const text = readCapped(path, 64 * 1024).toString('utf8');
    for (const line of text.split('\n')) {
      const m = /^VERSION_CODENAME=["']?([a-z0-9][a-z0-9.-]{0,31})["']?\s*$/.exec(line.trim());
      if (m) return m[1]!;
    }
  } catch {
    // No os-release: the release is unknown.
  }
  return 'unknown';
}

export function readPackages(statusPath: string): { packages: InventoryPackage[]; problems: DpkgStatusProblem[]; skipped: number } {
  const text = readCapped(statusPath, MAX_DPKG_STATUS_BYTES).toString('utf8');
  const inv = parseDpkgStatus(text);
  const seen = new Set<string>();
  const packages: InventoryPackage[] = [];
  let skipped = 0;
  for (const p of inv.packages) {
    const key = `${p.package}:${p.architecture}`;
    // What the server's schema would refuse is left out here, so one odd paragraph never costs the whole report.
    const fits =
      p.package.length <= 128 && p.source.length <= 128 && p.architecture.length <= 64 && VERSION_TEXT.test(p.version) && VERSION_TEXT.test(p.source_version) && DEBIAN_PACKAGE_NAME.test(p.source);
    if (!fits || seen.has(key) || packages.length >= MAX_INVENTORY_PACKAGES) {
      skipped++;
      continue;
    }
    seen.add(key);
    packages.push({ package: p.package, version: p.version, architecture: p.architecture, source: p.source, source_version: p.source_version });
  }
  return { packages, problems: inv.problems, skipped };
}

/** A /proc/net address: IPv4 is one little-endian word, IPv6 four. */
function addressOf(hex: string): string | null {
  if (hex.length === 8) {
    const n = Number.parseInt(hex, 16);
    if (!Number.isFinite(n)) return null;
    return [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, n >>> 24].join('.');
  }
  if (hex.length === 32) {
    const bytes: number[] = [];
    for (let w = 0; w < 4; w++) {
      const word = hex.slice(w * 8, w * 8 + 8);
      for (let b = 3; b >= 0; b--) bytes.push(Number.parseInt(word.slice(b * 2, b * 2 + 2), 16));
    }
    if (bytes.some((b) => !Number.isFinite(b))) return null;
    const groups: string[] = [];
    for (let i = 0; i < 16; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
    // WHATWG URL parsing writes the canonical (RFC 5952) form.
    return new URL(`http://[${groups.join(':')}]/`).hostname.replace(/^\[|\]$/g, '');
  }
  return null;
}

interface RawSocket {
  proto: ListeningSocket['proto'];
  address: string;
  port: number;
  inode: string;
}

/** Listening TCP sockets (state 0A) and unconnected bound UDP sockets (state 07, no remote). */
export function readListeningSockets(procRoot = '/proc'): RawSocket[] {
  const out: RawSocket[] = [];
  for (const proto of ['tcp', 'tcp6', 'udp', 'udp6'] as const) {
    let text: string;
    try {
      text = readCapped(join(procRoot, 'net', proto), MAX_LIST_BYTES).toString('latin1');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10) continue;
      const [local, remote, state, inode] = [f[1]!, f[2]!, f[3]!, f[9]!];
      const listening = proto.startsWith('tcp') ? state === '0A' : state === '07' && /:0000$/.test(remote);
      if (!listening || !/^\d+$/.test(inode) || inode === '0') continue;
      const [addrHex, portHex] = local.split(':');
      const address = addrHex ? addressOf(addrHex) : null;
      const port = portHex ? Number.parseInt(portHex, 16) : NaN;
      if (address === null || !Number.isInteger(port) || port < 0 || port > 65535) continue;
      out.push({ proto, address, port, inode });
      if (out.length >= MAX_INVENTORY_SOCKETS) return out;
    }
  }
  return out;
}

/** socket inode → the first process (lowest pid) holding it, with its executable. */
function socketOwners(inodes: Set<string>, procRoot: string): Map<string, { pid: number; exe: string | null }> {
  const owners = new Map<string, { pid: number; exe: string | null }>();
  if (inodes.size === 0) return owners;
  let pids: number[];
  try {
    pids = readdirSync(procRoot).filter((n) => /^\d+$/.test(n)).map(Number).sort((a, b) => a - b);
  } catch {
    return owners;
  }
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = readdirSync(join(procRoot, String(pid), 'fd'));
    } catch {
      continue; // another user's process (not root), or it just exited
    }
    for (const fd of fds) {
      let target: string;
      try {
        target = readlinkSync(join(procRoot, String(pid), 'fd', fd));
      } catch {
        continue;
      }
      const m = /^socket:\[(\d+)\]$/.exec(target);
      if (!m || !inodes.has(m[1]!) || owners.has(m[1]!)) continue;
      let exe: string | null = null;
      try {
        exe = readlinkSync(join(procRoot, String(pid), 'exe'));
        // A replaced binary reads "/usr/sbin/x (deleted)": still the package's file.
        exe = exe.replace(/ \(deleted\)$/, '');
        if (!exe.startsWith('/') || /[\u0000-\u001f\u007f]/.test(exe) || exe.length > 4096) exe = null;
      } catch {
        exe = null;
      }
      owners.set(m[1]!, { pid, exe });
    }
    if (owners.size === inodes.size) break;
  }
  return owners;
}

/** The paths dpkg may list an executable under: merged-/usr hosts list /bin/x for /usr/bin/x. */
function aliasesOf(exe: string): string[] {
  const m = /^\/usr\/(bin|sbin|lib|lib32|lib64|libx32)\/(.*)$/.exec(exe);
  return m ? [exe, `/${m[1]}/${m[2]}`] : [exe];
}

/** executable path → the package whose `.list` names it. */
export function owningPackages(exes: Set<string>, infoDir: string): Map<string, string> {
  const out = new Map<string, string>();
  if (exes.size === 0) return out;
  const wanted = new Map<string, string>();
  for (const e of exes) for (const a of aliasesOf(e)) wanted.set(a, e);
  let names: string[];
  try {
    names = readdirSync(infoDir).filter((n) => n.endsWith('.list')).sort();
  } catch {
    return out;
  }
  for (const name of names) {
    const pkg = name.slice(0, -'.list'.length).replace(/:[a-z0-9-]+$/, '');
    if (!DEBIAN_PACKAGE_NAME.test(pkg) || pkg.length > 128) continue;
    let text: string;
    try {
      text = readCapped(join(infoDir, name), MAX_LIST_BYTES).toString('utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n')) {
      const exe = wanted.get(line);
      if (exe !== undefined && !out.has(exe)) out.set(exe, pkg);
    }
    if (out.size === exes.size) break;
  }
  return out;
}

/** The listening sockets with their process, executable and owning package. */
export function listeningSockets(infoDir: string, procRoot = '/proc'): ListeningSocket[] {
  const raw = readListeningSockets(procRoot);
  const owners = socketOwners(new Set(raw.map((s) => s.inode)), procRoot);
  const exes = new Set([...owners.values()].map((o) => o.exe).filter((e): e is string => e !== null));
  const pkgs = owningPackages(exes, infoDir);
  const seen = new Set<string>();
  const out: ListeningSocket[] = [];
  for (const s of raw) {
    const o = owners.get(s.inode);
    const exe = o?.exe ?? null;
    const sock: ListeningSocket = { proto: s.proto, address: s.address, port: s.port, pid: o?.pid ?? null, exe, package: exe ? (pkgs.get(exe) ?? null) : null };
    const k = JSON.stringify(sock);
    if (seen.has(k)) continue; // SO_REUSEPORT: the same listener several times
    seen.add(k);
    out.push(sock);
  }
  return out.sort((a, b) => a.proto.localeCompare(b.proto) || a.port - b.port || a.address.localeCompare(b.address));
}

export function collectInventory(p: InventoryPaths): HostInventory {
  const { packages, problems, skipped } = readPackages(p.dpkgStatus);
  return { release: readRelease(p.osRelease), packages, sockets: listeningSockets(p.dpkgInfoDir, p.procRoot), problems, skipped };
}

/** The status file's identity and change time: a rename (dpkg writes status-new, then renames) changes the inode. */
export function statusStamp(path: string): string | null {
  try {
    const fd = openSync(path, 'r');
    try {
      const st = fstatSync(fd);
      return `${st.ino}:${st.size}:${st.mtimeMs}`;
    } finally {
      closeSync(fd);
    }
  } catch {
    return null;
  }
}
