/**
 * CIDR parsing shared by the server's snapshot validation and the agent's datapath
 * wrapper: one parser, so both sides agree on what a valid prefix is.
 */
import { isIPv4, isIPv6 } from 'node:net';

export interface ParsedCidr {
  family: 4 | 6;
  /** Network address bytes (4 or 16), host bits cleared. */
  addr: Uint8Array;
  prefixLen: number;
  /** True when the input had bits set below the prefix (e.g. 10.0.0.1/24). */
  hostBitsSet: boolean;
  /** Canonical text form of the network, e.g. `10.0.0.0/24`, `2001:db8::/32`. */
  canonical: string;
}

export class CidrError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CidrError';
  }
}

function ipv4Bytes(s: string): Uint8Array {
  return Uint8Array.from(s.split('.').map((p) => Number(p)));
}

function ipv6Bytes(s: string): Uint8Array {
  let text = s;
  // An embedded IPv4 tail (::ffff:1.2.3.4) becomes two hextets.
  const v4 = text.match(/(\d+\.\d+\.\d+\.\d+)$/);
  if (v4) {
    const b = ipv4Bytes(v4[1]!);
    text = text.slice(0, -v4[1]!.length) + `${((b[0]! << 8) | b[1]!).toString(16)}:${((b[2]! << 8) | b[3]!).toString(16)}`;
  }
  const [head, tail] = text.includes('::') ? text.split('::') : [text, undefined];
  const h = head ? head.split(':') : [];
  const t = tail !== undefined && tail !== '' ? tail.split(':') : [];
  const fill = tail === undefined ? 0 : 8 - h.length - t.length;
  const groups = [...h, ...Array<string>(fill).fill('0'), ...t];
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    const v = parseInt(g, 16);
    out[i * 2] = v >> 8;
    out[i * 2 + 1] = v & 0xff;
  });
  return out;
}

export function formatAddr(family: 4 | 6, addr: Uint8Array): string {
  if (family === 4) return Array.from(addr).join('.');
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((addr[i]! << 8) | addr[i + 1]!);
  // Compress the longest run of zero groups (RFC 5952).
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i > 1) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

/**
 * Parses `addr/len` (or a bare address, taken as a host route). Throws CidrError when the
 * text is not a CIDR; host bits are reported in `hostBitsSet`, not thrown, so callers
 * choose whether that is an error (the server rejects it, naming the CIDR).
 */
export function parseCidr(text: string): ParsedCidr {
  if (typeof text !== 'string' || text.length === 0 || text.length > 64) {
    throw new CidrError(`not a CIDR: ${JSON.stringify(text)}`);
  }
  const slash = text.indexOf('/');
  const addrText = slash < 0 ? text : text.slice(0, slash);
  const lenText = slash < 0 ? undefined : text.slice(slash + 1);
  let family: 4 | 6;
  let addr: Uint8Array;
  if (isIPv4(addrText)) {
    family = 4;
    addr = ipv4Bytes(addrText);
  } else if (isIPv6(addrText) && !addrText.includes('%')) {
    family = 6;
    addr = ipv6Bytes(addrText);
  } else {
    throw new CidrError(`not an IP address: ${JSON.stringify(addrText)}`);
  }
  const maxLen = family === 4 ? 32 : 128;
  let prefixLen = maxLen;
  if (lenText !== undefined) {
    if (!/^\d{1,3}$/.test(lenText) || Number(lenText) > maxLen) {
      throw new CidrError(`invalid prefix length in ${JSON.stringify(text)} (0..${maxLen})`);
    }
    prefixLen = Number(lenText);
  }
  const network = new Uint8Array(addr.length);
  let hostBitsSet = false;
  for (let i = 0; i < addr.length; i++) {
    const bitsHere = Math.max(0, Math.min(8, prefixLen - i * 8));
    const mask = bitsHere === 0 ? 0 : (0xff << (8 - bitsHere)) & 0xff;
    network[i] = addr[i]! & mask;
    if (network[i] !== addr[i]) hostBitsSet = true;
  }
  return { family, addr: network, prefixLen, hostBitsSet, canonical: `${formatAddr(family, network)}/${prefixLen}` };
}
