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
  /** IPv4 only, when the parser has it at hand: the network address as an unsigned 32-bit number. */
  v4?: number;
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
  return parseIPv4CidrFast(text) ?? parseCidrGeneral(text);
}

/**
 * `a.b.c.d/len` in the strict form isIPv4 accepts (decimal octets 0-255, no leading zeros)
 * with a prefix length of one to three digits, scanned without regexps or intermediate
 * arrays: what a 100,000-rule snapshot is made of. Anything else (IPv6, a bare address,
 * text that is not a CIDR) returns null and takes the general path, which decides it.
 */
function parseIPv4CidrFast(text: string): ParsedCidr | null {
  let i = 0;
  let v = 0;
  const n = text.length;
  for (let octet = 0; octet < 4; octet++) {
    const start = i;
    let x = 0;
    while (i < n) {
      const c = text.charCodeAt(i);
      if (c < 48 || c > 57) break;
      x = x * 10 + (c - 48);
      i++;
    }
    const digits = i - start;
    if (digits === 0 || digits > 3 || x > 255 || (digits > 1 && text.charCodeAt(start) === 48)) return null;
    v = v * 256 + x;
    if (i >= n || text.charCodeAt(i) !== (octet < 3 ? 46 : 47)) return null; // '.' then '/'
    i++;
  }
  const lenStart = i;
  let len = 0;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c < 48 || c > 57) return null;
    len = len * 10 + (c - 48);
    i++;
  }
  const lenDigits = i - lenStart;
  if (lenDigits === 0 || lenDigits > 3 || len > 32) return null;
  const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
  const net = (v & mask) >>> 0;
  const hostBitsSet = net !== v;
  // The input is already canonical when nothing was masked off and the length has no leading zero.
  const canonical =
    !hostBitsSet && (lenDigits === 1 || text.charCodeAt(lenStart) !== 48)
      ? text
      : `${net >>> 24}.${(net >>> 16) & 0xff}.${(net >>> 8) & 0xff}.${net & 0xff}/${len}`;
  return new V4Cidr(net, len, hostBitsSet, canonical);
}

/** An IPv4 network whose address bytes are made only when asked for (most callers never do). */
class V4Cidr implements ParsedCidr {
  readonly family = 4 as const;
  #addr: Uint8Array | undefined;
  constructor(
    readonly v4: number,
    readonly prefixLen: number,
    readonly hostBitsSet: boolean,
    readonly canonical: string,
  ) {}
  get addr(): Uint8Array {
    if (this.#addr === undefined) {
      const a = new Uint8Array(4);
      a[0] = this.v4 >>> 24;
      a[1] = (this.v4 >>> 16) & 0xff;
      a[2] = (this.v4 >>> 8) & 0xff;
      a[3] = this.v4 & 0xff;
      this.#addr = a;
    }
    return this.#addr;
  }
}

/** The general parser (every form parseCidr takes); parseCidr answers exactly as it does. */
export function parseCidrGeneral(text: string): ParsedCidr {
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
