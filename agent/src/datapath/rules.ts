/**
 * Rule encoding: a policy that protocol's checker has accepted (checkPolicyRules in
 * datapath.ts) becomes the addon's wire format, RuleRecord of native/src/datapath_core.h,
 * little-endian, at the offsets of the generated RULE_RECORD_LAYOUT. Nothing is validated
 * here; the C++ side trusts what it receives, so only checked rules may be passed.
 */
import { inspectPolicyRules, SKIP_TCP, SKIP_UDP } from '../../../protocol/src/index.js';
import type { CheckedRules, MapSnapshot, Proto } from '../../../protocol/src/index.js';
import { DIR_EGRESS, DIR_INGRESS, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, PROTO_ALL, RULE_FIELDS, RULE_RECORD_BYTES, V4_MAPPED_BITS } from './abi.js';
import { InvalidArgumentError, InvalidPolicyError } from './errors.js';

export const MAX_SERVICE_ID = 0xffffffff;

/** The part of a MapSnapshot the datapath enforces. */
export type PolicyRules = Pick<MapSnapshot, 'edges' | 'allow_cidrs'> & { service_id?: number };

export interface EncodedRules {
  buffer: Buffer;
  /** Rules after `any` expansion, with the overlaps that expansion creates collapsed. */
  count: number;
}

export function checkServiceId(serviceId: unknown): number {
  if (typeof serviceId !== 'number' || !Number.isInteger(serviceId) || serviceId < 0 || serviceId > MAX_SERVICE_ID) {
    throw new InvalidArgumentError(
      `service id must be an integer from 0 to ${MAX_SERVICE_ID}, got ${JSON.stringify(serviceId)}`,
    );
  }
  return serviceId;
}

/** The protocol bytes of an entry's records: `icmp` covers ICMP and ICMPv6 (port = type),
 * `any` on a port is tcp and udp on it, `any` on port 0 is every IP protocol. */
const TCP_ONLY: readonly number[] = [IPPROTO_TCP];
const UDP_ONLY: readonly number[] = [IPPROTO_UDP];
const ICMP_BOTH: readonly number[] = [IPPROTO_ICMP, IPPROTO_ICMPV6];
const EVERY: readonly number[] = [PROTO_ALL];
const TCP_UDP: readonly number[] = [IPPROTO_TCP, IPPROTO_UDP];

function protoNumbers(p: Proto, port: number): readonly number[] {
  if (p === 'tcp') return TCP_ONLY;
  if (p === 'udp') return UDP_ONLY;
  if (p === 'icmp') return ICMP_BOTH;
  return port === 0 ? EVERY : TCP_UDP;
}

/**
 * Encodes checked rules: edges (egress, by destination) and allow_cidrs (ingress, by
 * source and local port). `any` on a port becomes a tcp and a udp record, `any` on port 0
 * one record for every protocol, `icmp` an ICMP and an ICMPv6 record; where that repeats a
 * record already made (an `any` entry beside a tcp or udp one for the same network and
 * port) the repeat is left out, as the trie holds one entry per key.
 *
 * The rules go through protocol's checker here (it throws what checkPolicyRules throws);
 * Datapath.apply checks once and hands the checker's entries to encodeCheckedRules.
 */
export function encodeRules(rules: PolicyRules): EncodedRules {
  const entries: CheckedRules = { edges: [], allow_cidrs: [] };
  const r = inspectPolicyRules(rules, Number.MAX_SAFE_INTEGER, entries);
  if (r.problems.length > 0) throw new InvalidPolicyError(r.problems);
  return encodeCheckedRules(entries);
}

/** Stores an unsigned little-endian field of 1, 2 or 4 bytes (the generated layout's widths). */
function put(buffer: Buffer, at: number, size: number, value: number): void {
  buffer[at] = value & 0xff;
  if (size > 1) buffer[at + 1] = (value >>> 8) & 0xff;
  if (size > 2) {
    buffer[at + 2] = (value >>> 16) & 0xff;
    buffer[at + 3] = (value >>> 24) & 0xff;
  }
}

/**
 * The records of the checker's entries (inspectPolicyRules with `entries`), written
 * straight into one buffer: no per-record objects, no second parse of any CIDR.
 */
export function encodeCheckedRules(entries: CheckedRules): EncodedRules {
  const f = RULE_FIELDS;
  const lists = [
    { dir: DIR_EGRESS, items: entries.edges },
    { dir: DIR_INGRESS, items: entries.allow_cidrs },
  ];
  let count = 0;
  for (const { items } of lists) {
    for (const e of items) {
      const made = protoNumbers(e.proto, e.port).length;
      count += made - (e.skip & SKIP_TCP ? 1 : 0) - (e.skip & SKIP_UDP ? 1 : 0);
    }
  }
  const buffer = Buffer.alloc(count * RULE_RECORD_BYTES);
  const addrAt = f.addr.offset;
  let o = 0;
  for (const { dir, items } of lists) {
    const idBase = (dir << 31) >>> 0;
    for (let i = 0; i < items.length; i++) {
      const e = items[i]!;
      const c = e.cidr;
      const v4 = c.family === 4;
      const prefixLen = v4 ? c.prefixLen + V4_MAPPED_BITS : c.prefixLen;
      for (const proto of protoNumbers(e.proto, e.port)) {
        if ((proto === IPPROTO_TCP && e.skip & SKIP_TCP) || (proto === IPPROTO_UDP && e.skip & SKIP_UDP)) continue;
        put(buffer, o + f.dir.offset, f.dir.size, dir);
        put(buffer, o + f.proto.offset, f.proto.size, proto);
        put(buffer, o + f.port.offset, f.port.size, e.port);
        put(buffer, o + f.prefixlen.offset, f.prefixlen.size, prefixLen);
        if (v4) {
          // IPv4 lives in the v4-mapped range ::ffff:0:0/96 of the 16-byte key.
          buffer[o + addrAt + 10] = 0xff;
          buffer[o + addrAt + 11] = 0xff;
          if (c.v4 !== undefined) {
            buffer[o + addrAt + 12] = c.v4 >>> 24;
            buffer[o + addrAt + 13] = (c.v4 >>> 16) & 0xff;
            buffer[o + addrAt + 14] = (c.v4 >>> 8) & 0xff;
            buffer[o + addrAt + 15] = c.v4 & 0xff;
          } else buffer.set(c.addr, o + addrAt + 12);
        } else {
          buffer.set(c.addr.subarray(0, f.addr.size), o + addrAt);
        }
        put(buffer, o + f.rule_id.offset, f.rule_id.size, (idBase | i) >>> 0);
        o += RULE_RECORD_BYTES;
      }
    }
  }
  return { buffer, count };
}
