import t from 'tap';
import { parseCidr, CidrError } from '../src/index.js';

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
