/**
 * The dpkg status parser on hostile input: a huge line, binary junk, missing and
 * duplicated fields, broken Source fields. Each bad paragraph is one problem with its
 * number and a stable code; the paragraphs around it are still read; nothing throws.
 */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parseDpkgStatus } from '../src/index.js';

const para = (name: string, extra = '', status = 'install ok installed', version = '1.0-1') =>
  `Package: ${name}\nStatus: ${status}\nArchitecture: amd64\nVersion: ${version}\n${extra}Description: x\n continued\n .\n more\n`;

t.test('a well-formed file: Source with and without version, binNMU, not-installed states', async (t) => {
  const text = [
    para('aa'),
    para('libb1', 'Source: bb (2:1.0-3)\n', 'install ok installed', '2:1.0-3+b1'),
    para('c-bin', 'Source: cc\n'),
    para('gone', '', 'deinstall ok config-files'),
    para('held', '', 'hold ok installed'),
    para('half', '', 'install reinstreq half-installed'),
  ].join('\n');
  const inv = parseDpkgStatus(text);
  t.same(inv.problems, []);
  t.same(
    inv.packages.map((p) => [p.package, p.version, p.source, p.source_version]),
    [
      ['aa', '1.0-1', 'aa', '1.0-1'],
      ['libb1', '2:1.0-3+b1', 'bb', '2:1.0-3'],
      ['c-bin', '1.0-1', 'cc', '1.0-1'],
      ['held', '1.0-1', 'held', '1.0-1'],
    ],
    'a held package is installed; config-files and half-installed are not',
  );
  t.equal(inv.not_installed, 2);
});

t.test('bad paragraphs are reported one by one and do not stop the rest', async (t) => {
  const text = [
    para('first'),
    para('huge', `X-Long: ${'A'.repeat((1 << 20) + 10)}\n`),
    'Status: install ok installed\nVersion: 1.0\nArchitecture: amd64\n',
    para('noversion').replace(/^Version:.*\n/m, ''),
    para('dup', 'Version: 2.0\n'),
    para('badsrc', 'Source: b (1.0\n'),
    para('badver', '', 'install ok installed', '1:'),
    para('Bad_Name'),
    ' orphan continuation\nPackage: x\n',
    'garbage without a colon\n',
    para('last'),
  ].join('\n');
  const inv = parseDpkgStatus(text);
  t.same(inv.packages.map((p) => p.package), ['first', 'last'], 'good paragraphs on both sides are read');
  t.same(
    inv.problems.map((p) => [p.paragraph, p.code]),
    [
      [2, 'LINE_TOO_LONG'],
      [3, 'MISSING_FIELD'],
      [4, 'MISSING_FIELD'],
      [5, 'DUPLICATE_FIELD'],
      [6, 'INVALID_FIELD'],
      [7, 'INVALID_FIELD'],
      [8, 'INVALID_FIELD'],
      [9, 'MALFORMED_LINE'],
      [10, 'MALFORMED_LINE'],
    ],
  );
  t.match(inv.problems[5]!.message, /Version: nothing after colon/);
  t.ok(inv.problems.every((p) => p.message.length < 400), 'messages quote at most a short excerpt of the input');
});

t.test('binary junk and mutated real paragraphs never throw', async (t) => {
  let real = '';
  try {
    real = readFileSync('/var/lib/dpkg/status', 'utf8').slice(0, 200_000);
  } catch {
    real = para('aa') + '\n' + para('bb');
  }
  for (let i = 0; i < 300; i++) {
    const junk = randomBytes(2000).toString('latin1');
    const at = Math.floor(Math.random() * real.length);
    const text = i % 2 ? junk : real.slice(0, at) + junk + real.slice(at);
    const inv = parseDpkgStatus(text);
    t.ok(Array.isArray(inv.packages) && inv.problems.every((p) => p.paragraph > 0 && typeof p.code === 'string'));
  }
  const cap = parseDpkgStatus(Array.from({ length: 50 }, (_, i) => para(`p${i}`)).join('\n'), { maxLineLength: 1000, maxParagraphs: 10 });
  t.equal(cap.packages.length, 10);
  t.equal(cap.problems.at(-1)?.code, 'TOO_MANY_PARAGRAPHS');
});
