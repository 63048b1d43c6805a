/** bench/cluster's helpers: nearest-rank percentiles, ratios against a baseline, one figure layout. */
import t from 'tap';
import { line, pct, ratio } from '../../bench/cluster/common.js';

t.test('pct is nearest rank and leaves its input alone', async (t) => {
  const xs = [5, 1, 4, 2, 3, 10, 9, 8, 7, 6];
  t.equal(pct(xs, 50), 6);
  t.equal(pct(xs, 99), 10);
  t.equal(pct(xs, 0), 1);
  t.same(xs, [5, 1, 4, 2, 3, 10, 9, 8, 7, 6], 'not sorted in place');
});

t.test('ratio against a baseline; n/a when the baseline is zero or not a number', async (t) => {
  t.equal(ratio(3, 2), '1.500x');
  t.equal(ratio(1, 0), 'n/a');
  t.equal(ratio(NaN, 1), 'n/a');
});

t.test('every figure line has its kind and its value in the same columns', async (t) => {
  const rows: Array<[Parameters<typeof line>[0], string, string]> = [['baseline', 'raw', '1 op/s'], ['measured', 'served', '2 req/s'], ['ratio', 'served / raw', '2.000x']];
  const lines = rows.map(([k, w, v]) => line(k, w, v));
  t.same(lines.map((l) => l.slice(2, 11).trim()), ['baseline', 'measured', 'ratio']);
  t.same(new Set(lines.map((l, i) => l.length - rows[i]![2].length)).size, 1, 'values start in one column');
});
