/**
 * The files of offline (air-gapped) activation as aegisctl reads and writes them: read with
 * a size bound (a hostile or wrong file never reaches the agent or the server whole), JSON
 * checked, written atomically with mode 0600 (a request carries the license key).
 */
import { readFileSync, statSync } from 'node:fs';
import { OFFLINE_FILE_MAX_BYTES } from '../../../protocol/src/index.js';
import { writeFileAtomicAsync } from '../../../runtime/src/atomic_file.js';
import { UsageError } from './errors.js';

/** The parsed JSON of `path`, or a UsageError saying why it cannot be used. */
export function readOfflineFile(path: string, what: string): unknown {
  let size: number;
  try {
    size = statSync(path).size;
  } catch (e) {
    throw new UsageError(`cannot read the ${what} ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  if (size > OFFLINE_FILE_MAX_BYTES) throw new UsageError(`the ${what} ${path} is ${size} bytes, larger than ${OFFLINE_FILE_MAX_BYTES}: not an Aegis offline file`);
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch {
    throw new UsageError(`the ${what} ${path} is not valid JSON`, { hint: 'copy the file again, unchanged' });
  }
}

/** Writes `value` as JSON to `path` (temp, fsync, rename; 0600). */
export async function writeOfflineFile(path: string, value: unknown): Promise<void> {
  await writeFileAtomicAsync(path, JSON.stringify(value, null, 2) + '\n', 0o600);
}
