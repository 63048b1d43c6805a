/**
 * The Debian security tracker's JSON (https://security-tracker.debian.org/tracker/data/json):
 * `{source package: {issue id: {releases: {codename: {status, fixed_version?, urgency?}}}}}`.
 * Each issue becomes one advisory whose affected entries are its packages per release:
 * `resolved` with `fixed_version: "0"` is "never affected" and gives no entry; `resolved`
 * with a version is affected below it; an issue without a fixed version (open,
 * undetermined) affects every version, failing closed.
 */
import { DEBIAN_PACKAGE_NAME, DebianVersionError } from '../../../protocol/src/index.js';
import { eventOf, releaseCodename, type Advisory, type AffectedEntry } from './advisory.js';
import { FeedError } from './feed_error.js';

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const STATUSES = new Set(['resolved', 'open', 'undetermined']);
const ptr = (s: string) => s.replace(/~/g, '~0').replace(/\//g, '~1');

export function looksLikeTracker(doc: unknown): boolean {
  if (!isObject(doc) || typeof doc.id === 'string') return false;
  const first = Object.values(doc)[0];
  return first === undefined || isObject(first);
}

export function parseTracker(doc: unknown, source: string): Advisory[] {
  const fail = (path: string, message: string): never => {
    throw new FeedError('FEED_INVALID', source, `${path}: ${message}`);
  };
  if (!isObject(doc)) return fail('/', 'expected an object of source packages');
  const byIssue = new Map<string, Advisory>();
  for (const [pkg, issues] of Object.entries(doc)) {
    const ppath = `/${ptr(pkg)}`;
    if (!DEBIAN_PACKAGE_NAME.test(pkg)) fail(ppath, 'not a source package name');
    if (!isObject(issues)) fail(ppath, 'expected an object of issues');
    for (const [issue, body] of Object.entries(issues as Record<string, unknown>)) {
      const ipath = `${ppath}/${ptr(issue)}`;
      if (issue.length === 0 || issue.length > 256) fail(ipath, 'issue id is empty or too long');
      if (!isObject(body) || !isObject(body.releases)) fail(`${ipath}/releases`, 'expected an object of releases');
      const advisory = byIssue.get(issue) ?? { id: issue, feed: 'debian-tracker' as const, aliases: [], severity: null, modified: null, withdrawn: null, affected: [] };
      byIssue.set(issue, advisory);
      for (const [codename, rel] of Object.entries((body as { releases: Record<string, unknown> }).releases)) {
        const rpath = `${ipath}/releases/${ptr(codename)}`;
        if (!isObject(rel)) fail(rpath, 'expected an object');
        const r = rel as Record<string, unknown>;
        if (typeof r.status !== 'string' || !STATUSES.has(r.status)) fail(`${rpath}/status`, 'expected resolved, open or undetermined');
        if (r.fixed_version !== undefined && (typeof r.fixed_version !== 'string' || r.fixed_version === '')) fail(`${rpath}/fixed_version`, 'expected a version');
        if (r.urgency !== undefined && typeof r.urgency !== 'string') fail(`${rpath}/urgency`, 'expected a string');
        const fixed = r.fixed_version as string | undefined;
        if (fixed === '0') continue;
        let entry: AffectedEntry;
        try {
          entry = {
            release: releaseCodename(codename),
            package: pkg,
            ranges: [fixed === undefined ? [eventOf('introduced', '0')] : [eventOf('introduced', '0'), eventOf('fixed', fixed)]],
            versions: [],
            severity: (r.urgency as string | undefined) ?? null,
          };
        } catch (err) {
          if (err instanceof DebianVersionError) return fail(`${rpath}/fixed_version`, err.message);
          throw err;
        }
        advisory.affected.push(entry);
      }
    }
  }
  return [...byIssue.values()];
}
