/**
 * The agent's state directory: small JSON documents written atomically (temp file, fsync,
 * rename, fsync dir, in plain TypeScript so no native addon is needed) with mode 0600. A document that does not
 * parse or fails its check is logged, moved aside as `<name>.corrupt-<time>` and treated
 * as absent, so a damaged cache costs a re-fetch, never a crash.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomicAsync } from '../../runtime/src/atomic_file.js';
import type { Logger } from './logger.js';

export class StateStore {
  constructor(
    readonly dir: string,
    private readonly log: Logger,
  ) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    // A state dir left group/world-readable by someone else is tightened, not trusted.
    if ((statSync(dir).mode & 0o077) !== 0) chmodSync(dir, 0o700);
  }

  path(name: string): string {
    return join(this.dir, name);
  }

  /** Reads `name`; `check` returns an error message for a parsed value it cannot use. */
  read<T>(name: string, check: (v: unknown) => string | null): T | null {
    const p = this.path(name);
    if (!existsSync(p)) return null;
    let reason: string | null;
    let value: unknown;
    try {
      value = JSON.parse(readFileSync(p, 'utf8'));
      reason = check(value);
    } catch (e) {
      reason = `not valid JSON: ${(e as Error).message}`;
    }
    if (reason === null) return value as T;
    const aside = `${p}.corrupt-${Date.now()}`;
    try {
      renameSync(p, aside);
    } catch {
      rmSync(p, { force: true });
    }
    this.log.warn('discarded a damaged state file', { file: p, reason, moved_to: aside });
    return null;
  }

  /** Replaces `name` with `value` as JSON (0600). */
  async write(name: string, value: unknown): Promise<void> {
    await this.writeText(name, JSON.stringify(value, null, 2) + '\n');
  }

  /** Replaces `name` with `text` as is (0600): for files whose format is not ours, e.g. NATS .creds. */
  async writeText(name: string, text: string): Promise<void> {
    await writeFileAtomicAsync(this.path(name), text, 0o600);
  }

  remove(name: string): void {
    rmSync(this.path(name), { force: true });
  }
}
