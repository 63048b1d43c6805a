/**
 * OSV records (https://ossf.github.io/osv-schema/) for Debian. Fields OSV defines are
 * checked for their types and a record that breaks one is refused with its JSON pointer;
 * fields OSV does not define are tolerated, as the schema lets databases add them.
 * Affected packages of other ecosystems, and ranges other than ECOSYSTEM, are skipped.
 */
import { DebianVersionError } from '../../../protocol/src/index.js';
import { eventOf, releaseCodename, sortEvents, type Advisory, type AffectedEntry, type RangeEvent } from './advisory.js';
import { FeedError } from './feed_error.js';

type Json = unknown;
const isObject = (v: Json): v is Record<string, Json> => typeof v === 'object' && v !== null && !Array.isArray(v);
const MAX_TEXT = 4096;

class Reader {
  constructor(readonly source: string) {}
  fail(path: string, message: string): never {
    throw new FeedError('FEED_INVALID', this.source, `${path || '/'}: ${message}`);
  }
  object(v: Json, path: string): Record<string, Json> {
    if (!isObject(v)) this.fail(path, 'expected an object');
    return v;
  }
  string(v: Json, path: string): string {
    if (typeof v !== 'string' || v.length === 0 || v.length > MAX_TEXT) this.fail(path, `expected a non-empty string of at most ${MAX_TEXT} characters`);
    return v;
  }
  optString(o: Record<string, Json>, key: string, path: string): string | null {
    return o[key] === undefined || o[key] === null ? null : this.string(o[key], `${path}/${key}`);
  }
  array(v: Json, path: string): Json[] {
    if (!Array.isArray(v)) this.fail(path, 'expected an array');
    return v;
  }
  optArray(o: Record<string, Json>, key: string, path: string): Json[] {
    return o[key] === undefined || o[key] === null ? [] : this.array(o[key], `${path}/${key}`);
  }
  version<T>(path: string, f: () => T): T {
    try {
      return f();
    } catch (err) {
      if (err instanceof DebianVersionError) this.fail(path, err.message);
      throw err;
    }
  }
}

/** `Debian:12`, `Debian:bookworm` to the codename; null for other ecosystems and a bare `Debian`. */
export function debianReleaseOf(ecosystem: string): string | null {
  const m = /^Debian:(.+)$/.exec(ecosystem);
  return m ? releaseCodename(m[1]!) : null;
}

/** The highest CVSS vector (V4 over V3 over V2), else a `database_specific.urgency`. */
function severityOf(r: Reader, rec: Record<string, Json>): string | null {
  let best: { rank: number; score: string } | null = null;
  r.optArray(rec, 'severity', '').forEach((s, i) => {
    const o = r.object(s, `/severity/${i}`);
    const type = r.string(o.type, `/severity/${i}/type`);
    const score = r.string(o.score, `/severity/${i}/score`);
    const rank = { CVSS_V4: 4, CVSS_V3: 3, CVSS_V2: 2 }[type] ?? 1;
    if (best === null || rank > best.rank) best = { rank, score };
  });
  if (best) return (best as { score: string }).score;
  const db = rec.database_specific;
  if (isObject(db) && typeof db.urgency === 'string') return r.string(db.urgency, '/database_specific/urgency');
  return null;
}

export function parseOsvRecord(value: Json, source: string): Advisory {
  const r = new Reader(source);
  const rec = r.object(value, '');
  const id = r.string(rec.id, '/id');
  const modified = r.string(rec.modified, '/modified');
  const withdrawn = r.optString(rec, 'withdrawn', '');
  const aliases = r.optArray(rec, 'aliases', '').map((a, i) => r.string(a, `/aliases/${i}`));
  const severity = severityOf(r, rec);
  const hasVector = Array.isArray(rec.severity) && rec.severity.length > 0;
  const affected: AffectedEntry[] = [];
  r.optArray(rec, 'affected', '').forEach((a, i) => {
    const path = `/affected/${i}`;
    const entry = r.object(a, path);
    const pkg = r.object(entry.package, `${path}/package`);
    const ecosystem = r.string(pkg.ecosystem, `${path}/package/ecosystem`);
    const name = r.string(pkg.name, `${path}/package/name`);
    const ranges = r.optArray(entry, 'ranges', path);
    const versions = r.optArray(entry, 'versions', path).map((v, j) => r.string(v, `${path}/versions/${j}`));
    const release = debianReleaseOf(ecosystem);
    if (release === null) return;
    const parsed: RangeEvent[][] = [];
    ranges.forEach((rg, j) => {
      const rpath = `${path}/ranges/${j}`;
      const range = r.object(rg, rpath);
      const type = r.string(range.type, `${rpath}/type`);
      const events = r.array(range.events, `${rpath}/events`).map((ev, k) => {
        const epath = `${rpath}/events/${k}`;
        const e = r.object(ev, epath);
        const kinds = (['introduced', 'fixed', 'last_affected', 'limit'] as const).filter((kd) => e[kd] !== undefined);
        if (kinds.length !== 1) r.fail(epath, 'an event has exactly one of introduced, fixed, last_affected, limit');
        const kind = kinds[0]!;
        const text = r.string(e[kind], `${epath}/${kind}`);
        return type === 'ECOSYSTEM' ? r.version(`${epath}/${kind}`, () => eventOf(kind, text)) : null;
      });
      if (type === 'ECOSYSTEM') parsed.push(sortEvents(events as RangeEvent[]));
    });
    affected.push({
      release,
      package: name,
      ranges: parsed,
      versions: versions.map((v, j) => ({ text: v, version: r.version(`${path}/versions/${j}`, () => eventOf('fixed', v).version!) })),
      // A per-package urgency stands in only where the record has no CVSS vector.
      severity: !hasVector && isObject(entry.database_specific) && typeof entry.database_specific.urgency === 'string' ? entry.database_specific.urgency : null,
    });
  });
  return { id, feed: 'osv', aliases, severity, modified, withdrawn, affected };
}
