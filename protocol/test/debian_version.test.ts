/**
 * Debian version order against dpkg itself. A set of generated versions (epochs, `~`, `+`,
 * `.`, letters, leading zeros, long revisions, and near-twins of each) is sorted with our
 * comparison; dpkg --compare-versions then checks every adjacent pair, lt or eq. As dpkg's
 * order is a total preorder, agreeing on the sorted chain (with the same equal runs) means
 * agreeing on every one of the n(n-1)/2 pairs of the set. 10,000 further random pairs are
 * checked directly against Dpkg::Version, the Perl copy of dpkg's algorithm shipped in
 * dpkg's own source, in one process.
 */
import t from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compareDebianVersions, parseDebianVersion, DebianVersionError } from '../src/index.js';

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let x = s;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}
const rand = rng(0x5eed);
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
const int = (n: number) => Math.floor(rand() * n);

const DIGITS = () => pick(['0', '00', '1', '01', '007', '2', '9', '10', '12', '099', '100', String(int(100000)), '4294967296', '18446744073709551617']);
const LETTERS = () => pick(['a', 'b', 'z', 'A', 'Z', 'rc', 'dfsg', 'beta', 'deb', 'ubuntu', 'git', 'ds']);
const SEPS = ['.', '+', '~', '.', '~~', '+~', '.~'];

function part(withHyphen: boolean, withColon: boolean): string {
  let s = DIGITS();
  const n = int(6);
  for (let i = 0; i < n; i++) {
    const r = rand();
    if (r < 0.35) s += pick(SEPS) + DIGITS();
    else if (r < 0.6) s += LETTERS();
    else if (r < 0.75) s += pick(SEPS) + LETTERS();
    else if (r < 0.85) s += DIGITS();
    else if (r < 0.92 && withHyphen) s += '-' + DIGITS();
    else if (withColon) s += ':' + DIGITS();
    else s += '~';
  }
  return s;
}

function revision(): string {
  if (rand() < 0.1) return Array.from({ length: 8 + int(30) }, () => pick(['1', '+b1', '.', 'deb12u', '~', 'a', '0', '+', '12'])).join('');
  return part(false, false).replace(/:/g, '.');
}

function version(): string {
  const epoch = rand() < 0.3 ? pick(['0', '1', '2', '00', '10', '1']) + ':' : '';
  const hasRev = rand() < 0.7;
  const up = part(hasRev, epoch !== '');
  return `${epoch}${up}${hasRev ? '-' + revision() : ''}`;
}

/** Near-twins: what a real fix or backport looks like next to the vulnerable version. */
function twin(v: string): string {
  return pick([
    (s: string) => s + '~',
    (s: string) => s + '+b1',
    (s: string) => s + '.0',
    (s: string) => s + '-0',
    (s: string) => (s.includes(':') ? s : '0:' + s),
    (s: string) => s.replace(/(\d)/, '0$1'),
    (s: string) => s.replace(/\d(?!.*\d)/, (d) => String((Number(d) + 1) % 10)),
    (s: string) => s.replace(/~/, ''),
    (s: string) => s + 'a',
    (s: string) => s.replace(/\./, '~'),
  ])(v);
}

const valid = (v: string) => {
  try {
    parseDebianVersion(v);
    return true;
  } catch {
    return false;
  }
};

t.test('the order of 1,200 generated versions is dpkg --compare-versions order', async (t) => {
  const base = Array.from({ length: 600 }, version);
  const set = [...new Set([...base, ...base.map(twin)].filter(valid))];
  t.ok(set.length >= 1100, `${set.length} distinct versions`);
  const sorted = [...set].sort(compareDebianVersions);
  const dir = mkdtempSync(join(tmpdir(), 'aegis-dpkgver-'));
  try {
    const pairs = sorted.slice(1).map((b, i) => `${sorted[i]} ${b}`).join('\n') + '\n';
    writeFileSync(join(dir, 'pairs'), pairs);
    const out = execFileSync(
      'sh',
      ['-c', 'while read a b; do if dpkg --compare-versions "$a" lt "$b" 2>/dev/null; then echo lt; elif dpkg --compare-versions "$a" eq "$b" 2>/dev/null; then echo eq; else echo gt; fi; done < "$1"', 'sh', join(dir, 'pairs')],
      { encoding: 'utf8', maxBuffer: 1 << 24 },
    ).trim().split('\n');
    const wrong: string[] = [];
    let equalRuns = 0;
    sorted.slice(1).forEach((b, i) => {
      const a = sorted[i]!;
      const ours = compareDebianVersions(a, b) === 0 ? 'eq' : 'lt';
      if (ours === 'eq') equalRuns++;
      if (out[i] !== ours) wrong.push(`${a} vs ${b}: dpkg ${out[i]}, ours ${ours}`);
    });
    t.same(wrong, [], `every adjacent pair agrees with dpkg, so all ${(set.length * (set.length - 1)) / 2} pairs do`);
    t.ok(equalRuns > 20, `${equalRuns} equal neighbours (0: epochs, leading zeros, "-0") are covered`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

t.test('10,000 random pairs agree with Dpkg::Version, and with dpkg where those two differ', async (t) => {
  const pairs: Array<[string, string]> = [];
  while (pairs.length < 10_000) {
    const a = version();
    const b = rand() < 0.5 ? twin(a) : version();
    if (valid(a) && valid(b)) pairs.push([a, b]);
  }
  const r = spawnSync('perl', ['-MDpkg::Version=version_compare', '-ne', 'chomp; my ($a, $b) = split / /; print version_compare($a, $b) <=> 0, "\\n"'], {
    input: pairs.map((p) => p.join(' ')).join('\n') + '\n',
    encoding: 'utf8',
    maxBuffer: 1 << 24,
  });
  t.equal(r.status, 0, r.stderr);
  const theirs = r.stdout.trim().split('\n').map(Number);
  t.equal(theirs.length, 10_000);
  // Dpkg::Version compares digit runs as Perl numbers, so past 2^53 it rounds where dpkg's C
  // compares digit by digit; dpkg decides those pairs.
  const differ = pairs.filter(([a, b], i) => compareDebianVersions(a, b) !== theirs[i]);
  const wrong = differ.filter(([a, b]) => {
    const dpkg = (op: string) => spawnSync('dpkg', ['--compare-versions', a, op, b]).status === 0;
    const truth = dpkg('lt') ? -1 : dpkg('eq') ? 0 : 1;
    return truth !== compareDebianVersions(a, b);
  });
  t.ok(differ.every(([a, b]) => /\d{16}/.test(a + ' ' + b)), 'Dpkg::Version differs only on digit runs past 2^53');
  t.same(wrong.map(([a, b]) => `${a} ${b}`), [], `no pair differs from dpkg (${differ.length} asked of dpkg itself)`);
});

t.test('what dpkg refuses is refused, what it only warns about is compared', async (t) => {
  // dpkg's command line reads "" as "no version" and a leading "-" as an option, so those
  // two shapes are not asked; the parser refuses both (an empty upstream, a negative epoch).
  t.throws(() => parseDebianVersion(''), DebianVersionError);
  t.throws(() => parseDebianVersion('-1:1'), DebianVersionError);
  const cases = ['   ', '1:', ':1', 'a:1', '1.0-', '1 2', '99999999999:1', '2147483648:1', '2147483647:1', '1:-1', 'a1.0', '1.0_x', '1:2:3', '1-2-3', ' 1.0 ', '+1:2', '1.0-a_b'];
  for (const v of cases) {
    const r = spawnSync('dpkg', ['--compare-versions', v, 'eq', v], { encoding: 'utf8' });
    const dpkgRefuses = r.status !== 0;
    let oursRefuses = false;
    try {
      parseDebianVersion(v);
    } catch (err) {
      t.ok(err instanceof DebianVersionError, 'a DebianVersionError');
      oursRefuses = true;
    }
    t.equal(oursRefuses, dpkgRefuses, `${JSON.stringify(v)}: dpkg ${dpkgRefuses ? 'refuses' : 'accepts'} (${r.stderr.trim().split('\n')[0] ?? ''})`);
  }
});

t.test('the Policy examples', async (t) => {
  t.equal(compareDebianVersions('1.0~rc1', '1.0'), -1, '~ sorts before the end');
  t.equal(compareDebianVersions('1.0~~', '1.0~'), -1);
  t.equal(compareDebianVersions('1.0', '1.0-0'), 0, 'no revision equals revision 0');
  t.equal(compareDebianVersions('1:1.0', '2.0'), 1, 'the epoch wins');
  t.equal(compareDebianVersions('0:1.0', '1.0'), 0, 'no epoch is epoch 0');
  t.equal(compareDebianVersions('1.0a', '1.0+'), -1, 'letters before non-letters');
  t.equal(compareDebianVersions('1.010', '1.9'), 1, 'digits numerically');
  t.equal(compareDebianVersions('1.2-3+b1', '1.2-3'), 1, 'a binNMU is newer than its source version');
});
