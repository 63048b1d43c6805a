/**
 * Matching on this machine's real /var/lib/dpkg/status. The inventory is first checked
 * against dpkg-query's own view of every installed package (its source:Package and
 * source:Version); then crafted OSV and tracker feeds name real packages so that each
 * rule is decided by a version where matching the binary instead of the source, or
 * another release, or a withdrawn record, would answer differently.
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { compareDebianVersions, parseDpkgStatus, type InstalledPackage } from '../../protocol/src/index.js';
import type { Finding } from '../../server/src/intel/matcher.js';

const STATUS = '/var/lib/dpkg/status';
const CLI = fileURLToPath(new URL('../../server/src/cli.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'aegis-intel-match-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const inventory = parseDpkgStatus(readFileSync(STATUS, 'utf8'));
const find = (what: string, f: (p: InstalledPackage) => boolean): InstalledPackage => {
  const p = inventory.packages.find(f);
  if (!p) throw new Error(`this machine has no installed package that is ${what}`);
  return p;
};

t.test('the inventory is what dpkg-query says is installed', async (t) => {
  const q = execFileSync('dpkg-query', ['-W', '-f', '${db:Status-Status}|${Package}|${Version}|${Architecture}|${source:Package}|${source:Version}\\n'], { encoding: 'utf8' });
  const theirs = q
    .trim()
    .split('\n')
    .filter((l) => l.startsWith('installed|'))
    .map((l) => l.split('|').slice(1).join(' '))
    .sort();
  const ours = inventory.packages.map((p) => [p.package, p.version, p.architecture, p.source, p.source_version].join(' ')).sort();
  t.same(inventory.problems, [], 'the real status file has no problem paragraph');
  t.ok(ours.length > 100, `${ours.length} installed packages`);
  t.same(ours, theirs, 'package, version, architecture, source and source version as dpkg-query derives them');
});

// Packages chosen from the real inventory for the property each case needs.
const binnmu = find('a binNMU (+bN) of a source without epoch', (p) => /\+b\d+$/.test(p.version) && p.source !== p.package && !p.source_version.includes(':') && p.version === `${p.source_version}+b${p.version.split('+b').pop()}`);
const epochBin = find('a binary with an epoch its source lacks', (p) => p.version.includes(':') && !p.source_version.includes(':') && p.version.slice(p.version.indexOf(':') + 1) === p.source_version);
const renamed = find('a binary whose version is not its source version (not a binNMU, no epoch)', (p) => p.version !== p.source_version && !/\+b\d+$/.test(p.version) && !p.version.includes(':') && p.source !== binnmu.source && p.source !== epochBin.source);
const plain = find('a package that is its own source', (p) => p.source === p.package && p.version === p.source_version && ![binnmu.source, epochBin.source, renamed.source].includes(p.source));

const osvRecord = (id: string, ecosystem: string, name: string, ranges: unknown[], extra: Record<string, unknown> = {}) => ({
  id,
  modified: '2026-01-01T00:00:00Z',
  affected: [{ package: { ecosystem, name }, ...(ranges.length ? { ranges } : {}), ...((extra.versions as unknown) ? { versions: extra.versions } : {}) }],
  ...Object.fromEntries(Object.entries(extra).filter(([k]) => k !== 'versions')),
});
const eco = (introduced: string, fixed?: string) => [{ type: 'ECOSYSTEM', events: [{ introduced }, ...(fixed ? [{ fixed }] : [])] }];

function feeds(): string[] {
  // binNMU: fixed exactly at the binary's version. The source version is below it, so the
  // source is affected; comparing the binary's +bN version would call it fixed.
  const osvDir = join(dir, 'osv');
  execFileSync('mkdir', ['-p', osvDir]);
  writeFileSync(join(osvDir, 'DSA-T-1.json'), JSON.stringify(osvRecord('DSA-T-1', 'Debian:12', binnmu.source, eco('0', binnmu.version), { aliases: ['CVE-2099-0001'], severity: [{ type: 'CVSS_V3', score: 'CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H' }] })));
  // A binary with a version unlike its source's, affected by its source version listed exactly.
  writeFileSync(join(osvDir, 'DSA-T-2.json'), JSON.stringify(osvRecord('DSA-T-2', 'Debian:bookworm', renamed.source, [], { versions: [renamed.source_version] })));
  // Another release: every version affected, but in Debian 11 and 13 only.
  writeFileSync(join(osvDir, 'DSA-T-3.json'), JSON.stringify([osvRecord('DSA-T-3', 'Debian:11', plain.source, eco('0')), osvRecord('DSA-T-3b', 'Debian:13', plain.source, eco('0'))]));
  // Withdrawn: would match every version.
  writeFileSync(join(osvDir, 'DSA-T-4.json'), JSON.stringify(osvRecord('DSA-T-4', 'Debian:12', plain.source, eco('0'), { withdrawn: '2026-02-01T00:00:00Z' })));
  // Another ecosystem entirely, same name.
  writeFileSync(join(osvDir, 'PYSEC-T-5.json'), JSON.stringify(osvRecord('PYSEC-T-5', 'PyPI', plain.source, [{ type: 'ECOSYSTEM', events: [{ introduced: '0' }] }])));
  const tracker = {
    // The epoch is the binary's only: its source version is below this fix, the binary's
    // epoch-1 version above it.
    [epochBin.source]: { 'CVE-2099-0002': { releases: { bookworm: { status: 'resolved', fixed_version: `${epochBin.source_version}+deb12u99`, urgency: 'high' } } } },
    [plain.source]: {
      'CVE-2099-0003': { releases: { bookworm: { status: 'resolved', fixed_version: '0', urgency: 'unimportant' } } },
      'CVE-2099-0004': { releases: { bookworm: { status: 'open', urgency: 'medium' }, bullseye: { status: 'open' } } },
      'CVE-2099-0005': { releases: { bullseye: { status: 'open', urgency: 'high' }, trixie: { status: 'resolved', fixed_version: '99:1' } } },
      'CVE-2099-0006': { releases: { bookworm: { status: 'resolved', fixed_version: plain.version } } },
    },
  };
  const trackerFile = join(dir, 'tracker.json');
  writeFileSync(trackerFile, JSON.stringify(tracker));
  return [osvDir, trackerFile];
}

function match(release: string, feedPaths: string[]): Finding[] {
  const args = [CLI, 'intel', 'match', '--dpkg-status', STATUS, '--release', release, '--json', ...feedPaths.flatMap((f) => ['--feed', f])];
  return JSON.parse(execFileSync('node', args, { encoding: 'utf8' })) as Finding[];
}

t.test('findings on the real inventory follow source packages, this release, and withdrawals', async (t) => {
  const paths = feeds();
  const findings = match('bookworm', paths);
  const by = (advisory: string) => findings.filter((f) => f.advisory === advisory);

  const b = by('DSA-T-1').find((f) => f.package === binnmu.package);
  t.ok(b, `binNMU ${binnmu.package} ${binnmu.version} is affected through ${binnmu.source} ${binnmu.source_version}`);
  t.equal(compareDebianVersions(binnmu.source_version, binnmu.version), -1, 'the source version is below the fix, the binary version is the fix');
  t.same(b && { source: b.source, source_version: b.source_version, fixed_version: b.fixed_version, aliases: b.aliases, severity: b.severity }, {
    source: binnmu.source,
    source_version: binnmu.source_version,
    fixed_version: binnmu.version,
    aliases: ['CVE-2099-0001'],
    severity: 'CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H',
  });
  t.ok(by('DSA-T-1').every((f) => f.source === binnmu.source), 'only binaries of that source');

  const e = by('CVE-2099-0002').find((f) => f.package === epochBin.package);
  t.ok(e, `${epochBin.package} ${epochBin.version} is affected: its source ${epochBin.source} ${epochBin.source_version} has no epoch`);
  t.equal(e?.version, epochBin.version, 'the binary version is reported as installed');
  t.equal(e?.severity, 'high', "the tracker's urgency for this release");
  t.equal(e?.fixed_version, `${epochBin.source_version}+deb12u99`);
  t.equal(compareDebianVersions(epochBin.version, `${epochBin.source_version}+deb12u99`), 1, 'matching the binary version would have missed it');

  const r = by('DSA-T-2').find((f) => f.package === renamed.package);
  t.ok(r, `${renamed.package} ${renamed.version} is affected as ${renamed.source} ${renamed.source_version}`);
  t.equal(r?.fixed_version, null, 'a listed version has no fix to name');

  t.same(by('CVE-2099-0003'), [], 'fixed_version "0": never affected');
  const open = by('CVE-2099-0004');
  t.ok(open.some((f) => f.package === plain.package), 'an open issue with no fix affects the installed version');
  t.ok(open.every((f) => f.fixed_version === null && f.severity === 'medium'), 'no fixed version, the bookworm urgency');
  t.equal(open.filter((f) => f.package === plain.package).length, 1, "bullseye's entry adds no second finding");
  t.same(by('CVE-2099-0005'), [], 'entries of other releases never apply');
  t.same([...by('DSA-T-3'), ...by('DSA-T-3b')], [], 'OSV Debian:11 and Debian:13 never apply to bookworm');
  t.same(by('DSA-T-4'), [], 'a withdrawn advisory never matches');
  t.same(by('PYSEC-T-5'), [], 'another ecosystem never applies');
  t.same(by('CVE-2099-0006'), [], 'installed at exactly the fixed version: not affected');

  t.same(match('12', paths), findings, '--release 12 is bookworm');
  const bullseye = match('bullseye', paths);
  t.ok(bullseye.some((f) => f.advisory === 'CVE-2099-0005' && f.severity === 'high') && bullseye.some((f) => f.advisory === 'DSA-T-3'), 'the same feeds on bullseye give bullseye findings');
  t.notOk(bullseye.some((f) => ['DSA-T-1', 'DSA-T-2', 'CVE-2099-0002'].includes(f.advisory)), 'and none of bookworm');
});

t.test('the text output names the source, the fix and the severity', async (t) => {
  const out = execFileSync('node', [CLI, 'intel', 'match', '--dpkg-status', STATUS, '--release', 'bookworm', ...feeds().flatMap((f) => ['--feed', f])], { encoding: 'utf8' });
  t.match(out, new RegExp(`^${binnmu.package.replace(/[+.]/g, '\\$&')} \\S+ \\(source ${binnmu.source.replace(/[+.]/g, '\\$&')} \\S+\\): DSA-T-1 \\[CVE-2099-0001\\], fixed in \\S+, severity CVSS:3\\.1/`, 'm'));
  t.match(out, /CVE-2099-0004, no fix, severity medium$/m);
});
