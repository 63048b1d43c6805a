/**
 * Network namespaces joined to the host by a veth pair, for tests that need packets to
 * arrive from another machine's point of view (ingress over a real interface, not
 * loopback). Names and addresses derive from the process id so test files running at the
 * same time do not collide; remove() deletes the namespace (and with it the veth pair)
 * and is safe to call twice.
 */
import { spawn, spawnSync } from 'node:child_process';

export interface VethNetns {
  /** Namespace name (ip netns). */
  ns: string;
  /** Host end of the veth pair (in the host namespace). */
  hostIf: string;
  /** Namespace end. */
  nsIf: string;
  host4: string;
  ns4: string;
  host6: string;
  ns6: string;
  /** Removes the namespace and the pair; idempotent. */
  remove(): void;
}

export interface ExecResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

function ip(args: string[]): void {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')} failed: ${(r.stderr || r.stdout).trim()}`);
}

/** Null when `ip netns` works here (root, iproute2), else why not. */
export function missingNetns(): string | null {
  if (process.getuid?.() !== 0) return 'not root (network namespaces)';
  const r = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) return `ip netns unavailable: ${r.error?.message ?? r.stderr.trim()}`;
  return null;
}

/**
 * Creates namespace `aeg<tag><pid>` and a veth pair between it and the host, with IPv4
 * (a /30 of 10.128.0.0/14 picked by pid) and IPv6 (fd00:ae61:<pid>::/64, no DAD wait)
 * addresses on both ends, both ends up. On failure everything made so far is removed.
 */
export function createVethNetns(tag: string): VethNetns {
  const id = process.pid % 65536;
  const short = `${tag.slice(0, 3)}${id.toString(36)}`;
  const base = (10 << 24) | (128 << 16) | (id << 2);
  const v4 = (n: number): string => [(base >>> 24) & 255, (base >>> 16) & 255, (base >>> 8) & 255, (base & 255) + n].join('.');
  const v6 = `fd00:ae61:${id.toString(16)}::`;
  const n: VethNetns = {
    ns: `aeg${tag}${process.pid}`,
    hostIf: `ah${short}`,
    nsIf: `an${short}`,
    host4: v4(1),
    ns4: v4(2),
    host6: `${v6}1`,
    ns6: `${v6}2`,
    remove() {
      spawnSync('ip', ['netns', 'del', n.ns]);
      // The pair goes with the namespace; this catches a failure before the move.
      spawnSync('ip', ['link', 'del', n.hostIf]);
    },
  };
  // Also removed when the process exits without reaching its teardown.
  process.once('exit', () => n.remove());
  try {
    n.remove(); // leftovers of an earlier process with the same pid
    ip(['netns', 'add', n.ns]);
    ip(['link', 'add', n.hostIf, 'type', 'veth', 'peer', 'name', n.nsIf]);
    ip(['link', 'set', n.nsIf, 'netns', n.ns]);
    ip(['addr', 'add', `${n.host4}/30`, 'dev', n.hostIf]);
    ip(['addr', 'add', `${n.host6}/64`, 'dev', n.hostIf, 'nodad']);
    ip(['link', 'set', n.hostIf, 'up']);
    ip(['-n', n.ns, 'addr', 'add', `${n.ns4}/30`, 'dev', n.nsIf]);
    ip(['-n', n.ns, 'addr', 'add', `${n.ns6}/64`, 'dev', n.nsIf, 'nodad']);
    ip(['-n', n.ns, 'link', 'set', n.nsIf, 'up']);
    ip(['-n', n.ns, 'link', 'set', 'lo', 'up']);
  } catch (e) {
    n.remove();
    throw e;
  }
  return n;
}

/** Runs `argv` inside namespace `ns` (ip netns exec) and collects its output. */
export function runInNetns(ns: string, argv: string[], timeoutMs = 60_000): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('ip', ['netns', 'exec', ns, ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
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
