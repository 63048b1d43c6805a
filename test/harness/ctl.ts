/** Runs aegisctl as a person would: a child process of plain node, stdout and stderr captured. */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const CTL = fileURLToPath(new URL('../../agent/src/ctl/main.js', import.meta.url));

export interface CtlRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Async on purpose: the aegis-server under test runs in the test's own process, so a
 * blocking spawnSync would leave it unable to answer.
 */
export function aegisctl(env: Record<string, string | undefined>, args: string[], stdin?: string): Promise<CtlRun> {
  const base: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('AEGIS_')) base[k] = v;
  for (const [k, v] of Object.entries(env)) if (v !== undefined) base[k] = v;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CTL, ...args], { env: base, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(stdin ?? '');
  });
}

/** A Node stack frame ("    at foo (file.js:1:2)") anywhere in the text. */
export const STACK_FRAME = /^\s+at .+[:(]\d+/m;
