import t from 'tap';
import { parseCidr, CidrError } from '../src/index.js';
import { parseCidrGeneral } from '../src/cidr.js';

t.test('parses v4 and v6 and reports host bits', async (t) => {
  t.same(parseCidr('10.0.0.0/8').canonical, '10.0.0.0/8');
  t.equal(parseCidr('10.0.0.1/8').hostBitsSet, true);
  t.equal(parseCidr('10.1.2.3').prefixLen, 32);
  t.equal(parseCidr('0.0.0.0/0').canonical, '0.0.0.0/0');
  t.equal(parseCidr('2001:db8::/32').canonical, '2001:db8::/32');
  t.equal(parseCidr('2001:db8::1/32').hostBitsSet, true);
  t.equal(parseCidr('::1').canonical, '::1/128');
  t.equal(parseCidr('::ffff:10.0.0.1/128').canonical, '::ffff:a00:1/128');
  for (const bad of ['10.0.0.0/33', '10.0.0/8', 'banana', '::/129', '10.0.0.0/-1', '10.0.0.0/ 8', '']) {
    t.throws(() => parseCidr(bad), CidrError, bad);
  }
});

t.test('the IPv4 fast path answers exactly as the general parser, for every kind of text', async (t) => {
  // Deterministic corpus: well-formed CIDRs with host bits, lengths 0..40, leading zeros,
  // octets over 255, too few or many parts, stray characters, bare addresses, IPv6.
  let seed = 7;
  const rnd = (n: number) => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed % n;
  };
  const octets = ['0', '1', '9', '10', '99', '100', '199', '200', '249', '250', '255', '256', '300', '999', '00', '01', '007', '1000', '', 'a', '-1', ' 1'];
  const lens = ['0', '1', '8', '24', '27', '31', '32', '33', '40', '00', '08', '032', '0032', '', '-1', 'x', ' 8', '8 '];
  const corpus = ['10.0.0.0/8', '0.0.0.0/0', '255.255.255.255/32', '10.1.2.3', '10.0.0.0/', '/8', '10.0.0.0//8', '10.0.0.0/8/8', '1.2.3.4.5/32', '::ffff:10.0.0.1/128', '2001:db8::/32', '１.2.3.4/8'];
  for (let i = 0; i < 20000; i++) {
    const parts = Array.from({ length: 3 + rnd(3) }, () => octets[rnd(octets.length)]!);
    const sep = rnd(10) === 0 ? ',' : '.';
    corpus.push(`${parts.join(sep)}${rnd(8) === 0 ? '' : `/${lens[rnd(lens.length)]}`}`);
  }
  let checked = 0;
  for (const text of corpus) {
    let fast: unknown;
    let general: unknown;
    const view = (c: ReturnType<typeof parseCidr>) => ({ family: c.family, addr: Array.from(c.addr), prefixLen: c.prefixLen, hostBitsSet: c.hostBitsSet, canonical: c.canonical });
    try {
      fast = view(parseCidr(text));
    } catch (e) {
      fast = { error: (e as Error).message };
    }
    try {
      general = view(parseCidrGeneral(text));
    } catch (e) {
      general = { error: (e as Error).message };
    }
    if (JSON.stringify(fast) !== JSON.stringify(general)) t.fail(`${JSON.stringify(text)}: ${JSON.stringify(fast)} vs ${JSON.stringify(general)}`);
    checked++;
  }
  t.equal(checked, corpus.length, `${checked} texts agree`);
  t.equal(parseCidr('10.0.0.1/8').canonical, '10.0.0.0/8', 'host bits masked in the canonical form');
  t.equal(parseCidr('10.0.0.0/08').canonical, '10.0.0.0/8', 'a leading zero in the length is not canonical');
  t.same(Array.from(parseCidr('192.168.1.0/24').addr), [192, 168, 1, 0]);
});
