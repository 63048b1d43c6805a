/**
 * Shared set-up for the datapath tests: capability checks (root, bpffs, cgroup v2, the
 * addon), per-file pin roots and cgroups with unique names so test files can run in
 * parallel, and a child-process runner that places the child in a cgroup before it runs.
 */
import { spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { createServer } from 'node:net';
import type { AddressInfo, Socket } from 'node:net';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmdirSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadAddon } from '../../agent/src/datapath/addon.js';
import { BPF_FS_MAGIC } from '../../agent/src/datapath/cgroup.js';
import { cgroup2Mount, probe } from '../../agent/src/datapath/index.js';
import { BPF_ABI } from '../../protocol/src/index.js';
import { missingRoot, run } from './capabilities.js';

const BPFFS = '/sys/fs/bpf';

/** Mounts bpffs at /sys/fs/bpf when it is missing (root only); true when it is there. */
export function ensureBpffs(): boolean {
  const isBpf = (): boolean => {
    try {
      return statfsSync(BPFFS).type === BPF_FS_MAGIC;
    } catch {
      return false;
    }
  };
  if (isBpf()) return true;
  try {
    run('mount', ['-t', 'bpf', 'bpf', BPFFS]);
  } catch {
    return false;
  }
  return isBpf();
}

/** Null when the datapath can be tested here, else why not. */
export async function missingDatapath(): Promise<string | null> {
  const root = missingRoot();
  if (root !== null) return `${root} (BPF datapath tests)`;
  if (!ensureBpffs()) return `no BPF filesystem at ${BPFFS} and mounting one failed`;
  try {
    loadAddon();
  } catch (e) {
    return (e as Error).message;
  }
  const p = await probe({ pinRoot: BPFFS });
  return p.ok ? null : p.reasons.join('; ');
}

export function testPinRoot(tag: string): string {
  return `${BPFFS}/aegis-test-${tag}-${process.pid}`;
}

/** Creates a cgroup v2 group for a test; remove it with removeCgroup(). */
export function makeCgroup(tag: string): string {
  const mount = cgroup2Mount();
  if (mount === null) throw new Error('no cgroup v2 mount');
  const path = join(mount, `aegis-test-${tag}-${process.pid}`);
  mkdirSync(path, { recursive: true });
  return path;
}

/** Moves any process left in the group to the root group and removes it. */
export function removeCgroup(path: string): void {
  if (!existsSync(path)) return;
  const mount = cgroup2Mount()!;
  try {
    const pids = readFileSync(join(path, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean);
    for (const pid of pids) {
      try {
        writeFileSync(join(mount, 'cgroup.procs'), pid);
      } catch {
        /* the process exited meanwhile */
      }
    }
    rmdirSync(path);
  } catch {
    /* best effort: a leftover empty group is harmless */
  }
}

/** Path of a compiled helper script of the datapath (dist/agent/src/datapath/<name>). */
export function helperScript(name: string): string {
  return fileURLToPath(new URL(`../../agent/src/datapath/${name}`, import.meta.url));
}

/** Path of a compiled child program of the test harness (dist/test/harness/<name>). */
export function harnessScript(name: string): string {
  return fileURLToPath(new URL(`./${name}`, import.meta.url));
}

/** Resolves once `path` exists (a child's ready file), or rejects after `ms`. */
export async function waitForFile(path: string, ms = 10_000): Promise<string> {
  const until = Date.now() + ms;
  while (!existsSync(path)) {
    if (Date.now() > until) throw new Error(`${path} did not appear within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
  // The writer may not have finished: wait for content.
  for (;;) {
    const text = readFileSync(path, 'utf8');
    if (text.length > 0 || Date.now() > until) return text;
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A listener in this (unenforced) process; `seen` counts connections or datagrams. */
export interface Listener {
  port: number;
  seen: number;
  close(): Promise<void>;
}

/** TCP listener that accepts and closes at once. */
export async function tcpListener(host: string): Promise<Listener> {
  const l: Listener = { port: 0, seen: 0, close: async () => {} };
  const srv = createServer((c) => {
    l.seen++;
    c.end();
  });
  await new Promise<void>((r) => srv.listen(0, host, () => r()));
  l.port = (srv.address() as AddressInfo).port;
  l.close = () => new Promise<void>((r) => srv.close(() => r()));
  return l;
}

/** TCP listener that echoes what it receives until the peer ends; close() also drops open connections. */
export async function tcpEcho(host: string): Promise<Listener> {
  const l: Listener = { port: 0, seen: 0, close: async () => {} };
  const open = new Set<Socket>();
  const srv = createServer((c) => {
    l.seen++;
    open.add(c);
    c.on('error', () => c.destroy());
    c.on('close', () => open.delete(c));
    c.pipe(c);
  });
  await new Promise<void>((r) => srv.listen(0, host, () => r()));
  l.port = (srv.address() as AddressInfo).port;
  l.close = () =>
    new Promise<void>((r) => {
      for (const c of open) c.destroy();
      srv.close(() => r());
    });
  return l;
}

/** UDP socket that sends every datagram back to its sender. */
export async function udpEcho(host: string): Promise<Listener> {
  const l: Listener = { port: 0, seen: 0, close: async () => {} };
  const s = createSocket(host.includes(':') ? 'udp6' : 'udp4');
  s.on('message', (m, rinfo) => {
    l.seen++;
    s.send(m, rinfo.port, rinfo.address);
  });
  await new Promise<void>((r) => s.bind(0, host, () => r()));
  l.port = s.address().port;
  l.close = () => new Promise<void>((r) => s.close(() => r()));
  return l;
}

export interface ChildResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs `argv` with the child placed in `cgroupPath` (null: where this process is) before
 * its first instruction: a shell writes its own pid to cgroup.procs and then execs argv,
 * so every socket the child opens belongs to that cgroup.
 */
export function runInCgroup(cgroupPath: string | null, argv: string[], timeoutMs = 120_000): Promise<ChildResult> {
  const cmd = cgroupPath === null ? 'exec "$@"' : `echo $$ > "${cgroupPath}/cgroup.procs" && exec "$@"`;
  return new Promise((resolve, reject) => {
    const child = spawn('sh', ['-c', cmd, 'sh', ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Rewrites the layout marker (magic, version, created_ns) with bpftool, as another build would have written it. */
export function writeLayoutMarker(pinRoot: string, version: number): void {
  const bytes = Buffer.alloc(16);
  bytes.writeUInt32LE(BPF_ABI.AEGIS_LAYOUT_MAGIC, 0);
  bytes.writeUInt32LE(version, 4);
  run('bpftool', ['map', 'update', 'pinned', join(pinRoot, BPF_ABI.AEGIS_LAYOUT_PIN), 'key', '0', '0', '0', '0', 'value', ...[...bytes].map(String)]);
}

/**
 * Turns this build's pins under `pinRoot` into what the previous layout would have left:
 * its maps and links renamed to that layout's prefix (the programs keep running with the
 * policy in those maps) and the marker naming it, or no marker with `marker: false`.
 */
export function ageLayout(pinRoot: string, o: { marker?: boolean } = {}): void {
  const prefix = BPF_ABI.AEGIS_PIN_PREFIX;
  const older = `aegis_v${BPF_ABI.AEGIS_LAYOUT_VERSION - 1}_`;
  for (const n of readdirSync(pinRoot)) {
    if (n.startsWith(prefix)) renameSync(join(pinRoot, n), join(pinRoot, older + n.slice(prefix.length)));
  }
  if (o.marker === false) rmSync(join(pinRoot, BPF_ABI.AEGIS_LAYOUT_PIN), { force: true });
  else writeLayoutMarker(pinRoot, BPF_ABI.AEGIS_LAYOUT_VERSION - 1);
}

/** Runs `node script args...` in `cgroupPath` (see runInCgroup). */
export function runNodeInCgroup(cgroupPath: string | null, script: string, args: string[], timeoutMs = 120_000): Promise<ChildResult> {
  return runInCgroup(cgroupPath, [process.execPath, script, ...args], timeoutMs);
}

/** TCP connects from inside `cgroup` to 127.0.0.1 at each port (1 s each): which succeeded. */
export async function probeTcp(cgroup: string, ports: number[]): Promise<boolean[]> {
  const r = await runNodeInCgroup(cgroup, helperScript('traffic_client.js'), [
    JSON.stringify({ op: 'probe', targets: ports.map((port) => ({ proto: 'tcp', host: '127.0.0.1', port, timeoutMs: 1000 })) }),
  ]);
  return (JSON.parse(r.stdout.trim().split('\n').pop()!) as { results: Array<{ ok: boolean }> }).results.map((x) => x.ok);
}

export { eventually } from './wait.js';
