/**
 * Snapshot validation and encoding. Everything the addon receives is checked here first
 * (the C++ side trusts its input): CIDRs through protocol's parseCidr with host bits
 * rejected, ports, protocols, sizes. Rules are encoded in the addon's wire format
 * (RuleRecord in native/src/datapath_core.h): 28 bytes, little-endian.
 */
import type { AllowCidr, Edge, MapSnapshot, Proto } from '../../../protocol/src/snapshot.js';
import { MAX_RULES_PER_SERVICE, PROTOS } from '../../../protocol/src/snapshot.js';
import { CidrError, parseCidr } from '../../../protocol/src/cidr.js';
import { InvalidArgumentError, InvalidPolicyError, SnapshotTooLargeError } from './errors.js';
import type { PolicyProblem } from './errors.js';

export const DIR_EGRESS = 0;
export const DIR_INGRESS = 1;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const RULE_RECORD_BYTES = 28;
export const MAX_SERVICE_ID = 0xffffffff;

/** The part of a MapSnapshot the datapath enforces. */
export type PolicyRules = Pick<MapSnapshot, 'edges' | 'allow_cidrs'> & { service_id?: number };

export interface EncodedRules {
  buffer: Buffer;
  /** Rules after `any` expansion and de-duplication. */
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

function protoNumbers(p: Proto): number[] {
  if (p === 'tcp') return [IPPROTO_TCP];
  if (p === 'udp') return [IPPROTO_UDP];
  return [IPPROTO_TCP, IPPROTO_UDP];
}

interface RawRule {
  cidr: unknown;
  proto: unknown;
  port: unknown;
}

/**
 * Validates and encodes a snapshot's edges (egress, by destination) and allow_cidrs
 * (ingress, by source and local port). Throws InvalidPolicyError listing every problem,
 * or SnapshotTooLargeError when the expanded rule count exceeds `capacity`.
 */
export function encodeRules(snapshot: PolicyRules, capacity = MAX_RULES_PER_SERVICE): EncodedRules {
  const problems: PolicyProblem[] = [];
  if (typeof snapshot !== 'object' || snapshot === null) {
    throw new InvalidPolicyError([{ path: 'snapshot', message: 'must be an object' }]);
  }
  const lists: Array<{ dir: number; name: string; items: RawRule[] }> = [];
  const edges: unknown = snapshot.edges ?? [];
  const allows: unknown = snapshot.allow_cidrs ?? [];
  if (!Array.isArray(edges)) problems.push({ path: 'edges', message: 'must be an array' });
  else lists.push({ dir: DIR_EGRESS, name: 'edges', items: (edges as Edge[]).map((e) => ({ cidr: e?.dst_cidr, proto: e?.proto, port: e?.port })) });
  if (!Array.isArray(allows)) problems.push({ path: 'allow_cidrs', message: 'must be an array' });
  else lists.push({ dir: DIR_INGRESS, name: 'allow_cidrs', items: (allows as AllowCidr[]).map((a) => ({ cidr: a?.cidr, proto: a?.proto, port: a?.port })) });

  // Cheap bound before any parsing: even without duplicates this cannot fit.
  const upper = lists.reduce((n, l) => n + l.items.length, 0);
  if (upper > capacity * 2) throw new SnapshotTooLargeError(upper, capacity);

  const seen = new Set<string>();
  const records: Array<{ dir: number; proto: number; port: number; prefixLen: number; addr: Uint8Array; id: number }> = [];
  for (const list of lists) {
    const cidrField = list.dir === DIR_EGRESS ? 'dst_cidr' : 'cidr';
    list.items.forEach((r, i) => {
      const at = `${list.name}[${i}]`;
      if (problems.length >= 100) return;
      let ok = true;
      if (typeof r.proto !== 'string' || !(PROTOS as readonly string[]).includes(r.proto)) {
        problems.push({ path: `${at}.proto`, message: `must be one of ${PROTOS.join(', ')}, got ${JSON.stringify(r.proto)}` });
        ok = false;
      }
      if (typeof r.port !== 'number' || !Number.isInteger(r.port) || r.port < 0 || r.port > 65535) {
        problems.push({ path: `${at}.port`, message: `must be an integer from 0 (any port) to 65535, got ${JSON.stringify(r.port)}` });
        ok = false;
      }
      let cidr;
      try {
        cidr = parseCidr(r.cidr as string);
      } catch (e) {
        problems.push({ path: `${at}.${cidrField}`, message: e instanceof CidrError ? e.message : String(e) });
        ok = false;
      }
      if (cidr && cidr.hostBitsSet) {
        problems.push({
          path: `${at}.${cidrField}`,
          message: `${JSON.stringify(r.cidr)} has host bits set below the prefix; did you mean ${cidr.canonical}?`,
        });
        ok = false;
      }
      if (!ok || !cidr) return;
      let addr = cidr.addr;
      let prefixLen = cidr.prefixLen;
      if (cidr.family === 4) {
        // IPv4 lives in the v4-mapped range ::ffff:0:0/96 of the 16-byte key.
        addr = new Uint8Array(16);
        addr[10] = 0xff;
        addr[11] = 0xff;
        addr.set(cidr.addr, 12);
        prefixLen += 96;
      }
      for (const proto of protoNumbers(r.proto as Proto)) {
        const key = `${list.dir}|${proto}|${r.port as number}|${cidr.canonical}`;
        if (seen.has(key)) continue;
        seen.add(key);
        records.push({ dir: list.dir, proto, port: r.port as number, prefixLen, addr, id: (list.dir << 31) >>> 0 | i });
      }
    });
  }
  if (problems.length > 0) throw new InvalidPolicyError(problems);
  if (records.length > capacity) throw new SnapshotTooLargeError(records.length, capacity);

  const buffer = Buffer.alloc(records.length * RULE_RECORD_BYTES);
  records.forEach((r, i) => {
    const o = i * RULE_RECORD_BYTES;
    buffer.writeUInt8(r.dir, o);
    buffer.writeUInt8(r.proto, o + 1);
    buffer.writeUInt16LE(r.port, o + 2);
    buffer.writeUInt8(r.prefixLen, o + 4);
    buffer.set(r.addr, o + 8);
    buffer.writeUInt32LE(r.id >>> 0, o + 24);
  });
  return { buffer, count: records.length };
}
