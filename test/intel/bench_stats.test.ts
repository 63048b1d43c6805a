/** bench/intel's helpers: nearest-rank percentiles, ratios against a baseline, options. */
import t from 'tap';
import { option, percentile, ratio } from '../../bench/intel/stats.js';

t.test('percentile is nearest rank and leaves its input alone', async (t) => {
  const values = [5, 1, 4, 2, 3, 10, 9, 8, 7, 6];
  t.equal(percentile(values, 50), 5);
  t.equal(percentile(values, 99), 10);
  t.equal(percentile(values, 0), 1, 'p0 is the smallest');
  t.equal(percentile([42], 99), 42);
  t.ok(Number.isNaN(percentile([], 50)), 'no samples: NaN, not a number made up');
  t.same(values, [5, 1, 4, 2, 3, 10, 9, 8, 7, 6], 'not sorted in place');
  const hundred = Array.from({ length: 100 }, (_, i) => i + 1);
  t.equal(percentile(hundred, 99), 99);
});

t.test('ratio against a baseline; none when the baseline is zero or unknown', async (t) => {
  t.equal(ratio(3, 2), '1.50x');
  t.equal(ratio(1, 0), 'n/a');
  t.equal(ratio(NaN, 1), 'n/a');
});

t.test('option reads --name value and refuses nonsense', async (t) => {
  t.equal(option(['--seconds', '2'], 'seconds', 4), 2);
  t.equal(option([], 'seconds', 4), 4);
  t.throws(() => option(['--seconds', 'x'], 'seconds', 4), /positive number/);
  t.throws(() => option(['--seconds'], 'seconds', 4), /positive number/);
});
