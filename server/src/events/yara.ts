/**
 * YARA through Debian's `yara` and `yarac` commands: never a shell, arguments as a list,
 * inputs in a private temporary directory (0700) removed afterwards, a timeout on every
 * run (yara's own `--timeout` and a SIGKILL past it), bounded output. Rules are compiled
 * when uploaded (`yarac`), so a rule that does not compile is refused with the compiler's
 * message and never reaches a scan; `include` is refused outright (it would read files of
 * the server's choosing... or the uploader's).
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AegisError } from '../../../protocol/src/index.js';

export interface YaraRuleSource {
  /** Namespaces the rule's matches (the rule's id). */
  id: string;
  source: string;
}

export interface YaraScan {
  status: 'ok' | 'timeout' | 'error';
  /** Matching rules, as `{id, rule}`: the uploaded rule's id and the YARA rule name inside it. */
  matches: Array<{ id: string; rule: string }>;
  error?: string;
}

interface Run {
  code: number | null;
  killed: boolean;
  stdout: string;
  stderr: string;
}

const MAX_OUTPUT = 1024 * 1024;

function run(cmd: string, args: string[], timeoutMs: number): Promise<Run> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: MAX_OUTPUT, shell: false, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C' } }, (err, stdout, stderr) => {
      if (err && (err as NodeJS.ErrnoException).code === 'ENOENT') {
        reject(new AegisError('INTERNAL', `${cmd} is not installed (apt-get install yara, or set AEGIS_YARA / AEGIS_YARAC)`));
        return;
      }
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : null) : 0;
      resolve({ code, killed: Boolean(err && (err as { killed?: boolean }).killed), stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

async function withDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'aegis-yara-'));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** `include "…"` anywhere in a rule: refused before the compiler sees it. */
const INCLUDE = /(^|[^A-Za-z0-9_])include\s*"/;

/** yara processes at once; more scans wait their turn (each can take the whole timeout). */
const MAX_CONCURRENT = 2;

export class Yara {
  private running = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(
    private readonly opts: { yara: string; yarac: string; timeoutSeconds: number },
  ) {}

  private async slot<T>(fn: () => Promise<T>): Promise<T> {
    if (this.running >= MAX_CONCURRENT) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.running++;
    try {
      return await fn();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.running--;
    }
  }

  /** Compiles `source` alone; YARA_RULE_INVALID with the compiler's message if it does not compile. */
  async check(source: string): Promise<void> {
    return this.slot(() => this.compile(source));
  }

  private async compile(source: string): Promise<void> {
    if (INCLUDE.test(source)) {
      throw new AegisError('YARA_RULE_INVALID', 'the rule does not compile: include is not allowed', { details: { errors: ['include is not allowed: send the rule whole'] } });
    }
    await withDir(async (dir) => {
      const file = join(dir, 'rule.yar');
      await writeFile(file, source, { mode: 0o600 });
      const r = await run(this.opts.yarac, ['--fail-on-warnings', file, join(dir, 'rule.yarc')], this.opts.timeoutSeconds * 1000);
      if (r.code === 0) return;
      const text = `${r.stderr}\n${r.stdout}`.split(dir + '/').join('').trim();
      const errors = text.split('\n').map((l) => l.trim()).filter(Boolean).slice(0, 20);
      const why = r.killed ? 'the compiler timed out' : errors.find((l) => /error/i.test(l)) ?? errors[0] ?? `yarac exited ${r.code}`;
      throw new AegisError('YARA_RULE_INVALID', `the rule does not compile: ${why}`, { details: { errors: r.killed ? [why] : errors } });
    });
  }

  /** Runs every rule over `bytes`: the matches, or why the scan did not finish. */
  async scan(rules: readonly YaraRuleSource[], bytes: Buffer): Promise<YaraScan> {
    if (rules.length === 0) return { status: 'ok', matches: [] };
    return this.slot(() => withDir(async (dir) => {
      const args = ['--print-namespace', '--no-warnings', '--fast-scan', `--timeout=${this.opts.timeoutSeconds}`];
      const byNs = new Map<string, string>();
      for (const [i, r] of rules.entries()) {
        const ns = `r${i}`;
        byNs.set(ns, r.id);
        const file = join(dir, `${ns}.yar`);
        await writeFile(file, r.source, { mode: 0o600 });
        args.push(`${ns}:${file}`);
      }
      const sample = join(dir, 'sample');
      await writeFile(sample, bytes, { mode: 0o600 });
      args.push(sample);
      const r = await run(this.opts.yara, args, (this.opts.timeoutSeconds + 5) * 1000);
      if (r.killed || /timeout|timed out/i.test(r.stderr)) return { status: 'timeout', matches: [] };
      if (r.code !== 0) return { status: 'error', matches: [], error: r.stderr.split(dir + '/').join('').trim().slice(0, 500) || `yara exited ${r.code}` };
      const matches: Array<{ id: string; rule: string }> = [];
      for (const line of r.stdout.split('\n')) {
        const m = /^(r\d+):([A-Za-z0-9_]+) /.exec(line);
        const id = m ? byNs.get(m[1]!) : undefined;
        if (m && id) matches.push({ id, rule: m[2]! });
      }
      return { status: 'ok', matches };
    }));
  }
}
