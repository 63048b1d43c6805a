/**
 * Matching cost: a generated 100,000-advisory feed against 1,000 generated inventories,
 * reported as ratios to a baseline measured in the same run (a plain Map lookup of every
 * installed source package, the least any matcher must do), plus the marginal cost of one
 * more host and of one more advisory. Run by run.ts.
 */
import { performance } from 'node:perf_hooks';
import type { InstalledPackage } from '../../protocol/src/index.js';
import { eventOf, sortEvents, type Advisory } from '../../server/src/intel/advisory.js';
import { AdvisoryIndex } from '../../server/src/intel/matcher.js';

const SOURCES = 20_000;
const PACKAGES_PER_HOST = 800;

let seed = 42;
const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 4294967296);
const int = (n: number) => Math.floor(rand() * n);
const ver = () => `${int(3) ? '' : `${1 + int(2)}:`}${int(20)}.${int(20)}.${int(50)}-${1 + int(5)}${int(4) ? '' : `+deb12u${1 + int(3)}`}`;
const RELEASES = ['bookworm', 'bookworm', 'bookworm', 'bullseye', 'trixie'];

function advisory(i: number): Advisory {
  const pkg = `src${int(SOURCES)}`;
  const open = int(10) === 0;
  return {
    id: `CVE-2099-${i}`,
    feed: 'osv',
    aliases: [],
    severity: null,
    modified: null,
    withdrawn: int(100) === 0 ? '2026-01-01T00:00:00Z' : null,
    affected: [{ release: RELEASES[int(RELEASES.length)]!, package: pkg, ranges: [sortEvents(open ? [eventOf('introduced', '0')] : [eventOf('introduced', '0'), eventOf('fixed', ver())])], versions: [], severity: null }],
  };
}

function host(): InstalledPackage[] {
  return Array.from({ length: PACKAGES_PER_HOST }, () => {
    const s = int(SOURCES);
    const v = ver();
    return { package: `bin${s}`, version: v, architecture: 'amd64', source: `src${s}`, source_version: v };
  });
}

function time(f: () => void, rounds = 3): number {
  let best = Infinity;
  for (let i = 0; i < rounds; i++) {
    const t0 = performance.now();
    f();
    best = Math.min(best, performance.now() - t0);
  }
  return best;
}

export function runMatching(advisoryCount: number, hostCount: number): string[] {
  const advisories = Array.from({ length: advisoryCount }, (_, i) => advisory(i));
  const hosts = Array.from({ length: hostCount }, host);

  let index!: AdvisoryIndex;
  const buildMs = time(() => (index = new AdvisoryIndex(advisories)));

  // Baseline: the same advisories in a Map by (release, source), one lookup per installed package.
  const plain = new Map<string, number>();
  for (const a of advisories) for (const e of a.affected) plain.set(`${e.release}\u0000${e.package}`, (plain.get(`${e.release}\u0000${e.package}`) ?? 0) + 1);
  let sink = 0;
  const baselineMs = time(() => {
    for (const h of hosts) for (const p of h) sink += plain.get(`bookworm\u0000${p.source}`) ?? 0;
  });

  let findings = 0;
  const matchMs = time(() => {
    findings = 0;
    for (const h of hosts) findings += index.match('bookworm', h).length;
  });

  // One more host: the average over 200 fresh hosts.
  const extra = Array.from({ length: 200 }, host);
  const perHostMs = time(() => {
    for (const h of extra) index.match('bookworm', h);
  }) / extra.length;

  // One more advisory: build and match with 1,000 more, per advisory.
  const more = [...advisories, ...Array.from({ length: 1000 }, (_, i) => advisory(advisoryCount + i))];
  let bigger!: AdvisoryIndex;
  const buildMoreMs = time(() => (bigger = new AdvisoryIndex(more)));
  const matchMoreMs = time(() => {
    for (const h of hosts) bigger.match('bookworm', h);
  });

  const r = (x: number) => x.toFixed(2);
  return [
    `advisories ${advisoryCount}, hosts ${hostCount} x ${PACKAGES_PER_HOST} packages, ${findings} findings (sink ${sink})`,
    `index build            ${r(buildMs)} ms`,
    `baseline (Map lookups) ${r(baselineMs)} ms`,
    `match all hosts        ${r(matchMs)} ms  = ${r(matchMs / baselineMs)}x baseline, ${r((matchMs / hostCount / PACKAGES_PER_HOST) * 1e6)} ns per installed package`,
    `one more host          ${r(perHostMs)} ms  = ${r(perHostMs / (baselineMs / hostCount))}x one host's baseline`,
    `one more advisory      build +${r(((buildMoreMs - buildMs) / 1000) * 1000)} us, match (all hosts) +${r(((matchMoreMs - matchMs) / 1000) * 1000)} us`,
    '',
    ];
}
