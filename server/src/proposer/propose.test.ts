import t from 'tap';
import { ValidationError } from '../../../protocol/src/index.js';
import { propose, type ObservedFlow, type Proposal, type ProposedEdge } from './index.js';

const NOW = new Date('2026-03-01T12:00:00.000Z');
const run = (input: unknown): Proposal => propose(input, { now: () => NOW });
const flow = (dst: string, port = 443, proto: 'tcp' | 'udp' = 'tcp', count = 1): ObservedFlow => ({ dst, proto, port, count });
const cidrs = (p: Proposal): string[] => p.edges.map((e) => `${e.proto} ${e.dst_cidr}:${e.port}`);

function problemsOf(fn: () => unknown): Array<{ path: string; message: string }> {
  try {
    fn();
  } catch (e) {
    if (e instanceof ValidationError) return e.problems;
    throw e;
  }
  throw new Error('expected a ValidationError');
}
const pathsOf = (fn: () => unknown): string[] => problemsOf(fn).map((p) => p.path);

t.test('aggregates flows per (proto, port, address) and reports stats', async (t) => {
  const p = run({
    service_id: 7,
    flows: [
      flow('10.0.0.5', 443, 'tcp', 3),
      flow('10.0.0.5/32', 443, 'tcp', 4),
      flow('10.0.0.5', 53, 'udp', 2),
      flow('10.0.0.9', 443, 'tcp', 0),
    ],
  });
  t.equal(p.service_id, 7);
  t.equal(p.generated_at, NOW.toISOString());
  t.equal(p.max_unseen_ratio, 0.25, 'default threshold');
  t.same(p.stats, { input_flows: 4, distinct_destinations: 2, edges: 2, dropped_below_min_count: 1 });
  t.same(p.edges, [
    { dst_cidr: '10.0.0.5/32', proto: 'tcp', port: 443, flows: 7, observed_addresses: 1, covered_addresses: 1, unseen_ratio: 0 },
    { dst_cidr: '10.0.0.5/32', proto: 'udp', port: 53, flows: 2, observed_addresses: 1, covered_addresses: 1, unseen_ratio: 0 },
  ]);
});

t.test('min_count applies to the summed count of a destination', async (t) => {
  const flows = [flow('10.0.0.2', 80, 'tcp', 2), flow('10.0.0.2', 80, 'tcp', 2), flow('10.0.0.3', 80, 'tcp', 3)];
  const p = run({ service_id: 1, flows, min_count: 4 });
  t.same(cidrs(p), ['tcp 10.0.0.2/32:80']);
  t.same(p.stats, { input_flows: 3, distinct_destinations: 1, edges: 1, dropped_below_min_count: 1 });
  t.same(cidrs(run({ service_id: 1, flows, min_count: 0 })), ['tcp 10.0.0.2/31:80']);
});

t.test('ratio 0 merges only exact fills', async (t) => {
  const quad = ['10.0.0.0', '10.0.0.1', '10.0.0.2', '10.0.0.3'].map((a) => flow(a));
  const p = run({ service_id: 1, flows: quad, max_unseen_ratio: 0 });
  t.same(p.edges, [{ dst_cidr: '10.0.0.0/30', proto: 'tcp', port: 443, flows: 4, observed_addresses: 4, covered_addresses: 4, unseen_ratio: 0 }]);
  t.same(cidrs(run({ service_id: 1, flows: [quad[1]!, quad[2]!], max_unseen_ratio: 0 })), ['tcp 10.0.0.1/32:443', 'tcp 10.0.0.2/32:443']);
});

t.test('threshold: 3 of 4 addresses', async (t) => {
  const three = ['10.0.0.0', '10.0.0.1', '10.0.0.3'].map((a) => flow(a));
  const at25 = run({ service_id: 1, flows: three, max_unseen_ratio: 0.25 });
  t.same(at25.edges, [{ dst_cidr: '10.0.0.0/30', proto: 'tcp', port: 443, flows: 3, observed_addresses: 3, covered_addresses: 4, unseen_ratio: 0.25 }]);
  // Below 0.25 the /30 is refused; the exactly-filled /31 is still taken (it admits nothing unseen).
  t.same(cidrs(run({ service_id: 1, flows: three, max_unseen_ratio: 0.2 })), ['tcp 10.0.0.0/31:443', 'tcp 10.0.0.3/32:443']);
  // Three addresses that share no filled sibling pair stay host routes.
  const spread = ['10.0.0.1', '10.0.0.2', '10.0.0.4'].map((a) => flow(a));
  t.same(cidrs(run({ service_id: 1, flows: spread, max_unseen_ratio: 0.2 })), ['tcp 10.0.0.1/32:443', 'tcp 10.0.0.2/32:443', 'tcp 10.0.0.4/32:443']);
});

t.test('wider prefixes when the threshold allows', async (t) => {
  // 200 of 256 addresses of a /24 seen: unseen 56/256 = 0.21875.
  const flows = Array.from({ length: 200 }, (_, i) => flow(`172.16.4.${i}`, 5432));
  t.same(cidrs(run({ service_id: 1, flows, max_unseen_ratio: 0.25 })), ['tcp 172.16.4.0/24:5432']);
  const tight = run({ service_id: 1, flows, max_unseen_ratio: 0.2 });
  t.same(cidrs(tight), ['tcp 172.16.4.0/25:5432', 'tcp 172.16.4.128/26:5432', 'tcp 172.16.4.192/29:5432']);
  t.equal(tight.edges.reduce((n, e) => n + e.observed_addresses, 0), 200);
});

t.test('IPv6, and families are never merged', async (t) => {
  const flows = [
    flow('2001:db8::'),
    flow('2001:db8::1'),
    flow('2001:db8::2'),
    flow('2001:DB8:0:0::3/128'),
    flow('2001:db8:1::1'),
    flow('0.0.0.1'),
    flow('::1'),
  ];
  const p = run({ service_id: 1, flows, max_unseen_ratio: 0 });
  t.same(cidrs(p), ['tcp 0.0.0.1/32:443', 'tcp ::1/128:443', 'tcp 2001:db8::/126:443', 'tcp 2001:db8:1::1/128:443']);
  t.same(cidrs(run({ service_id: 1, flows, max_unseen_ratio: 1 })), ['tcp 0.0.0.1/32:443', 'tcp ::/2:443'], 'the tightest prefix holding them all');
  const wide = run({ service_id: 1, flows: [flow('2001:db8::1'), flow('2001:db8::ffff:ffff')], max_unseen_ratio: 1 });
  t.same(cidrs(wide), ['tcp 2001:db8::/96:443']);
  t.equal(wide.edges[0]!.covered_addresses, 2 ** 32);
});

t.test('IPv4-mapped IPv6 destinations count as IPv4', async (t) => {
  const p = run({ service_id: 1, flows: [flow('::ffff:10.0.0.0'), flow('10.0.0.1')], max_unseen_ratio: 0 });
  t.same(cidrs(p), ['tcp 10.0.0.0/31:443']);
});

t.test('ports are kept apart', async (t) => {
  const p = run({ service_id: 1, flows: [flow('10.0.0.0', 80), flow('10.0.0.1', 443), flow('10.0.0.1', 80), flow('10.0.0.0', 0)], max_unseen_ratio: 0 });
  t.same(cidrs(p), ['tcp 10.0.0.0/31:80', 'tcp 10.0.0.0/32:0', 'tcp 10.0.0.1/32:443']);
});

t.test('tcp and udp with the same prefix and port fold into any', async (t) => {
  const p = run({
    service_id: 1,
    flows: [flow('10.0.0.0', 53, 'udp', 5), flow('10.0.0.1', 53, 'udp', 5), flow('10.0.0.0', 53, 'tcp', 1), flow('10.0.0.1', 53, 'tcp', 1), flow('10.0.0.1', 80, 'udp')],
    max_unseen_ratio: 0,
  });
  t.same(p.edges, [
    { dst_cidr: '10.0.0.0/31', proto: 'any', port: 53, flows: 12, observed_addresses: 2, covered_addresses: 2, unseen_ratio: 0 },
    { dst_cidr: '10.0.0.1/32', proto: 'udp', port: 80, flows: 1, observed_addresses: 1, covered_addresses: 1, unseen_ratio: 0 },
  ]);
  // Different addresses collapsing to the same prefix: `any` counts the union.
  const q = run({ service_id: 1, flows: [flow('10.0.0.0', 53, 'udp'), flow('10.0.0.3', 53, 'udp'), flow('10.0.0.1', 53, 'tcp'), flow('10.0.0.3', 53, 'tcp'), flow('10.0.0.2', 53, 'tcp')], max_unseen_ratio: 0.5 });
  t.same(q.edges.map((e) => [e.proto, e.dst_cidr, e.observed_addresses, e.unseen_ratio]), [['any', '10.0.0.0/30', 4, 0]]);
  // Different prefixes stay separate protocols.
  const r = run({ service_id: 1, flows: [flow('10.0.0.0', 53, 'udp'), flow('10.0.0.1', 53, 'udp'), flow('10.0.0.0', 53, 'tcp')], max_unseen_ratio: 0 });
  t.same(cidrs(r), ['udp 10.0.0.0/31:53', 'tcp 10.0.0.0/32:53'], 'shorter prefix first');
});

t.test('output is deterministic and independent of input order', async (t) => {
  const flows: ObservedFlow[] = [];
  for (let i = 0; i < 300; i++) flows.push(flow(i % 3 ? `10.1.${i % 7}.${(i * 37) % 256}` : `fd00::${(i * 13).toString(16)}`, [22, 443, 53][i % 3]!, i % 2 ? 'tcp' : 'udp', 1 + (i % 5)));
  const a = run({ service_id: 3, flows, max_unseen_ratio: 0.3 });
  const reversed = run({ service_id: 3, flows: [...flows].reverse(), max_unseen_ratio: 0.3 });
  t.same(reversed, a);
  t.same(run({ service_id: 3, flows, max_unseen_ratio: 0.3 }), a);
  const order = (e: ProposedEdge): string => `${e.dst_cidr.includes(':') ? 6 : 4}`;
  t.same(a.edges.map(order), [...a.edges.map(order)].sort(), 'IPv4 before IPv6');
  t.match(propose({ service_id: 1, flows: [] }).generated_at, /^\d{4}-\d\d-\d\dT/);
});

t.test('no flows, no edges', async (t) => {
  const p = run({ service_id: 0, flows: [] });
  t.same(p.edges, []);
  t.same(p.stats, { input_flows: 0, distinct_destinations: 0, edges: 0, dropped_below_min_count: 0 });
});

t.test('bad input names each failing path', async (t) => {
  for (const bad of [null, undefined, 'x', 42, [], [{ service_id: 1 }]]) {
    t.same(pathsOf(() => run(bad)), ['/'], `root ${JSON.stringify(bad)}`);
  }
  t.same(pathsOf(() => run({})), ['/service_id', '/flows']);
  t.same(pathsOf(() => run({ service_id: -1, flows: {} })), ['/service_id', '/flows']);
  t.same(pathsOf(() => run({ service_id: 2 ** 32, flows: [] })), ['/service_id']);
  t.same(pathsOf(() => run({ service_id: 1.5, flows: [], max_unseen_ratio: 1.01, min_count: -1 })), ['/service_id', '/max_unseen_ratio', '/min_count']);
  t.same(pathsOf(() => run({ service_id: 1, flows: [], max_unseen_ratio: '0.2' })), ['/max_unseen_ratio']);
  t.same(pathsOf(() => run({ service_id: 1, flows: [], max_unseen_ratio: Number.NaN, min_count: 0.5 })), ['/max_unseen_ratio', '/min_count']);
  const flows = [
    flow('10.0.0.1'),
    { dst: '10.0.0.0/24', proto: 'tcp', port: 1, count: 1 },
    { dst: 'banana', proto: 'icmp', port: 70000, count: 1.5 },
    { dst: '10.0.0.1', proto: 'tcp', port: -1, count: -2 },
    null,
    { proto: 'TCP', port: '80', count: '1' },
    { dst: '2001:db8::1/64', proto: 'udp', port: 1, count: 1 },
    { dst: 'fe80::1%eth0', proto: 'udp', port: 1, count: 1 },
  ];
  const problems = problemsOf(() => run({ service_id: 1, flows }));
  t.same(problems.map((p) => p.path), [
    '/flows/1/dst',
    '/flows/2/dst',
    '/flows/2/proto',
    '/flows/2/port',
    '/flows/2/count',
    '/flows/3/port',
    '/flows/3/count',
    '/flows/4',
    '/flows/5/dst',
    '/flows/5/proto',
    '/flows/5/port',
    '/flows/5/count',
    '/flows/6/dst',
    '/flows/7/dst',
  ]);
  t.match(problems[0]!.message, /single address/);
  t.match(problems[2]!.message, /"tcp" or "udp".*"icmp"/);
  const err = (() => {
    try {
      run({ service_id: 1, flows: [null] });
    } catch (e) {
      return e as ValidationError;
    }
    return undefined;
  })();
  t.equal(err?.code, 'VALIDATION_FAILED');
  t.equal(err?.name, 'ValidationError');
});

t.test('flow limits', async (t) => {
  const many = Array.from({ length: 100_001 }, () => flow('10.0.0.1'));
  const problems = problemsOf(() => run({ service_id: 1, flows: many }));
  t.same(problems.map((p) => p.path), ['/flows']);
  t.match(problems[0]!.message, /at most 100000/);
  const ok = run({ service_id: 1, flows: many.slice(1) });
  t.same(ok.edges.map((e) => e.flows), [100_000]);
  // A body full of mistakes yields a capped, readable error.
  const junk = problemsOf(() => run({ service_id: 1, flows: Array.from({ length: 5000 }, () => ({ dst: 'x' })) }));
  t.equal(junk.length, 101);
  t.match(junk[100]!, { path: '/', message: /more problems not listed/ });
});

t.test('counts saturate instead of losing precision', async (t) => {
  const p = run({ service_id: 1, flows: [flow('10.0.0.1', 1, 'tcp', Number.MAX_SAFE_INTEGER), flow('10.0.0.1', 1, 'tcp', 5)] });
  t.equal(p.edges[0]!.flows, Number.MAX_SAFE_INTEGER);
});
