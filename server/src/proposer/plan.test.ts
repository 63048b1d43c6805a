import t from 'tap';
import { Ajv } from 'ajv';
import { MAP_SNAPSHOT_SCHEMA, MAX_RULES_PER_SERVICE, ValidationError } from '../../../protocol/src/index.js';
import { plan, propose, type Proposal } from './index.js';

const validSnapshot = new Ajv({ allErrors: true, strict: false }).compile(MAP_SNAPSHOT_SCHEMA);
const NOW = new Date('2026-03-01T12:00:00.000Z');

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

const proposal = (): Proposal =>
  propose(
    {
      service_id: 101,
      flows: [
        { dst: '10.10.20.0', proto: 'tcp', port: 5432, count: 9 },
        { dst: '10.10.20.1', proto: 'tcp', port: 5432, count: 1 },
        { dst: '10.10.30.15', proto: 'tcp', port: 443, count: 4 },
        { dst: '2001:db8::53', proto: 'udp', port: 53, count: 2 },
        { dst: '2001:db8::53', proto: 'tcp', port: 53, count: 1 },
      ],
    },
    { now: () => NOW },
  );

t.test('a proposal becomes a schema-valid MapSnapshot with defaults and provenance', async (t) => {
  const snap = plan({ proposal: proposal() });
  t.ok(validSnapshot(snap), JSON.stringify(validSnapshot.errors));
  t.same(snap, {
    version: 1,
    service_id: 101,
    edges: [
      { dst_cidr: '10.10.20.0/31', proto: 'tcp', port: 5432 },
      { dst_cidr: '10.10.30.15/32', proto: 'tcp', port: 443 },
      { dst_cidr: '2001:db8::53/128', proto: 'any', port: 53 },
    ],
    allow_cidrs: [],
    ttl_seconds: 1800,
    meta: { source: 'segmenter', generated_at: NOW.toISOString(), max_unseen_ratio: 0.25 },
  });
  // A JSON round trip (the HTTP path) changes nothing.
  t.same(plan(JSON.parse(JSON.stringify({ proposal: proposal() }))), snap);
});

t.test('options: ttl, version, allow_cidrs, meta merged with the segmenter winning its own keys', async (t) => {
  const snap = plan({
    proposal: proposal(),
    ttl_seconds: 60,
    version: 3,
    allow_cidrs: [
      { cidr: '0.0.0.0/0', proto: 'tcp', port: 22 },
      { cidr: '192.168.0.0/16', proto: 'any', port: 0 },
    ],
    meta: { note: 'canary for web', source: 'someone else' },
  });
  t.ok(validSnapshot(snap));
  t.equal(snap.ttl_seconds, 60);
  t.equal(snap.version, 3);
  t.same(snap.allow_cidrs, [
    { cidr: '0.0.0.0/0', proto: 'tcp', port: 22 },
    { cidr: '192.168.0.0/16', proto: 'any', port: 0 },
  ]);
  t.same(snap.meta, { note: 'canary for web', source: 'segmenter', generated_at: NOW.toISOString(), max_unseen_ratio: 0.25 });
});

t.test('an edited proposal is canonicalized, de-duplicated and sorted', async (t) => {
  const snap = plan({
    proposal: {
      service_id: 5,
      edges: [
        { dst_cidr: '2001:DB8:0::/32', proto: 'udp', port: 53 },
        { dst_cidr: '10.0.0.7', proto: 'tcp', port: 80 },
        { dst_cidr: '10.0.0.0/8', proto: 'tcp', port: 443 },
        { dst_cidr: '10.0.0.0/8', proto: 'any', port: 443 },
        { dst_cidr: '10.0.0.0/8', proto: 'udp', port: 443 },
        { dst_cidr: '10.0.0.7/32', proto: 'tcp', port: 80 },
      ],
    },
  });
  t.ok(validSnapshot(snap));
  t.same(snap.edges, [
    { dst_cidr: '10.0.0.0/8', proto: 'any', port: 443 },
    { dst_cidr: '10.0.0.7/32', proto: 'tcp', port: 80 },
    { dst_cidr: '2001:db8::/32', proto: 'udp', port: 53 },
  ]);
  t.same(snap.meta, { source: 'segmenter' }, 'no provenance invented for a hand-written proposal');
});

t.test('capacity counts edges and allow_cidrs after any expansion', async (t) => {
  const half = MAX_RULES_PER_SERVICE / 2;
  const edges = Array.from({ length: half }, (_, i) => ({ dst_cidr: `10.${i >> 16}.${(i >> 8) & 255}.${i & 255}/32`, proto: 'any', port: 443 }));
  const fits = plan({ proposal: { service_id: 1, edges } });
  t.equal(fits.edges!.length, half);
  const problems = problemsOf(() => plan({ proposal: { service_id: 1, edges }, allow_cidrs: [{ cidr: '0.0.0.0/0', proto: 'tcp', port: 22 }] }));
  t.same(problems.map((p) => p.path), ['/proposal/edges']);
  t.match(problems[0]!.message, /131072 edge rules and 1 allow rules/);
  const huge = Array.from({ length: 2 * MAX_RULES_PER_SERVICE + 1 }, () => ({ dst_cidr: '10.0.0.1/32', proto: 'tcp', port: 1 }));
  t.same(pathsOf(() => plan({ proposal: { service_id: 1, edges: huge } })), ['/proposal/edges']);
});

t.test('bad input names each failing path', async (t) => {
  for (const bad of [null, undefined, 'x', [], 7]) t.same(pathsOf(() => plan(bad)), ['/'], `root ${JSON.stringify(bad)}`);
  t.same(pathsOf(() => plan({})), ['/proposal']);
  t.same(pathsOf(() => plan({ proposal: [] })), ['/proposal']);
  t.same(pathsOf(() => plan({ proposal: proposal(), ttl_seconds: 59, version: 0, meta: [] })), ['/ttl_seconds', '/version', '/meta']);
  t.same(pathsOf(() => plan({ proposal: proposal(), ttl_seconds: 600.5, version: '1', meta: 'x' })), ['/ttl_seconds', '/version', '/meta']);
  t.same(pathsOf(() => plan({ proposal: { edges: [] } })), ['/proposal/service_id']);
  t.same(pathsOf(() => plan({ proposal: { service_id: 1 } })), ['/proposal/edges']);
  t.same(
    pathsOf(() => plan({ proposal: { service_id: 1, edges: [], generated_at: 5, max_unseen_ratio: 2 } })),
    ['/proposal/generated_at', '/proposal/max_unseen_ratio'],
  );
  const problems = problemsOf(() =>
    plan({
      proposal: {
        service_id: 1,
        edges: [
          { dst_cidr: '10.0.0.0/24', proto: 'tcp', port: 1 },
          { dst_cidr: '10.0.0.1/24', proto: 'tcp', port: 1 },
          // icmp is a protocol rules may name; its port (the ICMP type) is at most 255.
          { dst_cidr: '10.0.0.0/33', proto: 'icmp', port: 65536 },
          'x',
          { proto: 'any', port: -1 },
        ],
      },
      allow_cidrs: [{ cidr: '2001:db8::1/64', proto: 'tcp', port: 22 }, { cidr: '0.0.0.0/0' }],
    }),
  );
  t.same(problems.map((p) => p.path), [
    '/allow_cidrs/0/cidr',
    '/allow_cidrs/1/proto',
    '/allow_cidrs/1/port',
    '/proposal/edges/1/dst_cidr',
    '/proposal/edges/2/dst_cidr',
    '/proposal/edges/2/port',
    '/proposal/edges/3',
    '/proposal/edges/4/dst_cidr',
    '/proposal/edges/4/port',
  ]);
  t.match(problems[0]!.message, /host bits.*did you mean 2001:db8::\/64/);
  t.match(problems[3]!.message, /did you mean 10\.0\.0\.0\/24/);
  t.same(pathsOf(() => plan({ proposal: proposal(), allow_cidrs: {} })), ['/allow_cidrs']);
});
