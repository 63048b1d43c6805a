/**
 * Collapsing host addresses into wider prefixes. Addresses are bigints (IPv4 and IPv6 on
 * one code path); a family is collapsed on its own, so prefixes never cross families.
 */
import { formatAddr } from '../../../protocol/src/index.js';

export type Family = 4 | 6;

/** Address width in bits of each family. */
export const FAMILY_BITS: Readonly<Record<Family, 32 | 128>> = { 4: 32, 6: 128 };

/** One prefix chosen by collapsePrefixes: the addresses it covers are `addrs[lo..hi)`. */
export interface CollapsedPrefix {
  base: bigint;
  prefixLen: number;
  lo: number;
  hi: number;
}

/** Share of a prefix with `hostBits` host bits that `observed` addresses leave unseen. */
export function unseenRatio(hostBits: number, observed: number): number {
  const size = 2 ** hostBits;
  return (size - observed) / size;
}

export function bitLength(x: bigint): number {
  return x === 0n ? 0 : x.toString(2).length;
}

/** First index in sorted `addrs[lo..hi)` whose value is >= `value`. */
function lowerBound(addrs: readonly bigint[], lo: number, hi: number, value: bigint): number {
  let a = lo;
  let b = hi;
  while (a < b) {
    const m = (a + b) >>> 1;
    if (addrs[m]! < value) a = m + 1;
    else b = m;
  }
  return a;
}

/**
 * Covers the sorted, distinct addresses of one family with the fewest prefixes whose
 * unseen share is at most `maxUnseenRatio`, each as tight as possible.
 *
 * Works on the path-compressed binary trie of the addresses: a node is the longest common
 * prefix of a run of addresses. If that node is acceptable it is emitted (one prefix is the
 * least any cover of those addresses can use, and the node is the tightest such prefix);
 * otherwise its two non-empty halves are covered on their own. Acceptability of a node
 * depends only on its own size and count, so this is the bottom-up sibling merge
 * evaluated from the top: a merge is kept exactly when the merged prefix is acceptable.
 * Host routes (/32, /128) admit nothing unseen, so the recursion always ends.
 */
export function collapsePrefixes(addrs: readonly bigint[], width: 32 | 128, maxUnseenRatio: number): CollapsedPrefix[] {
  const out: CollapsedPrefix[] = [];
  const cover = (lo: number, hi: number): void => {
    const first = addrs[lo]!;
    const hostBits = bitLength(first ^ addrs[hi - 1]!);
    const base = (first >> BigInt(hostBits)) << BigInt(hostBits);
    if (unseenRatio(hostBits, hi - lo) <= maxUnseenRatio) {
      out.push({ base, prefixLen: width - hostBits, lo, hi });
      return;
    }
    // first and last differ in bit hostBits-1, so both halves are non-empty.
    const mid = lowerBound(addrs, lo, hi, base | (1n << BigInt(hostBits - 1)));
    cover(lo, mid);
    cover(mid, hi);
  };
  if (addrs.length > 0) cover(0, addrs.length);
  return out;
}

/** Address bytes (4 or 16) of a bigint. */
export function addrBytes(family: Family, value: bigint): Uint8Array {
  const out = new Uint8Array(family === 4 ? 4 : 16);
  const view = new DataView(out.buffer);
  if (family === 4) view.setUint32(0, Number(value));
  else {
    view.setBigUint64(0, value >> 64n);
    view.setBigUint64(8, value & 0xffff_ffff_ffff_ffffn);
  }
  return out;
}

/** Big-endian bytes (4 or 16 of them) as a bigint. */
export function bytesToBigint(bytes: Uint8Array): bigint {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length === 4) return BigInt(view.getUint32(0));
  if (bytes.length === 16) return (view.getBigUint64(0) << 64n) | view.getBigUint64(8);
  let v = 0n;
  for (const b of bytes) v = (v << 8n) | BigInt(b);
  return v;
}

export function formatPrefix(family: Family, base: bigint, prefixLen: number): string {
  return `${formatAddr(family, addrBytes(family, base))}/${prefixLen}`;
}
