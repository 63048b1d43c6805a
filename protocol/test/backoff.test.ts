import t from 'tap';
import { backoffDelay } from '../src/index.js';

t.test('full jitter: uniform below min(cap, base·2^n)', async (t) => {
  const policy = { baseMs: 1000, capMs: 30_000 };
  t.equal(backoffDelay(0, policy, () => 0.999999), 999, 'attempt 0 stays under base');
  t.equal(backoffDelay(3, policy, () => 0.5), 4000, 'attempt 3: half of 8 s');
  t.equal(backoffDelay(40, policy, () => 0.5), 15_000, 'capped, even for huge attempt numbers');
  t.equal(backoffDelay(5, policy, () => 0), 0, 'jitter reaches zero');
  for (let i = 0; i < 200; i++) {
    const d = backoffDelay(i % 12, policy);
    t.ok(d >= 0 && d < Math.min(30_000, 1000 * 2 ** (i % 12)), `attempt ${i % 12}: ${d}`);
  }
});
