/**
 * The kernel token as the kernel module sees it: written atomically (0600) to token_path,
 * or to <state>/auth.token when that directory is not writable (and said so), then the
 * module is poked through its reload file to re-read it; its verdict is read back from
 * the `status` file beside the reload file.
 */
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { writeFileAtomic } from './datapath/index.js';
import type { Logger } from './logger.js';

export interface KernelTokenDeps {
  /** Where the kernel module reads the token (token_path). */
  tokenPath: string;
  /** The state directory: the fallback location. */
  stateDir: string;
  /** The kernel module's reload file (kmod_reload_path); absent when the module is not loaded. */
  kmodReloadPath: string;
  log: Logger;
}

/** The token file the kernel module reads, and the module's reload and status files. */
export class KernelToken {
  /** Where the token was last written, or null when there is none. */
  writtenTo: string | null = null;
  /** True when token_path was not writable and the state directory was used instead. */
  fallback = false;

  constructor(private readonly d: KernelTokenDeps) {}

  private get fallbackPath(): string {
    return join(this.d.stateDir, 'auth.token');
  }

  /** Writes `token` for the kernel module and pokes it to re-read. */
  async write(token: string): Promise<void> {
    let target = this.d.tokenPath;
    try {
      // Only the last directory is created (/etc/aegis): a recursive mkdir into a
      // pseudo-filesystem such as /proc can spin forever in Node instead of failing.
      if (!existsSync(dirname(target))) mkdirSync(dirname(target), { mode: 0o755 });
      await writeFileAtomic(target, token, { mode: 0o600 });
      this.fallback = false;
    } catch (e) {
      target = this.fallbackPath;
      this.d.log.warn('token path not writable; using the state directory', { wanted: this.d.tokenPath, using: target, error: (e as Error).message });
      await writeFileAtomic(target, token, { mode: 0o600 });
      this.fallback = true;
    }
    this.writtenTo = target;
    this.poke();
  }

  /** Removes the token from both places and pokes the module, which then stops enforcing the license. */
  async remove(): Promise<void> {
    for (const p of [this.d.tokenPath, this.fallbackPath]) rmSync(p, { force: true });
    this.writtenTo = null;
    this.poke();
  }

  /** The kernel module's verdict, when it is loaded. */
  kmodStatus(): string | null {
    try {
      return readFileSync(join(dirname(this.d.kmodReloadPath), 'status'), 'utf8').trim();
    } catch {
      return null;
    }
  }

  private poke(): void {
    if (!existsSync(this.d.kmodReloadPath)) return;
    try {
      writeFileSync(this.d.kmodReloadPath, '1\n');
      this.d.log.debug('kernel module reload triggered', { path: this.d.kmodReloadPath });
    } catch (e) {
      this.d.log.warn('could not trigger kernel module reload', { path: this.d.kmodReloadPath, error: (e as Error).message });
    }
  }
}
