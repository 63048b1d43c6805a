import t from 'tap';
import { addrBytes, bitLength, bytesToBigint, collapsePrefixes, formatPrefix, unseenRatio, type Family } from './prefix_collapse.js';

const v4 = (s: string): bigint => s.split('.').reduce((n, p) => (n << 8n) | BigInt(Number(p)), 0n);
const show = (family: Family, addrs: bigint[], ratio: number): string[] =>
  collapsePrefixes(addrs, family === 4 ? 32 : 128, ratio).map((p) => formatPrefix(family, p.base, p.prefixLen));

t.test('unseenRatio and bitLength', async (t) => {
  t.equal(unseenRatio(0, 1), 0);
  t.equal(unseenRatio(2, 3), 0.25);
  t.equal(unseenRatio(8, 256), 0);
  t.equal(unseenRatio(128, 1), 1, 'one address in all of IPv6 rounds to 1');
  t.equal(bitLength(0n), 0);
  t.equal(bitLength(1n), 1);
  t.equal(bitLength((1n << 127n) | 5n), 128);
});

t.test('empty input gives no prefixes', async (t) => {
  t.same(collapsePrefixes([], 32, 0.5), []);
});

t.test('exact fill at ratio 0', async (t) => {
  const quad = ['10.0.0.0', '10.0.0.1', '10.0.0.2', '10.0.0.3'].map(v4);
  t.same(show(4, quad, 0), ['10.0.0.0/30']);
  t.same(show(4, quad.slice(0, 3), 0), ['10.0.0.0/31', '10.0.0.2/32']);
  t.same(show(4, [v4('10.0.0.1'), v4('10.0.0.2')], 0), ['10.0.0.1/32', '10.0.0.2/32'], 'not siblings: no merge');
  const full24 = Array.from({ length: 256 }, (_, i) => v4(`192.168.7.${i}`));
  t.same(show(4, full24, 0), ['192.168.7.0/24']);
});

t.test('tightest prefix among equals: a lone address stays a host route', async (t) => {
  t.same(show(4, [v4('10.0.0.9')], 0.5), ['10.0.0.9/32']);
  t.same(show(4, [v4('10.0.0.9')], 1), ['10.0.0.9/32']);
  t.same(show(4, [v4('10.0.0.0'), v4('10.0.0.3')], 0.5), ['10.0.0.0/30'], '2 of 4 at 0.5');
  t.same(show(4, [v4('10.0.0.0'), v4('10.0.0.3')], 0.49), ['10.0.0.0/32', '10.0.0.3/32']);
});

t.test('ratio 1 collapses everything of a family into one prefix', async (t) => {
  t.same(show(4, [v4('1.2.3.4'), v4('200.0.0.1')], 1), ['0.0.0.0/0']);
  t.same(show(6, [1n, 1n << 127n], 1), ['::/0']);
});

t.test('covers the indices it reports', async (t) => {
  const addrs = [v4('10.0.0.0'), v4('10.0.0.1'), v4('10.0.0.2'), v4('10.0.5.5'), v4('11.0.0.0')];
  const out = collapsePrefixes(addrs, 32, 0.25);
  t.same(
    out.map((p) => [p.lo, p.hi, p.prefixLen]),
    [
      [0, 3, 30],
      [3, 4, 32],
      [4, 5, 32],
    ],
  );
});

t.test('bytes and bigints round-trip', async (t) => {
  t.equal(bytesToBigint(Uint8Array.from([10, 0, 0, 1])), 0x0a000001n);
  t.same(Array.from(addrBytes(4, 0xffffffffn)), [255, 255, 255, 255]);
  const v6 = (0x20010db8n << 96n) | 0xdeadbeefn;
  t.equal(bytesToBigint(addrBytes(6, v6)), v6);
  t.equal(formatPrefix(6, v6, 128), '2001:db8::dead:beef/128');
  t.equal(bytesToBigint(addrBytes(6, (1n << 128n) - 1n)), (1n << 128n) - 1n);
  t.equal(bytesToBigint(Uint8Array.from([1, 2, 3])), 0x010203n, 'other lengths still work');
});
