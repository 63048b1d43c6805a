/**
 * Atomic file replacement for state that must survive a crash (signing keys, keyring,
 * NATS user registry, the agent's state directory): write a temp file in the same
 * directory, fsync it, rename over the target, fsync the directory. A crash leaves either
 * the old file or the new one, never a torn one. The file gets exactly `mode`, whatever
 * the umask, because it may hold a secret and readers check its permissions.
 */
import { closeSync, fchmodSync, fsyncSync, openSync, renameSync, unlinkSync, writeSync, constants } from 'node:fs';
import { open, rename, unlink } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';

/** A temp name beside `path`, so the rename stays on one filesystem (and is atomic). */
function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
}

const bytesOf = (data: string | Uint8Array): Uint8Array => (typeof data === 'string' ? Buffer.from(data, 'utf8') : data);

/** Replaces `path` with `data` (synchronously: for start-up and the server's key files). */
export function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o600): void {
  const dir = dirname(path);
  const tmp = tempPathFor(path);
  const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, mode);
  try {
    fchmodSync(fd, mode);
    const buf = bytesOf(data);
    let off = 0;
    while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
    fsyncSync(fd);
  } catch (err) {
    closeSync(fd);
    unlinkSync(tmp);
    throw err;
  }
  closeSync(fd);
  try {
    renameSync(tmp, path);
  } catch (err) {
    unlinkSync(tmp);
    throw err;
  }
  const dfd = openSync(dir, constants.O_RDONLY);
  try {
    fsyncSync(dfd);
  } finally {
    closeSync(dfd);
  }
}

/**
 * Replaces `path` with `data` without blocking the event loop (the agent's state files,
 * written while it serves its control socket). Same guarantees as writeFileAtomic.
 */
export async function writeFileAtomicAsync(path: string, data: string | Uint8Array, mode = 0o600): Promise<void> {
  const tmp = tempPathFor(path);
  const fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, mode);
  try {
    await fh.chmod(mode);
    await fh.writeFile(bytesOf(data));
    await fh.sync();
  } catch (err) {
    await fh.close();
    await unlink(tmp);
    throw err;
  }
  await fh.close();
  try {
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp);
    throw err;
  }
  const dh = await open(dirname(path), constants.O_RDONLY);
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}
