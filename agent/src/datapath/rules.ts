/**
 * Rule encoding: a policy that protocol's checker has accepted (checkPolicyRules in
 * datapath.ts) becomes the addon's wire format, RuleRecord of native/src/datapath_core.h,
 * little-endian, at the offsets of the generated RULE_RECORD_LAYOUT. Nothing is validated
 * here; the C++ side trusts what it receives, so only checked rules may be passed.
 */
import { parseCidr } from '../../../protocol/src/index.js';
import type { MapSnapshot, Proto } from '../../../protocol/src/index.js';
import { DIR_EGRESS, DIR_INGRESS, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, PROTO_ALL, RULE_FIELDS, RULE_RECORD_BYTES, V4_MAPPED_BITS } from './abi.js';
import { InvalidArgumentError } from './errors.js';

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
function protoNumbers(p: Proto, port: number): number[] {
  if (p === 'tcp') return [IPPROTO_TCP];
  if (p === 'udp') return [IPPROTO_UDP];
  if (p === 'icmp') return [IPPROTO_ICMP, IPPROTO_ICMPV6];
  return port === 0 ? [PROTO_ALL] : [IPPROTO_TCP, IPPROTO_UDP];
}

/** Writes an unsigned little-endian integer field of the record at `base`, at its generated width. */
function writeField(buffer: Buffer, base: number, field: { offset: number; size: number }, value: number): void {
  buffer.writeUIntLE(value, base + field.offset, field.size);
}

/**
 * Encodes checked rules: edges (egress, by destination) and allow_cidrs (ingress, by
 * source and local port). `any` on a port becomes a tcp and a udp record, `any` on port 0
 * one record for every protocol, `icmp` an ICMP and an ICMPv6 record; where that repeats a
 * record already made (an `any` entry beside a tcp or udp one for the same network and
 * port) the repeat is left out, as the trie holds one entry per key.
 */
export function encodeRules(rules: PolicyRules): EncodedRules {
  const lists = [
    { dir: DIR_EGRESS, items: (rules.edges ?? []).map((e) => ({ cidr: e.dst_cidr, proto: e.proto, port: e.port })) },
    { dir: DIR_INGRESS, items: (rules.allow_cidrs ?? []).map((a) => ({ cidr: a.cidr, proto: a.proto, port: a.port })) },
  ];
  const seen = new Set<string>();
  const records: Array<{ dir: number; proto: number; port: number; prefixLen: number; addr: Uint8Array; id: number }> = [];
  for (const list of lists) {
    list.items.forEach((r, i) => {
      const cidr = parseCidr(r.cidr);
      let addr = cidr.addr;
      let prefixLen = cidr.prefixLen;
      if (cidr.family === 4) {
        // IPv4 lives in the v4-mapped range ::ffff:0:0/96 of the 16-byte key.
        addr = new Uint8Array(16);
        addr[10] = 0xff;
        addr[11] = 0xff;
        addr.set(cidr.addr, 12);
        prefixLen += V4_MAPPED_BITS;
      }
      for (const proto of protoNumbers(r.proto, r.port)) {
        const key = `${list.dir}|${proto}|${r.port}|${cidr.canonical}`;
        if (seen.has(key)) continue;
        seen.add(key);
        records.push({ dir: list.dir, proto, port: r.port, prefixLen, addr, id: ((list.dir << 31) >>> 0) | i });
      }
    });
  }

  const f = RULE_FIELDS;
  const buffer = Buffer.alloc(records.length * RULE_RECORD_BYTES);
  records.forEach((r, i) => {
    const o = i * RULE_RECORD_BYTES;
    writeField(buffer, o, f.dir, r.dir);
    writeField(buffer, o, f.proto, r.proto);
    writeField(buffer, o, f.port, r.port);
    writeField(buffer, o, f.prefixlen, r.prefixLen);
    buffer.set(r.addr.subarray(0, f.addr.size), o + f.addr.offset);
    writeField(buffer, o, f.rule_id, r.id >>> 0);
  });
  return { buffer, count: records.length };
}
