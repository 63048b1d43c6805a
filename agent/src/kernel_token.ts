/**
 * The kernel token as the kernel module sees it: written atomically (0600) to token_path,
 * or to <state>/auth.token when that directory is not writable (and said so), then the
 * module is poked through its reload file to re-read it; its verdict is read back from
 * the `status` file beside the reload file.
 *
 * The module checks the token's hwid against its own `hwid` parameter, which only the
 * loader sets (the agent runs with ProtectKernelModules=yes and cannot reload it). So the
 * agent reads the parameter back (kmod_hwid_path) at start and on every token write and
 * says loudly when the module was loaded without this machine's hardware id.
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
  /** The module's `hwid` parameter as sysfs shows it (kmod_hwid_path). */
  kmodHwidPath: string;
  /** This machine's hardware id, the one the server puts into its kernel tokens. */
  hardwareId: string;
  log: Logger;
}

/**
 * How the loaded module is bound to this machine: `bound` (its hwid is this machine's),
 * `unbound` (loaded without hwid: it accepts a kernel token copied from any machine),
 * `mismatch` (loaded with another machine's hwid: it refuses this host's token),
 * `unknown` (loaded, but its hwid parameter cannot be read), `not_loaded`.
 */
export type KmodHwidState = 'bound' | 'unbound' | 'mismatch' | 'unknown' | 'not_loaded';

export interface KmodBinding {
  state: KmodHwidState;
  /** The module's hwid parameter ('' when loaded without one), null when unreadable. */
  module_hwid: string | null;
  /** This machine's hardware id. */
  hardware_id: string;
  /** What is wrong and how to fix it; null when bound or not loaded. */
  warning: string | null;
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
    // The token is written whatever the binding says. Not writing it would not close the
    // gap: an unbound module on this host is at risk only from tokens copied in from
    // elsewhere, which withholding this host's own genuine token does not stop, and a
    // module bound to another hwid refuses the token by itself ("hwid mismatch"). Keeping
    // the file current means a module reloaded with the right hwid is valid at once.
    this.checkBinding();
  }

  /** Reads the module's hwid parameter and compares it with this machine's. */
  binding(): KmodBinding {
    const hardware_id = this.d.hardwareId;
    let moduleHwid: string | null = null;
    try {
      moduleHwid = readFileSync(this.d.kmodHwidPath, 'utf8').trim();
    } catch {
      moduleHwid = null;
    }
    if (moduleHwid === null) {
      if (!existsSync(this.d.kmodReloadPath)) return { state: 'not_loaded', module_hwid: null, hardware_id, warning: null };
      return {
        state: 'unknown',
        module_hwid: null,
        hardware_id,
        warning: `the kernel module is loaded but its hwid parameter (${this.d.kmodHwidPath}) cannot be read: whether it checks this machine's hardware id is unknown`,
      };
    }
    if (moduleHwid === '') {
      return {
        state: 'unbound',
        module_hwid: '',
        hardware_id,
        warning: `the kernel module was loaded without hwid: it accepts a kernel token copied from any machine; reload it with hwid=${hardware_id} (scripts/install-agent --kmod writes /etc/modprobe.d/aegis.conf)`,
      };
    }
    if (moduleHwid.toLowerCase() !== hardware_id.toLowerCase()) {
      return {
        state: 'mismatch',
        module_hwid: moduleHwid,
        hardware_id,
        warning: `the kernel module was loaded with hwid=${moduleHwid}, not this machine's ${hardware_id}: it refuses this host's kernel token (hwid mismatch); reload it with hwid=${hardware_id}`,
      };
    }
    return { state: 'bound', module_hwid: moduleHwid, hardware_id, warning: null };
  }

  /** Logs the binding: an error unless the module is bound to this machine (or not loaded). */
  checkBinding(): KmodBinding {
    const b = this.binding();
    if (b.warning) {
      this.d.log.error(`KERNEL MODULE NOT BOUND TO THIS MACHINE: ${b.warning}`, { kmod_hwid: b.state, module_hwid: b.module_hwid, hardware_id: b.hardware_id });
    }
    return b;
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
