/**
 * Capability gates for tests that need root, BPF, qemu or a server binary. Outside CI a
 * missing capability skips the test with its reason; with CI=true it is a failure, so a
 * CI run can never go green by silently testing nothing.
 */
import { spawnSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import type { Test } from 'tap';

export const IN_CI = process.env.CI === 'true';

/**
 * Returns true when the test can go on. When `missingReason` is non-null, records a
 * skip (locally) or a failure (CI) naming the reason and returns false.
 */
export function requireCapability(t: Test, missingReason: string | null): boolean {
  if (missingReason === null) return true;
  if (IN_CI) {
    t.fail(`required capability missing in CI: ${missingReason}`);
  } else {
    t.test(`skipped: ${missingReason}`, { skip: missingReason }, () => {});
  }
  return false;
}

export function commandPath(cmd: string): string | null {
  const dirs = (process.env.PATH ?? '').split(':').concat(['/usr/sbin', '/sbin', '/usr/lib/postgresql/15/bin']);
  for (const d of dirs) {
    const p = `${d}/${cmd}`;
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      /* try the next directory */
    }
  }
  return null;
}

export function missingCommand(...cmds: string[]): string | null {
  const absent = cmds.filter((c) => commandPath(c) === null);
  return absent.length === 0 ? null : `command(s) not installed: ${absent.join(', ')} (run scripts/setup)`;
}

export function missingRoot(): string | null {
  return process.getuid?.() === 0 ? null : 'needs root';
}

/** Runs a command and returns its stdout, throwing with stderr on a non-zero exit. */
export function run(cmd: string, args: string[], opts: { input?: string; env?: NodeJS.ProcessEnv; cwd?: string } = {}): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', input: opts.input, env: opts.env, cwd: opts.cwd });
  if (r.status !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} exited ${r.status ?? r.signal}: ${r.stderr || r.stdout}`);
  }
  return r.stdout;
}
