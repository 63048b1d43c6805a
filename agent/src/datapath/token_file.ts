/**
 * Atomic file replacement (used for the kernel entitlement token): readers see the old
 * content or the new one, never a partial file, and the file has exactly `mode`.
 */
import { isAbsolute } from 'node:path';
import { loadAddon } from './addon.js';
import { InvalidArgumentError, TokenWriteError } from './errors.js';

export async function writeFileAtomic(path: string, data: string | Uint8Array, opts: { mode?: number } = {}): Promise<void> {
  if (typeof path !== 'string' || !isAbsolute(path) || path.endsWith('/')) {
    throw new InvalidArgumentError(`path must be an absolute file path, got ${JSON.stringify(path)}`);
  }
  const mode = opts.mode ?? 0o600;
  if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777) {
    throw new InvalidArgumentError(`mode must be a permission mode like 0o600, got ${JSON.stringify(mode)}`);
  }
  const buf = typeof data === 'string' ? Buffer.from(data, 'utf8') : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  try {
    await loadAddon().writeFileAtomic(path, buf, mode);
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    throw new TokenWriteError(`cannot write ${path}: ${msg}`, { cause: e });
  }
}
