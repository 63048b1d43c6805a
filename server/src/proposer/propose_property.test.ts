/**
 * Property test: random flow sets (seeded, so a failure reproduces) against invariants
 * computed independently of the implementation, including a reference optimum.
 */
import t, { type Test } from 'tap';
import { Ajv } from 'ajv';
import { MAP_SNAPSHOT_SCHEMA, parseCidr } from '../../../protocol/src/index.js';
import { plan, propose, type ObservedFlow, type Proposal } from './index.js';

const validSnapshot = new Ajv({ allErrors: true, strict: false }).compile(MAP_SNAPSHOT_SCHEMA);
const NOW = new Date('2026-03-01T12:00:00.000Z');

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

const toBig = (bytes: Uint8Array): bigint => bytes.reduce((n, b) => (n << 8n) | BigInt(b), 0n);
const widthOf = (family: 4 | 6): number => (family === 4 ? 32 : 128);

interface Dest {
  proto: 'tcp' | 'udp';
  port: number;
  family: 4 | 6;
  addr: bigint;
  count: number;
}

function randomFlows(rnd: () => number): ObservedFlow[] {
  const int = (n: number): number => Math.floor(rnd() * n);
  const clusters: Array<{ family: 4 | 6; base: number[] }> = [];
  for (let c = 1 + int(4); c > 0; c--) {
    clusters.push(rnd() < 0.6 ? { family: 4, base: [10, int(3), int(4)] } : { family: 6, base: [0x2001, 0xdb8, int(3), int(2)] });
  }
  const ports = [0, 53, 443, 5432].slice(0, 1 + int(4));
  const flows: ObservedFlow[] = [];
  for (let n = int(120); n > 0; n--) {
    const c = clusters[int(clusters.length)]!;
    // Small offsets so that siblings and near-full prefixes actually occur.
    const off = int(rnd() < 0.5 ? 8 : 64);
    const dst = c.family === 4 ? `${c.base.join('.')}.${off}` : `${c.base.map((g) => g.toString(16)).join(':')}::${off.toString(16)}`;
    flows.push({ dst, proto: rnd() < 0.5 ? 'tcp' : 'udp', port: ports[int(ports.length)]!, count: int(4) });
  }
  return flows;
}

function inPrefix(addr: bigint, base: bigint, hostBits: number): boolean {
  return addr >> BigInt(hostBits) === base >> BigInt(hostBits);
}

/** Fewest acceptable prefixes covering `addrs`, by plain recursion over the binary trie. */
function referenceOptimum(addrs: bigint[], base: bigint, hostBits: number, ratio: number): number {
  if (addrs.length === 0) return 0;
  const size = 2 ** hostBits;
  if ((size - addrs.length) / size <= ratio) return 1;
  const bit = 1n << BigInt(hostBits - 1);
  const lo = addrs.filter((a) => (a & bit) === 0n);
  const hi = addrs.filter((a) => (a & bit) !== 0n);
  return referenceOptimum(lo, base, hostBits - 1, ratio) + referenceOptimum(hi, base | bit, hostBits - 1, ratio);
}

function shuffle<T>(items: T[], rnd: () => number): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

function check(t: Test, seed: number): void {
  const rnd = mulberry32(seed);
  const flows = randomFlows(rnd);
  const ratios = [0, 0.1, 0.25, 0.5, 0.75, 0.9, 1, rnd()];
  const ratio = ratios[Math.floor(rnd() * ratios.length)]!;
  const minCount = Math.floor(rnd() * 3);
  const input = { service_id: seed, flows, max_unseen_ratio: ratio, min_count: minCount };
  const p: Proposal = propose(input, { now: () => NOW });
  const fail = (what: string): void => {
    t.fail(`seed ${seed} (ratio ${ratio}, min_count ${minCount}): ${what}`);
  };

  // Independent aggregation.
  const dests = new Map<string, Dest>();
  for (const f of flows) {
    const c = parseCidr(f.dst);
    const addr = toBig(c.addr);
    const key = `${f.proto}|${f.port}|${c.family}|${addr}`;
    const d = dests.get(key);
    if (d) d.count += f.count;
    else dests.set(key, { proto: f.proto, port: f.port, family: c.family, addr, count: f.count });
  }
  const kept = [...dests.values()].filter((d) => d.count >= minCount);
  if (p.stats.input_flows !== flows.length) fail('input_flows');
  if (p.stats.distinct_destinations !== kept.length) fail('distinct_destinations');
  if (p.stats.dropped_below_min_count !== dests.size - kept.length) fail('dropped_below_min_count');
  if (p.stats.edges !== p.edges.length) fail('stats.edges');

  const edges = p.edges.map((e) => {
    const c = parseCidr(e.dst_cidr);
    return { ...e, family: c.family, base: toBig(c.addr), hostBits: widthOf(c.family) - c.prefixLen, hostBitsSet: c.hostBitsSet };
  });
  const protosOf = (proto: string): Array<'tcp' | 'udp'> => (proto === 'any' ? ['tcp', 'udp'] : [proto as 'tcp' | 'udp']);

  // Every observed destination is covered by an edge of its proto and port.
  for (const d of kept) {
    const covered = edges.some((e) => e.port === d.port && e.family === d.family && protosOf(e.proto).includes(d.proto) && inPrefix(d.addr, e.base, e.hostBits));
    if (!covered) fail(`${d.proto} ${d.addr}:${d.port} not covered`);
  }

  for (const e of edges) {
    const inside = kept.filter((d) => d.port === e.port && d.family === e.family && protosOf(e.proto).includes(d.proto) && inPrefix(d.addr, e.base, e.hostBits));
    const observed = new Set(inside.map((d) => d.addr)).size;
    const size = 2 ** e.hostBits;
    if (e.hostBitsSet) fail(`${e.dst_cidr} has host bits`);
    if (e.observed_addresses !== observed || observed === 0) fail(`${e.dst_cidr} observed ${e.observed_addresses}, really ${observed}`);
    if (e.covered_addresses !== size) fail(`${e.dst_cidr} covered_addresses`);
    if (e.unseen_ratio !== (size - observed) / size || e.unseen_ratio > ratio) fail(`${e.dst_cidr} unseen_ratio ${e.unseen_ratio} > ${ratio}`);
    if (e.flows !== inside.reduce((n, d) => n + d.count, 0)) fail(`${e.dst_cidr} flows`);
    // Tightest: both halves of a non-host prefix hold observed addresses, per protocol.
    if (e.hostBits > 0) {
      const bit = 1n << BigInt(e.hostBits - 1);
      for (const proto of protosOf(e.proto)) {
        const mine = inside.filter((d) => d.proto === proto);
        if (!mine.some((d) => (d.addr & bit) === 0n) || !mine.some((d) => (d.addr & bit) !== 0n)) fail(`${e.dst_cidr} ${proto} is not tight`);
      }
    }
  }

  // No overlap between edges that apply to the same proto and port.
  for (let i = 0; i < edges.length; i++) {
    for (let j = i + 1; j < edges.length; j++) {
      const a = edges[i]!;
      const b = edges[j]!;
      if (a.port !== b.port || a.family !== b.family || !protosOf(a.proto).some((x) => protosOf(b.proto).includes(x))) continue;
      const wider = a.hostBits >= b.hostBits ? a : b;
      const narrower = wider === a ? b : a;
      if (inPrefix(narrower.base, wider.base, wider.hostBits)) fail(`${a.proto} ${a.dst_cidr} overlaps ${b.proto} ${b.dst_cidr} on port ${a.port}`);
    }
  }

  // Minimal: as many prefixes (an `any` edge counts for tcp and udp) as the reference optimum.
  const groups = new Map<string, Dest[]>();
  for (const d of kept) {
    const k = `${d.proto}|${d.port}|${d.family}`;
    groups.set(k, [...(groups.get(k) ?? []), d]);
  }
  let optimum = 0;
  for (const g of groups.values()) optimum += referenceOptimum(g.map((d) => d.addr), 0n, widthOf(g[0]!.family), ratio);
  const used = edges.reduce((n, e) => n + (e.proto === 'any' ? 2 : 1), 0);
  if (used !== optimum) fail(`${used} prefixes where ${optimum} suffice`);

  // Deterministic: the same flows in another order give the same proposal.
  const again = propose({ ...input, flows: shuffle(flows, rnd) }, { now: () => NOW });
  if (JSON.stringify(again) !== JSON.stringify(p)) fail('output depends on input order');

  // The plan of any proposal is a valid snapshot with the same edges.
  const snap = plan({ proposal: p, ttl_seconds: 60 + Math.floor(rnd() * 3600) });
  if (!validSnapshot(snap)) fail(`plan invalid: ${JSON.stringify(validSnapshot.errors)}`);
  const planned = snap.edges!.map((e) => `${e.proto} ${e.dst_cidr} ${e.port}`);
  const proposed = p.edges.map((e) => `${e.proto} ${e.dst_cidr} ${e.port}`);
  if (JSON.stringify(planned) !== JSON.stringify(proposed)) fail('plan changed the edges');
}

t.test('random flow sets keep every invariant', async (t) => {
  const runs = 400;
  for (let seed = 1; seed <= runs; seed++) check(t, seed);
  t.pass(`${runs} random flow sets checked`);
});
