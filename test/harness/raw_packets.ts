/**
 * Drives test/attacks/bypass_packets.py, the one crafter of the raw packets the datapath
 * bypass attacks send (TCP ACK without a connection, UDP-Lite, SCTP, protocol 253, ICMP
 * echo, IPv6 extension-header chains, IPv4 fragments), and its raw listener.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { runInCgroup } from './datapath.js';
import type { ChildResult } from './datapath.js';

export const BYPASS_SCRIPT = fileURLToPath(new URL('../../../test/attacks/bypass_packets.py', import.meta.url));

/** Sends one packet of each case to host (IPv4) / host6 (IPv6), from a child in `cgroup`. */
export function sendBypass(cgroup: string | null, cases: readonly string[], host: string, port: number, marker: string, host6 = '::1'): Promise<ChildResult> {
  return runInCgroup(cgroup, ['python3', BYPASS_SCRIPT, 'send', cases.join(','), host, String(port), marker, host6]);
}

/** The same, sent from inside network namespace `ns`. */
export function sendBypassFromNetns(ns: string, cases: readonly string[], host: string, port: number, marker: string, host6: string): Promise<ChildResult> {
  return runInCgroup(null, ['python3', BYPASS_SCRIPT, 'send-netns', ns, cases.join(','), host, String(port), marker, host6]);
}

/**
 * Starts the raw listener (in `cgroup`, or where this process is) for `cases`; resolves
 * once it listens, with a promise of the cases whose packet carrying `marker` arrived
 * (wrapped: a promise resolved with a promise would wait for the inner one).
 */
export function rawListen(marker: string, seconds: number, cases: readonly string[] | null = null, cgroup: string | null = null): Promise<{ seen: Promise<string[]> }> {
  const argv = ['python3', BYPASS_SCRIPT, 'recv', String(seconds), marker, ...(cases === null ? [] : [cases.join(',')])];
  const cmd = cgroup === null ? 'exec "$@"' : `echo $$ > "${cgroup}/cgroup.procs" && exec "$@"`;
  return new Promise((ready, reject) => {
    const child = spawn('sh', ['-c', cmd, 'sh', ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let resolveSeen: (v: string[]) => void;
    let rejectSeen: (e: Error) => void;
    const seen = new Promise<string[]>((r, j) => {
      resolveSeen = r;
      rejectSeen = j;
    });
    seen.catch(() => undefined); // observed by the caller through `seen`
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.startsWith('ready\n')) ready({ seen });
    });
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) {
        const e = new Error(`listener exited ${code}: ${err}`);
        reject(e);
        rejectSeen(e);
        return;
      }
      resolveSeen(JSON.parse(out.split('\n').filter(Boolean).pop()!) as string[]);
    });
  });
}
