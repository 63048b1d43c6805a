/**
 * Reads vulnerability feeds from a file, a directory of OSV records, an OSV `all.zip`, or
 * a URL (conditional GET, capped body), and tells OSV from the Debian tracker by shape.
 * A feed is read whole before anything uses it: one bad record refuses the feed.
 */
import { lstatSync, readdirSync, openSync, readSync, closeSync, fstatSync } from 'node:fs';
import { join } from 'node:path';
import type { Advisory } from './advisory.js';
import { looksLikeTracker, parseTracker } from './debian_tracker_feed.js';
import { FeedError } from './feed_error.js';
import { parseOsvRecord } from './osv_feed.js';
import { DEFAULT_ZIP_LIMITS, looksLikeZip, readZip, ZipError, type ZipLimits } from './zip_archive.js';

export interface FeedLimits {
  /** Largest feed file or download. */
  maxFeedBytes: number;
  /** Most files read from a directory. */
  maxDirectoryFiles: number;
  zip: ZipLimits;
}

export const DEFAULT_FEED_LIMITS: FeedLimits = { maxFeedBytes: 1 << 30, maxDirectoryFiles: 500_000, zip: DEFAULT_ZIP_LIMITS };

function parseJson(bytes: Buffer, source: string): unknown {
  try {
    return JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    // A SyntaxError, or a RangeError from nesting too deep to parse.
    throw new FeedError('FEED_MALFORMED_JSON', source, `not JSON: ${(err as Error).message}`);
  }
}

function advisoriesOfJson(doc: unknown, source: string): Advisory[] {
  if (Array.isArray(doc)) return doc.map((rec, i) => parseOsvRecord(rec, `${source}#${i}`));
  if (typeof doc === 'object' && doc !== null && typeof (doc as { id?: unknown }).id === 'string') return [parseOsvRecord(doc, source)];
  if (looksLikeTracker(doc)) return parseTracker(doc, source);
  throw new FeedError('FEED_UNKNOWN_FORMAT', source, 'neither an OSV record, an array of them, nor the Debian tracker JSON');
}

/** The advisories in a feed's bytes: a zip of OSV records, or JSON. */
export function loadFeedBytes(bytes: Buffer, source: string, limits: FeedLimits = DEFAULT_FEED_LIMITS): Advisory[] {
  if (bytes.length > limits.maxFeedBytes) throw new FeedError('FEED_TOO_LARGE', source, `${bytes.length} bytes (at most ${limits.maxFeedBytes})`);
  if (looksLikeZip(bytes)) {
    let entries;
    try {
      entries = readZip(bytes, limits.zip);
    } catch (err) {
      if (err instanceof ZipError) throw new FeedError('FEED_ARCHIVE_REFUSED', source, `${err.code}: ${err.message}`, { cause: err });
      throw err;
    }
    return entries.filter((e) => e.name.endsWith('.json')).flatMap((e) => advisoriesOfJson(parseJson(e.data, `${source}!${e.name}`), `${source}!${e.name}`));
  }
  return advisoriesOfJson(parseJson(bytes, source), source);
}

/** Reads at most `max` bytes and fails rather than truncate. */
function readCapped(path: string, max: number): Buffer {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    throw new FeedError('FEED_UNREADABLE', path, (err as Error).message);
  }
  try {
    const size = fstatSync(fd).size;
    if (size > max) throw new FeedError('FEED_TOO_LARGE', path, `${size} bytes (at most ${max})`);
    const buf = Buffer.alloc(size);
    let off = 0;
    while (off < size) {
      const n = readSync(fd, buf, off, size - off, off);
      if (n === 0) break;
      off += n;
    }
    return buf.subarray(0, off);
  } finally {
    closeSync(fd);
  }
}

/** A file (JSON or zip) or a directory of OSV `.json` files; symbolic links are not followed. */
export function loadFeedPath(path: string, limits: FeedLimits = DEFAULT_FEED_LIMITS): Advisory[] {
  let st;
  try {
    st = lstatSync(path);
  } catch (err) {
    throw new FeedError('FEED_UNREADABLE', path, (err as Error).message);
  }
  if (st.isFile()) return loadFeedBytes(readCapped(path, limits.maxFeedBytes), path, limits);
  if (!st.isDirectory()) throw new FeedError('FEED_UNREADABLE', path, 'not a regular file or directory');
  const files: string[] = [];
  const walk = (dir: string) => {
    for (const name of readdirSync(dir).sort()) {
      const p = join(dir, name);
      const s = lstatSync(p);
      if (s.isDirectory()) walk(p);
      else if (s.isFile() && name.endsWith('.json')) {
        files.push(p);
        if (files.length > limits.maxDirectoryFiles) throw new FeedError('FEED_TOO_LARGE', path, `more than ${limits.maxDirectoryFiles} files`);
      }
    }
  };
  walk(path);
  return files.flatMap((f) => loadFeedBytes(readCapped(f, limits.maxFeedBytes), f, limits));
}

export interface FetchValidators {
  etag?: string | null;
  lastModified?: string | null;
}

export type FetchOutcome = { notModified: true } | { notModified: false; bytes: Buffer; etag: string | null; lastModified: string | null };

/** GET with If-None-Match / If-Modified-Since; a body past the cap is abandoned, not truncated. */
export async function fetchFeed(url: string, validators: FetchValidators = {}, maxBytes = DEFAULT_FEED_LIMITS.maxFeedBytes, timeoutMs = 120_000): Promise<FetchOutcome> {
  const u = new URL(url);
  if (u.protocol !== 'https:' && u.protocol !== 'http:') throw new FeedError('FEED_FETCH_FAILED', url, 'only http and https URLs');
  const headers: Record<string, string> = { accept: 'application/json, application/zip' };
  if (validators.etag) headers['if-none-match'] = validators.etag;
  if (validators.lastModified) headers['if-modified-since'] = validators.lastModified;
  let res: Response;
  try {
    res = await fetch(u, { headers, redirect: 'follow', signal: AbortSignal.timeout(timeoutMs) });
  } catch (err) {
    throw new FeedError('FEED_FETCH_FAILED', url, (err as Error).message);
  }
  if (res.status === 304) return { notModified: true };
  if (res.status !== 200 || !res.body) {
    await res.body?.cancel();
    throw new FeedError('FEED_FETCH_FAILED', url, `HTTP ${res.status}`);
  }
  const declared = Number(res.headers.get('content-length') ?? NaN);
  if (declared > maxBytes) {
    await res.body.cancel();
    throw new FeedError('FEED_TOO_LARGE', url, `Content-Length ${declared} (at most ${maxBytes})`);
  }
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
    total += chunk.length;
    if (total > maxBytes) throw new FeedError('FEED_TOO_LARGE', url, `body passes ${maxBytes} bytes`);
    chunks.push(Buffer.from(chunk));
  }
  return { notModified: false, bytes: Buffer.concat(chunks), etag: res.headers.get('etag'), lastModified: res.headers.get('last-modified') };
}
