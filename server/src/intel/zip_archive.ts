/**
 * A reader for the zip archives vulnerability feeds ship (OSV's per-ecosystem `all.zip`),
 * from the central directory, for untrusted archives: every limit is checked on the
 * declared sizes before anything is inflated and again on the real output, so a zip bomb,
 * an entry escaping its directory, an encrypted or zip64 entry or a corrupted one is
 * refused with a stable code and nothing of the archive is returned.
 */
import { crc32, inflateRawSync } from 'node:zlib';

export type ZipErrorCode =
  | 'ZIP_MALFORMED'
  | 'ZIP_UNSUPPORTED'
  | 'ZIP_ENCRYPTED'
  | 'ZIP_UNSAFE_NAME'
  | 'ZIP_TOO_MANY_ENTRIES'
  | 'ZIP_ENTRY_TOO_LARGE'
  | 'ZIP_TOO_LARGE'
  | 'ZIP_RATIO'
  | 'ZIP_CORRUPT';

export class ZipError extends Error {
  constructor(
    readonly code: ZipErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'ZipError';
  }
}

export interface ZipLimits {
  maxEntries: number;
  maxEntryBytes: number;
  maxTotalBytes: number;
  /** Uncompressed over compressed size, per entry; JSON rarely passes 20. */
  maxRatio: number;
}

export const DEFAULT_ZIP_LIMITS: ZipLimits = { maxEntries: 500_000, maxEntryBytes: 16 << 20, maxTotalBytes: 2 ** 31, maxRatio: 200 };

export interface ZipEntry {
  name: string;
  data: Buffer;
}

const EOCD = 0x06054b50;
const CENTRAL = 0x02014b50;
const LOCAL = 0x04034b50;

/** True when the bytes start like a zip archive. */
export function looksLikeZip(b: Buffer): boolean {
  return b.length >= 4 && (b.readUInt32LE(0) === LOCAL || b.readUInt32LE(0) === EOCD);
}

/** Entry names must stay inside the archive: relative, no `..`, no backslash, drive or control character. */
function checkName(name: string): void {
  const bad =
    name === '' ||
    name.startsWith('/') ||
    /^[A-Za-z]:/.test(name) ||
    name.includes('\\') ||
    /[\u0000-\u001f\u007f]/.test(name) ||
    name.split('/').some((seg) => seg === '..');
  if (bad) throw new ZipError('ZIP_UNSAFE_NAME', `unsafe entry name ${JSON.stringify(name.slice(0, 200))}`);
}

function findEocd(b: Buffer): number {
  const lowest = Math.max(0, b.length - 22 - 0xffff);
  for (let i = b.length - 22; i >= lowest; i--) if (b.readUInt32LE(i) === EOCD) return i;
  throw new ZipError('ZIP_MALFORMED', 'no end of central directory record');
}

/** Reads every file entry (directories are skipped) or throws ZipError. */
export function readZip(b: Buffer, limits: ZipLimits = DEFAULT_ZIP_LIMITS): ZipEntry[] {
  if (b.length < 22) throw new ZipError('ZIP_MALFORMED', 'too short for a zip archive');
  const eocd = findEocd(b);
  const disk = b.readUInt16LE(eocd + 4);
  const count = b.readUInt16LE(eocd + 10);
  const cdSize = b.readUInt32LE(eocd + 12);
  const cdOffset = b.readUInt32LE(eocd + 16);
  if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) throw new ZipError('ZIP_UNSUPPORTED', 'zip64 archives are not supported');
  if (disk !== 0) throw new ZipError('ZIP_UNSUPPORTED', 'multi-disk archives are not supported');
  if (count > limits.maxEntries) throw new ZipError('ZIP_TOO_MANY_ENTRIES', `${count} entries (at most ${limits.maxEntries})`);
  if (cdOffset + cdSize > eocd) throw new ZipError('ZIP_MALFORMED', 'central directory outside the archive');

  // First pass: the directory alone, so that every limit is checked before inflating.
  interface Planned { name: string; method: number; crc: number; csize: number; usize: number; local: number }
  const planned: Planned[] = [];
  const seen = new Set<string>();
  let total = 0;
  let p = cdOffset;
  for (let n = 0; n < count; n++) {
    if (p + 46 > eocd || b.readUInt32LE(p) !== CENTRAL) throw new ZipError('ZIP_MALFORMED', `central directory entry ${n} is malformed`);
    const flags = b.readUInt16LE(p + 8);
    const method = b.readUInt16LE(p + 10);
    const crc = b.readUInt32LE(p + 16);
    const csize = b.readUInt32LE(p + 20);
    const usize = b.readUInt32LE(p + 24);
    const nameLen = b.readUInt16LE(p + 28);
    const extraLen = b.readUInt16LE(p + 30);
    const commentLen = b.readUInt16LE(p + 32);
    const local = b.readUInt32LE(p + 42);
    if (p + 46 + nameLen + extraLen + commentLen > eocd) throw new ZipError('ZIP_MALFORMED', `central directory entry ${n} runs past the directory`);
    const name = b.subarray(p + 46, p + 46 + nameLen).toString('utf8');
    p += 46 + nameLen + extraLen + commentLen;
    checkName(name);
    if (flags & 0x1 || flags & 0x40) throw new ZipError('ZIP_ENCRYPTED', `entry ${JSON.stringify(name)} is encrypted`);
    if (csize === 0xffffffff || usize === 0xffffffff || local === 0xffffffff) throw new ZipError('ZIP_UNSUPPORTED', `entry ${JSON.stringify(name)} is zip64`);
    if (seen.has(name)) throw new ZipError('ZIP_MALFORMED', `entry ${JSON.stringify(name)} appears twice`);
    seen.add(name);
    if (name.endsWith('/')) continue;
    if (method !== 0 && method !== 8) throw new ZipError('ZIP_UNSUPPORTED', `entry ${JSON.stringify(name)} uses compression method ${method} (only stored and deflate)`);
    if (usize > limits.maxEntryBytes) throw new ZipError('ZIP_ENTRY_TOO_LARGE', `entry ${JSON.stringify(name)} is ${usize} bytes uncompressed (at most ${limits.maxEntryBytes})`);
    if (method === 8 && usize > Math.max(csize, 1) * limits.maxRatio) throw new ZipError('ZIP_RATIO', `entry ${JSON.stringify(name)} expands ${csize} bytes to ${usize} (ratio above ${limits.maxRatio})`);
    if (method === 0 && csize !== usize) throw new ZipError('ZIP_MALFORMED', `stored entry ${JSON.stringify(name)} has different sizes`);
    total += usize;
    if (total > limits.maxTotalBytes) throw new ZipError('ZIP_TOO_LARGE', `archive expands to more than ${limits.maxTotalBytes} bytes`);
    planned.push({ name, method, crc, csize, usize, local });
  }

  // Second pass: inflate, never past the declared size, and check it against the CRC.
  return planned.map((e) => {
    if (e.local + 30 > cdOffset || b.readUInt32LE(e.local) !== LOCAL) throw new ZipError('ZIP_MALFORMED', `entry ${JSON.stringify(e.name)}: bad local header`);
    const start = e.local + 30 + b.readUInt16LE(e.local + 26) + b.readUInt16LE(e.local + 28);
    if (start + e.csize > cdOffset) throw new ZipError('ZIP_MALFORMED', `entry ${JSON.stringify(e.name)} runs past its data`);
    const raw = b.subarray(start, start + e.csize);
    let data: Buffer;
    if (e.method === 0) data = Buffer.from(raw);
    else {
      try {
        // One byte more than declared: a lying size shows as a too-long output.
        data = inflateRawSync(raw, { maxOutputLength: e.usize + 1 });
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (code === 'ERR_BUFFER_TOO_LARGE' || (err instanceof RangeError)) throw new ZipError('ZIP_CORRUPT', `entry ${JSON.stringify(e.name)} expands past its declared ${e.usize} bytes`);
        throw new ZipError('ZIP_CORRUPT', `entry ${JSON.stringify(e.name)} does not inflate: ${(err as Error).message}`);
      }
    }
    if (data.length !== e.usize) throw new ZipError('ZIP_CORRUPT', `entry ${JSON.stringify(e.name)} is ${data.length} bytes, its directory says ${e.usize}`);
    if (crc32(data) >>> 0 !== e.crc) throw new ZipError('ZIP_CORRUPT', `entry ${JSON.stringify(e.name)} fails its CRC`);
    return { name: e.name, data };
  });
}
