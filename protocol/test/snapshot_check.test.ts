import t, { type Test } from 'tap';
import {
  checkMapSnapshot,
  inspectMapSnapshot,
  inspectPolicyRules,
  MAX_RULES_PER_SERVICE,
  ValidationError,
  type FieldProblem,
  type MapSnapshot,
} from '../src/index.js';

const snap = (extra: Partial<MapSnapshot> = {}): MapSnapshot => ({ version: 1, service_id: 7, ttl_seconds: 600, ...extra });

/** The problems checkMapSnapshot throws with (fails the test when it accepts). */
function refused(t: Test, body: unknown, capacity?: number): FieldProblem[] {
  try {
    checkMapSnapshot(body, capacity);
  } catch (e) {
    t.ok(e instanceof ValidationError, 'a ValidationError');
    t.equal((e as ValidationError).code, 'VALIDATION_FAILED');
    return (e as ValidationError).problems;
  }
  t.fail(`accepted ${JSON.stringify(body).slice(0, 200)}`);
  return [];
}

t.test('a valid snapshot is returned as is', async (t) => {
  const body = snap({
    edges: [
      { dst_cidr: '10.0.0.0/8', proto: 'any', port: 53 },
      { dst_cidr: '10.0.0.0/8', proto: 'udp', port: 53 },
      { dst_cidr: '2001:db8::/32', proto: 'tcp', port: 0 },
    ],
    allow_cidrs: [{ cidr: '0.0.0.0/0', proto: 'tcp', port: 22 }],
    meta: { note: 'x' },
  });
  t.equal(checkMapSnapshot(body), body);
  const r = inspectMapSnapshot(body);
  t.same(r, { problems: [], rules: 5, capacity: MAX_RULES_PER_SERVICE, overCapacity: false }, '"any" counts as two rules');
});

t.test('bad schema: every failing field named by its JSON Pointer', async (t) => {
  const problems = refused(t, { version: 0, service_id: -1, edges: [{ dst_cidr: 'x', proto: 'sctp', port: 70000 }, { proto: 'tcp', port: 1 }], ttl_seconds: 10 });
  const paths = problems.map((p) => p.path).sort();
  for (const p of ['/version', '/service_id', '/edges/0/proto', '/edges/0/port', '/edges/1/dst_cidr', '/ttl_seconds']) {
    t.ok(paths.includes(p), `${p} named (${paths.join(', ')})`);
  }
  t.match(problems.find((p) => p.path === '/edges/1/dst_cidr')?.message, /is required/);
  t.same(refused(t, { service_id: 1, ttl_seconds: 60 }).map((p) => p.path), ['/version'], 'a missing field is named by its own path');
  for (const body of [null, [], 'snapshot', 42]) {
    t.same(refused(t, body), [{ path: '/', message: 'a MapSnapshot JSON object is required' }], `${JSON.stringify(body)} refused at /`);
  }
  t.equal(refused(t, snap({ edges: 'x' as unknown as [] }))[0]?.path, '/edges');
});

t.test('a CIDR that does not parse', async (t) => {
  for (const bad of ['not-an-ip/8', '10.0.0.300/32', '10.0.0.0/33', 'fe80::1%eth0/128', '']) {
    const problems = refused(t, snap({ edges: [{ dst_cidr: bad, proto: 'tcp', port: 1 }] }));
    t.equal(problems.length, 1, bad);
    t.equal(problems[0]?.path, '/edges/0/dst_cidr', `${bad}: path`);
  }
  const v6 = refused(t, snap({ allow_cidrs: [{ cidr: '2001:db8::/32', proto: 'tcp', port: 1 }, { cidr: '2001:db8::/129', proto: 'tcp', port: 1 }] }));
  t.same(v6.map((p) => p.path), ['/allow_cidrs/1/cidr'], 'allow_cidrs are named by their own field');
});

t.test('host bits: refused, naming the canonical form', async (t) => {
  const [p4] = refused(t, snap({ edges: [{ dst_cidr: '10.0.0.1/24', proto: 'tcp', port: 80 }] }));
  t.equal(p4?.path, '/edges/0/dst_cidr');
  t.match(p4?.message, /host bits/);
  t.match(p4?.message, /did you mean 10\.0\.0\.0\/24\?/);
  const [p6] = refused(t, snap({ allow_cidrs: [{ cidr: '2001:db8::1/32', proto: 'udp', port: 53 }] }));
  t.equal(p6?.path, '/allow_cidrs/0/cidr');
  t.match(p6?.message, /did you mean 2001:db8::\/32\?/);
});

t.test('duplicates are refused, comparing canonical networks', async (t) => {
  const problems = refused(
    t,
    snap({
      edges: [
        { dst_cidr: '10.0.0.0/24', proto: 'tcp', port: 80 },
        { dst_cidr: '10.0.1.0/24', proto: 'tcp', port: 80 },
        { dst_cidr: '10.0.0.0/24', proto: 'tcp', port: 80 },
        { dst_cidr: '2001:db8:0::/48', proto: 'any', port: 0 },
        { dst_cidr: '2001:db8::/48', proto: 'any', port: 0 },
      ],
    }),
  );
  t.same(problems, [
    { path: '/edges/2', message: 'duplicate of /edges/0 (10.0.0.0/24 tcp 80)' },
    { path: '/edges/4', message: 'duplicate of /edges/3 (2001:db8::/48 any 0)' },
  ]);
  t.same(
    inspectMapSnapshot(snap({ edges: [{ dst_cidr: '10.0.0.0/24', proto: 'tcp', port: 80 }], allow_cidrs: [{ cidr: '10.0.0.0/24', proto: 'tcp', port: 80 }] })).problems,
    [],
    'the same entry in edges and in allow_cidrs is no duplicate (other direction)',
  );
  t.same(
    inspectMapSnapshot(snap({ edges: [{ dst_cidr: '10.0.0.0/24', proto: 'tcp', port: 80 }, { dst_cidr: '10.0.0.0/24', proto: 'any', port: 80 }] })).problems,
    [],
    'tcp beside any is no duplicate (the encoder collapses the overlap)',
  );
});

t.test('capacity is counted after "any" expands to tcp and udp', async (t) => {
  const edges = Array.from({ length: 6 }, (_, i) => ({ dst_cidr: `10.0.${i}.0/24`, proto: 'any' as const, port: 1 }));
  const over = inspectMapSnapshot(snap({ edges }), 11);
  t.equal(over.rules, 12);
  t.equal(over.overCapacity, true);
  t.same(over.problems, [{ path: '/edges', message: '12 rules (after expanding "any" to tcp and udp) exceed the per-service capacity of 11' }]);
  t.equal(inspectMapSnapshot(snap({ edges }), 12).overCapacity, false, 'exactly full fits');
  t.equal(inspectMapSnapshot(snap({ edges: edges.map((e) => ({ ...e, proto: 'tcp' as const })) }), 11).overCapacity, false, 'six tcp edges are six rules');
  const mixed = inspectMapSnapshot(snap({ edges, allow_cidrs: [{ cidr: 'nope', proto: 'tcp', port: 1 }] }), 11);
  t.same(mixed.problems.map((p) => p.path), ['/allow_cidrs/0/cidr', '/edges'], 'every problem reported, the capacity one last');
  const many = Array.from({ length: MAX_RULES_PER_SERVICE / 2 + 1 }, (_, i) => ({
    dst_cidr: `${10 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}.0/24`,
    proto: 'any' as const,
    port: 80,
  }));
  const full = refused(t, snap({ edges: many }));
  t.match(full, [{ path: '/edges', message: /per-service capacity of 131072/ }], 'the default capacity is MAX_RULES_PER_SERVICE');
});

t.test('the rule lists alone are checked the same way, with the same paths', async (t) => {
  t.same(inspectPolicyRules({ edges: [{ dst_cidr: '10.0.0.0/8', proto: 'tcp', port: 443 }] }).problems, [], 'no version or ttl needed');
  const r = inspectPolicyRules({
    edges: [{ dst_cidr: '10.0.0.1/8', proto: 'tcp', port: 443 }, { dst_cidr: '10.0.0.0/8', proto: 'tcp', port: 70000 }],
    allow_cidrs: [{ cidr: '10.0.0.0/8', proto: 'tcp', port: 1 }, { cidr: '10.0.0.0/8', proto: 'tcp', port: 1 }],
  });
  t.same(r.problems.map((p) => p.path), ['/edges/1/port'], 'schema problems first: entries are checked once the types hold');
  const e = inspectPolicyRules({
    edges: [{ dst_cidr: '10.0.0.1/8', proto: 'tcp', port: 443 }],
    allow_cidrs: [{ cidr: '10.0.0.0/8', proto: 'tcp', port: 1 }, { cidr: '10.0.0.0/8', proto: 'tcp', port: 1 }],
  });
  t.same(e.problems.map((p) => p.path), ['/edges/0/dst_cidr', '/allow_cidrs/1']);
  t.same(inspectPolicyRules(null).problems.map((p) => p.path), ['/']);
});

t.test('paths are JSON Pointers, never dotted or bracketed', async (t) => {
  const r = inspectMapSnapshot({
    version: 1,
    service_id: 1,
    ttl_seconds: 60,
    edges: [{ dst_cidr: '10.0.0.1/24', proto: 'tcp', port: 1 }, { dst_cidr: 'x', proto: 'tcp', port: 1 }],
    allow_cidrs: [{ cidr: '::1/64', proto: 'udp', port: 2 }],
  });
  t.ok(r.problems.length >= 3);
  for (const p of r.problems) t.match(p.path, /^(\/[a-z_0-9]+)+$/, `${p.path} is a JSON Pointer`);
  const schema = inspectMapSnapshot({ version: 'one', service_id: 1, ttl_seconds: 60, edges: [{ dst_cidr: 1, proto: 'tcp', port: 1 }] });
  for (const p of schema.problems) t.match(p.path, /^(\/[a-z_0-9]+)+$/, `${p.path} (schema) is a JSON Pointer`);
});

t.test('icmp entries: the port is the ICMP type; icmp and any/0 are counted as the datapath stores them', async (t) => {
  const r = inspectPolicyRules({ edges: [{ dst_cidr: '10.0.0.0/8', proto: 'icmp', port: 8 }, { dst_cidr: '10.0.0.0/8', proto: 'any', port: 0 }, { dst_cidr: '10.0.0.0/8', proto: 'any', port: 53 }] });
  t.same(r.problems, []);
  t.equal(r.rules, 5, 'icmp = ICMP + ICMPv6, any/0 = one rule for every protocol, any/53 = tcp + udp');
  const bad = inspectPolicyRules({ edges: [{ dst_cidr: '10.0.0.0/8', proto: 'icmp', port: 256 }] });
  t.same(bad.problems.map((p) => p.path), ['/edges/0/port'], 'an ICMP type above 255 is refused');
});
