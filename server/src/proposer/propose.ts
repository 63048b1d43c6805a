/**
 * `POST /segment/propose`: observed flows in, a segmentation proposal out. Flows are
 * aggregated per (proto, port, destination address), then each (proto, port) group's
 * addresses are collapsed into the fewest prefixes that admit at most `max_unseen_ratio`
 * of addresses nobody was seen talking to. Pure: no I/O, the clock is injectable.
 */
import { CidrError, parseCidr } from '../../../protocol/src/index.js';
import { InputProblems, describe, isIntegerIn, isPlainObject } from './input_problems.js';
import {
  FAMILY_BITS,
  bytesToBigint,
  collapsePrefixes,
  formatPrefix,
  unseenRatio,
  type Family,
} from './prefix_collapse.js';

export interface ObservedFlow {
  /** Destination host address, IPv4 or IPv6 (a /32 or /128 CIDR is accepted too). */
  dst: string;
  proto: 'tcp' | 'udp';
  /** Destination port; 0 is the datapath's "any port". */
  port: number;
  count: number;
}

export interface ProposeInput {
  service_id: number;
  flows: ObservedFlow[];
  /** Largest share of a proposed prefix that may be unobserved addresses; 0..1, default 0.25. */
  max_unseen_ratio?: number;
  /** Destinations whose summed count is below this are left out; default 1. */
  min_count?: number;
}

export interface ProposedEdge {
  dst_cidr: string;
  /** `any` when tcp and udp collapsed to the same prefix on the same port. */
  proto: 'tcp' | 'udp' | 'any';
  port: number;
  /** Sum of the counts of the flows the edge covers. */
  flows: number;
  /** Distinct observed addresses inside dst_cidr (for `any`: seen with either protocol). */
  observed_addresses: number;
  /** Addresses in dst_cidr, 2^(host bits); beyond 2^53 only approximate. */
  covered_addresses: number;
  /** (covered_addresses - observed_addresses) / covered_addresses, always <= max_unseen_ratio. */
  unseen_ratio: number;
}

export interface Proposal {
  service_id: number;
  edges: ProposedEdge[];
  stats: {
    /** Flow records in the request. */
    input_flows: number;
    /** Distinct (proto, port, address) destinations kept after min_count. */
    distinct_destinations: number;
    edges: number;
    /** Distinct (proto, port, address) destinations whose summed count was below min_count. */
    dropped_below_min_count: number;
  };
  max_unseen_ratio: number;
  generated_at: string;
}

export interface ProposeOptions {
  /** Clock for `generated_at`; tests pin it. */
  now?: () => Date;
}

export const DEFAULT_MAX_UNSEEN_RATIO = 0.25;
export const DEFAULT_MIN_COUNT = 1;
export const MAX_FLOWS = 100_000;
/** Largest service id the datapath accepts (a u32). */
export const MAX_SERVICE_ID = 0xffffffff;

const FLOW_PROTOS = ['tcp', 'udp'] as const;
type FlowProto = (typeof FLOW_PROTOS)[number];
const PROTO_ORDER: Record<ProposedEdge['proto'], number> = { tcp: 0, udp: 1, any: 2 };

interface HostAddr {
  family: Family;
  value: bigint;
}

/**
 * Parses a flow destination into a host address. IPv4-mapped IPv6 (::ffff:a.b.c.d) is
 * taken as the IPv4 address: that is what the packet on the wire carries, and the
 * datapath keys IPv4 rules at exactly those mapped addresses anyway.
 */
function parseHost(dst: string): HostAddr | string {
  let cidr;
  try {
    cidr = parseCidr(dst);
  } catch (e) {
    return e instanceof CidrError ? e.message : String(e);
  }
  const width = FAMILY_BITS[cidr.family];
  if (cidr.prefixLen !== width) {
    return `must be a single address (or a /${width}), got ${describe(dst)}`;
  }
  const a = cidr.addr;
  if (cidr.family === 6 && a.subarray(0, 10).every((b) => b === 0) && a[10] === 0xff && a[11] === 0xff) {
    return { family: 4, value: bytesToBigint(a.subarray(12)) };
  }
  return { family: cidr.family, value: bytesToBigint(a) };
}

interface Destination {
  proto: FlowProto;
  port: number;
  family: Family;
  value: bigint;
  count: number;
}

interface ValidInput {
  serviceId: number;
  maxUnseenRatio: number;
  minCount: number;
  inputFlows: number;
  /** (proto, port, family) → address → destination. */
  destinations: Map<string, Map<bigint, Destination>>;
}

function validate(input: unknown): ValidInput {
  const problems = new InputProblems();
  if (!isPlainObject(input)) {
    problems.add('/', `must be an object like {"service_id": 7, "flows": [...]}, got ${describe(input)}`);
    problems.throwIfAny();
  }
  const body = input as Record<string, unknown>;
  if (!isIntegerIn(body.service_id, 0, MAX_SERVICE_ID)) {
    problems.add('/service_id', `must be an integer from 0 to ${MAX_SERVICE_ID}, got ${describe(body.service_id)}`);
  }
  const ratio = body.max_unseen_ratio ?? DEFAULT_MAX_UNSEEN_RATIO;
  if (typeof ratio !== 'number' || !(ratio >= 0 && ratio <= 1)) {
    problems.add('/max_unseen_ratio', `must be a number from 0 to 1, got ${describe(body.max_unseen_ratio)}`);
  }
  const minCount = body.min_count ?? DEFAULT_MIN_COUNT;
  if (!isIntegerIn(minCount, 0, Number.MAX_SAFE_INTEGER)) {
    problems.add('/min_count', `must be a non-negative integer, got ${describe(body.min_count)}`);
  }

  const destinations = new Map<string, Map<bigint, Destination>>();
  const flows = body.flows;
  if (!Array.isArray(flows)) {
    problems.add('/flows', `must be an array of {dst, proto, port, count}, got ${describe(flows)}`);
  } else if (flows.length > MAX_FLOWS) {
    problems.add('/flows', `has ${flows.length} flows; at most ${MAX_FLOWS} are accepted per request (aggregate them first)`);
  } else {
    flows.forEach((f: unknown, i) => {
      const at = `/flows/${i}`;
      if (!isPlainObject(f)) {
        problems.add(at, `must be an object {dst, proto, port, count}, got ${describe(f)}`);
        return;
      }
      let ok = true;
      let host: HostAddr | string = 'is required';
      if (typeof f.dst !== 'string') {
        problems.add(`${at}/dst`, `must be an IP address string, got ${describe(f.dst)}`);
        ok = false;
      } else if (typeof (host = parseHost(f.dst)) === 'string') {
        problems.add(`${at}/dst`, host);
        ok = false;
      }
      if (typeof f.proto !== 'string' || !(FLOW_PROTOS as readonly string[]).includes(f.proto)) {
        problems.add(`${at}/proto`, `must be "tcp" or "udp", got ${describe(f.proto)}`);
        ok = false;
      }
      if (!isIntegerIn(f.port, 0, 65535)) {
        problems.add(`${at}/port`, `must be an integer from 0 to 65535, got ${describe(f.port)}`);
        ok = false;
      }
      if (!isIntegerIn(f.count, 0, Number.MAX_SAFE_INTEGER)) {
        problems.add(`${at}/count`, `must be a non-negative integer, got ${describe(f.count)}`);
        ok = false;
      }
      if (!ok || problems.count > 0) return;
      const h = host as HostAddr;
      const proto = f.proto as FlowProto;
      const port = f.port as number;
      const groupKey = `${proto}|${port}|${h.family}`;
      let group = destinations.get(groupKey);
      if (!group) destinations.set(groupKey, (group = new Map()));
      const d = group.get(h.value);
      // Sums saturate rather than lose integer precision.
      if (d) d.count = Math.min(Number.MAX_SAFE_INTEGER, d.count + (f.count as number));
      else group.set(h.value, { proto, port, family: h.family, value: h.value, count: f.count as number });
    });
  }
  problems.throwIfAny();
  return {
    serviceId: body.service_id as number,
    maxUnseenRatio: ratio as number,
    minCount: minCount as number,
    inputFlows: (flows as unknown[]).length,
    destinations,
  };
}

/** One collapsed prefix of one (proto, port, family) group, before tcp/udp folding. */
interface GroupEdge {
  family: Family;
  base: bigint;
  prefixLen: number;
  proto: FlowProto;
  port: number;
  flows: number;
  /** The group's sorted addresses; this edge covers addrs[lo..hi). */
  addrs: readonly bigint[];
  lo: number;
  hi: number;
}

function countUnion(x: GroupEdge, y: GroupEdge): number {
  const a = x.addrs;
  const b = y.addrs;
  let i = x.lo;
  let j = y.lo;
  let n = 0;
  while (i < x.hi && j < y.hi) {
    if (a[i]! < b[j]!) i++;
    else if (a[i]! > b[j]!) j++;
    else {
      i++;
      j++;
    }
    n++;
  }
  return n + (x.hi - i) + (y.hi - j);
}

function compareEdges(x: { family: Family; base: bigint; prefixLen: number; proto: ProposedEdge['proto']; port: number }, y: typeof x): number {
  return (
    x.family - y.family ||
    (x.base < y.base ? -1 : x.base > y.base ? 1 : 0) ||
    x.prefixLen - y.prefixLen ||
    PROTO_ORDER[x.proto] - PROTO_ORDER[y.proto] ||
    x.port - y.port
  );
}

/**
 * Validates `input` (throwing ValidationError with a JSON Pointer per problem) and
 * proposes edges for it. Ports are never merged. When tcp and udp on the same port
 * collapse to the very same prefix, they are emitted as one `any` edge (the datapath
 * expands `any` to exactly tcp+udp, so this is the same policy in fewer lines).
 * Edges are ordered by family, address, prefix length, proto (tcp, udp, any), port.
 */
export function propose(input: unknown, options: ProposeOptions = {}): Proposal {
  const v = validate(input);
  let dropped = 0;
  let kept = 0;
  const groupEdges: GroupEdge[] = [];
  for (const group of v.destinations.values()) {
    const dests: Destination[] = [];
    for (const d of group.values()) {
      if (d.count < v.minCount) dropped++;
      else dests.push(d);
    }
    kept += dests.length;
    if (dests.length === 0) continue;
    dests.sort((a, b) => (a.value < b.value ? -1 : a.value > b.value ? 1 : 0));
    const { family, proto, port } = dests[0]!;
    const addrs = dests.map((d) => d.value);
    for (const p of collapsePrefixes(addrs, FAMILY_BITS[family], v.maxUnseenRatio)) {
      let flows = 0;
      for (let i = p.lo; i < p.hi; i++) flows += dests[i]!.count;
      groupEdges.push({
        family,
        base: p.base,
        prefixLen: p.prefixLen,
        proto,
        port,
        flows: Math.min(Number.MAX_SAFE_INTEGER, flows),
        addrs,
        lo: p.lo,
        hi: p.hi,
      });
    }
  }

  // Fold a tcp edge and a udp edge with the same prefix and port into one `any` edge.
  const byPrefixPort = new Map<string, GroupEdge[]>();
  for (const e of groupEdges) {
    const key = `${e.family}|${e.base.toString(16)}|${e.prefixLen}|${e.port}`;
    const list = byPrefixPort.get(key);
    if (list) list.push(e);
    else byPrefixPort.set(key, [e]);
  }
  const sortable: Array<ProposedEdge & { family: Family; base: bigint; prefixLen: number }> = [];
  for (const list of byPrefixPort.values()) {
    const first = list[0]!;
    const width = FAMILY_BITS[first.family];
    const hostBits = width - first.prefixLen;
    const merged = list.length === 2;
    const observed = merged ? countUnion(list[0]!, list[1]!) : first.hi - first.lo;
    sortable.push({
      family: first.family,
      base: first.base,
      prefixLen: first.prefixLen,
      dst_cidr: formatPrefix(first.family, first.base, first.prefixLen),
      proto: merged ? 'any' : first.proto,
      port: first.port,
      flows: Math.min(Number.MAX_SAFE_INTEGER, list.reduce((n, e) => n + e.flows, 0)),
      observed_addresses: observed,
      covered_addresses: 2 ** hostBits,
      unseen_ratio: unseenRatio(hostBits, observed),
    });
  }
  sortable.sort(compareEdges);
  const edges: ProposedEdge[] = sortable.map((e) => ({
    dst_cidr: e.dst_cidr,
    proto: e.proto,
    port: e.port,
    flows: e.flows,
    observed_addresses: e.observed_addresses,
    covered_addresses: e.covered_addresses,
    unseen_ratio: e.unseen_ratio,
  }));

  return {
    service_id: v.serviceId,
    edges,
    stats: { input_flows: v.inputFlows, distinct_destinations: kept, edges: edges.length, dropped_below_min_count: dropped },
    max_unseen_ratio: v.maxUnseenRatio,
    generated_at: (options.now ?? (() => new Date()))().toISOString(),
  };
}
