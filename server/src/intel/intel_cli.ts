/**
 * `aegis-server intel match`: an inventory (a dpkg status file) against feeds (files,
 * directories, archives or URLs), with no database and no agent.
 */
import { readFileSync, statSync } from 'node:fs';
import { parseDpkgStatus, type DpkgInventory } from '../../../protocol/src/index.js';
import type { Advisory } from './advisory.js';
import { FeedError } from './feed_error.js';
import { fetchFeed, loadFeedBytes, loadFeedPath } from './feed_loader.js';
import { AdvisoryIndex, type Finding } from './matcher.js';

/** Largest status file read (a large host's is a few MiB). */
export const MAX_DPKG_STATUS_BYTES = 256 << 20;

export function readDpkgStatusFile(path: string): DpkgInventory {
  let size: number;
  try {
    size = statSync(path).size;
  } catch (err) {
    throw new FeedError('FEED_UNREADABLE', path, (err as Error).message);
  }
  if (size > MAX_DPKG_STATUS_BYTES) throw new FeedError('FEED_TOO_LARGE', path, `${size} bytes (at most ${MAX_DPKG_STATUS_BYTES})`);
  return parseDpkgStatus(readFileSync(path, 'utf8'));
}

export const isUrl = (s: string) => /^https?:\/\//i.test(s);

/** Every feed read whole, or the first refusal thrown. */
export async function loadFeeds(feeds: readonly string[]): Promise<Advisory[]> {
  const all: Advisory[] = [];
  for (const f of feeds) {
    if (isUrl(f)) {
      const got = await fetchFeed(f);
      if (!got.notModified) all.push(...loadFeedBytes(got.bytes, f));
    } else all.push(...loadFeedPath(f));
  }
  return all;
}

export interface MatchRun {
  findings: Finding[];
  inventory: DpkgInventory;
}

export async function runMatch(statusFile: string, release: string, feeds: readonly string[]): Promise<MatchRun> {
  const inventory = readDpkgStatusFile(statusFile);
  const index = new AdvisoryIndex(await loadFeeds(feeds));
  return { findings: index.match(release, inventory.packages), inventory };
}

export function formatFindings(findings: readonly Finding[]): string {
  if (findings.length === 0) return 'no findings\n';
  return (
    findings
      .map((f) => {
        const src = f.source === f.package && f.source_version === f.version ? '' : ` (source ${f.source} ${f.source_version})`;
        const aliases = f.aliases.length ? ` [${f.aliases.join(', ')}]` : '';
        const fixed = f.fixed_version ? `fixed in ${f.fixed_version}` : 'no fix';
        return `${f.package} ${f.version}${src}: ${f.advisory}${aliases}, ${fixed}${f.severity ? `, severity ${f.severity}` : ''}`;
      })
      .join('\n') + '\n'
  );
}
