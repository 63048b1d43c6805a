/**
 * The advisory model both feeds (OSV, the Debian security tracker) are read into, and its
 * one rule for whether a version is affected. Versions are parsed once, when the feed is
 * read, so that a feed with a version dpkg would refuse is refused whole.
 */
import { compareParsedDebianVersions, parseDebianVersion, type DebianVersion } from '../../../protocol/src/index.js';

export type FeedKind = 'osv' | 'debian-tracker';

/** One OSV range event; `introduced: "0"` (version null) is "from the first version". */
export interface RangeEvent {
  kind: 'introduced' | 'fixed' | 'last_affected' | 'limit';
  text: string;
  version: DebianVersion | null;
}

export interface AffectedEntry {
  /** Release codename (bookworm), never a number. */
  release: string;
  /** Source package name: Debian advisories are about source packages. */
  package: string;
  /** Each range is its events sorted by version; affected when any range says so. */
  ranges: RangeEvent[][];
  /** Exactly listed affected versions. */
  versions: Array<{ text: string; version: DebianVersion }>;
  /** Severity for this release when the feed gives one per release (the tracker's urgency). */
  severity: string | null;
}

export interface Advisory {
  id: string;
  feed: FeedKind;
  aliases: string[];
  /** A CVSS vector where the feed gives one, else an urgency word; null when none. */
  severity: string | null;
  modified: string | null;
  /** When set the advisory was withdrawn and never matches. */
  withdrawn: string | null;
  affected: AffectedEntry[];
}

/** Debian release numbers as OSV names them (`Debian:12`) to the codenames dpkg hosts run. */
export const DEBIAN_CODENAMES: Readonly<Record<string, string>> = {
  '7': 'wheezy',
  '8': 'jessie',
  '9': 'stretch',
  '10': 'buster',
  '11': 'bullseye',
  '12': 'bookworm',
  '13': 'trixie',
  '14': 'forky',
  '15': 'duke',
};

/** `12`, `12.5` or `bookworm` to `bookworm`; an unknown number stays as it is. */
export function releaseCodename(release: string): string {
  const r = release.trim().toLowerCase();
  const major = /^(\d+)(?:\.\d+)*$/.exec(r);
  if (major) return DEBIAN_CODENAMES[major[1]!] ?? major[1]!;
  return r;
}

export function eventOf(kind: RangeEvent['kind'], text: string): RangeEvent {
  return { kind, text, version: kind === 'introduced' && text === '0' ? null : parseDebianVersion(text) };
}

/** Sorted by version, "0" first, so that the walk in `inRange` sees them in order. */
export function sortEvents(events: RangeEvent[]): RangeEvent[] {
  return [...events].sort((a, b) => {
    if (a.version === null) return b.version === null ? 0 : -1;
    if (b.version === null) return 1;
    return compareParsedDebianVersions(a.version, b.version);
  });
}

/** The OSV evaluation: the state after the last event at or below the version. */
function inRange(events: RangeEvent[], v: DebianVersion): boolean {
  let affected = false;
  for (const e of events) {
    const c = e.version === null ? 1 : compareParsedDebianVersions(v, e.version);
    if (e.kind === 'introduced') {
      if (c >= 0) affected = true;
    } else if (e.kind === 'fixed' || e.kind === 'limit') {
      if (c >= 0) affected = false;
    } else if (c > 0) affected = false;
  }
  return affected;
}

export function isAffected(entry: AffectedEntry, v: DebianVersion): boolean {
  if (entry.versions.some((x) => compareParsedDebianVersions(x.version, v) === 0)) return true;
  return entry.ranges.some((r) => inRange(r, v));
}

/** The lowest fixed version above the installed one, which is what an upgrade must reach. */
export function fixedVersionFor(entry: AffectedEntry, v: DebianVersion): string | null {
  let best: RangeEvent | null = null;
  for (const r of entry.ranges) {
    for (const e of r) {
      if (e.kind !== 'fixed' || e.version === null || compareParsedDebianVersions(e.version, v) <= 0) continue;
      if (best === null || compareParsedDebianVersions(e.version, best.version!) < 0) best = e;
    }
  }
  return best?.text ?? null;
}
