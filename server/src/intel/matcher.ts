/**
 * Matches an installed-package inventory against advisories: by the binary's SOURCE
 * package and source version, in the host's release only; withdrawn advisories never
 * match. The index is built once per advisory set and reused for every host.
 */
import { parseDebianVersion, type InstalledPackage } from '../../../protocol/src/index.js';
import { fixedVersionFor, isAffected, releaseCodename, type Advisory, type AffectedEntry } from './advisory.js';

export interface Finding {
  package: string;
  version: string;
  source: string;
  source_version: string;
  advisory: string;
  aliases: string[];
  fixed_version: string | null;
  severity: string | null;
}

export class AdvisoryIndex {
  private readonly byKey = new Map<string, Array<{ advisory: Advisory; entry: AffectedEntry }>>();

  constructor(advisories: Iterable<Advisory>) {
    for (const advisory of advisories) {
      if (advisory.withdrawn !== null) continue;
      for (const entry of advisory.affected) {
        const key = `${entry.release}\u0000${entry.package}`;
        let list = this.byKey.get(key);
        if (!list) this.byKey.set(key, (list = []));
        list.push({ advisory, entry });
      }
    }
  }

  match(release: string, packages: readonly InstalledPackage[]): Finding[] {
    const codename = releaseCodename(release);
    const out: Finding[] = [];
    for (const p of packages) {
      const list = this.byKey.get(`${codename}\u0000${p.source}`);
      if (!list) continue;
      const v = parseDebianVersion(p.source_version);
      for (const { advisory, entry } of list) {
        if (!isAffected(entry, v)) continue;
        out.push({
          package: p.package,
          version: p.version,
          source: p.source,
          source_version: p.source_version,
          advisory: advisory.id,
          aliases: advisory.aliases,
          fixed_version: fixedVersionFor(entry, v),
          severity: entry.severity ?? advisory.severity,
        });
      }
    }
    return out;
  }
}
