/**
 * Importing feeds into the database: a file, a directory, an archive or a URL is read
 * whole (and refused whole) before one transaction writes it; a URL is fetched with the
 * validators of its last successful fetch, so an unchanged feed costs a 304. The
 * refresher imports a configured URL list on an interval (AEGIS_INTEL_FEEDS,
 * AEGIS_INTEL_REFRESH_SECONDS); it is off unless configured, and files work offline.
 */
import type { Logger } from '../logger.js';
import type { Advisory } from './advisory.js';
import { FeedError } from './feed_error.js';
import { DEFAULT_FEED_LIMITS, fetchFeed, loadFeedBytes, loadFeedPath, type FeedLimits } from './feed_loader.js';
import { isUrl } from './intel_cli.js';
import type { ImportSummary, IntelStore } from './intel_store.js';

export type ImportOutcome = ImportSummary | { source: string; not_modified: true };

export async function importFeed(store: IntelStore, target: string, limits: FeedLimits = DEFAULT_FEED_LIMITS): Promise<ImportOutcome> {
  if (!isUrl(target)) return store.importAdvisories(loadFeedPath(target, limits), target);
  const prev = await store.feedState(target);
  let advisories: Advisory[];
  let validators: { etag: string | null; lastModified: string | null };
  try {
    const got = await fetchFeed(target, prev ?? {}, limits.maxFeedBytes);
    if (got.notModified) {
      await store.recordFeedState(target, { error: null });
      return { source: target, not_modified: true };
    }
    advisories = loadFeedBytes(got.bytes, target, limits);
    validators = { etag: got.etag, lastModified: got.lastModified };
  } catch (err) {
    // The validators stay those of the last good import, so a refused body is fetched again.
    if (err instanceof FeedError) await store.recordFeedState(target, { error: err.message });
    throw err;
  }
  const summary = await store.importAdvisories(advisories, target);
  await store.recordFeedState(target, { ...validators, error: null });
  return summary;
}

export function formatImport(o: ImportOutcome): string {
  if ('not_modified' in o) return `${o.source}: not modified since the last import\n`;
  return `${o.source}: ${o.read} advisories read: ${o.inserted} new, ${o.updated} updated, ${o.unchanged} unchanged (${o.withdrawn} withdrawn); ${o.machines_rematched} machines rematched, ${o.findings} findings\n`;
}

/** Imports each configured URL every `intervalSeconds`, one at a time; a failure is logged and retried next round. */
export class FeedRefresher {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private stopped = false;

  constructor(
    private readonly store: IntelStore,
    private readonly urls: readonly string[],
    private readonly intervalSeconds: number,
    private readonly log: Logger,
    /** Whether this replica refreshes (the singleton lease); others look again every recheckSeconds. */
    private readonly leader: () => boolean = () => true,
    private readonly recheckSeconds = 15,
  ) {}

  start(): void {
    if (this.urls.length === 0 || this.intervalSeconds <= 0) return;
    const tick = () => {
      if (this.stopped) return;
      if (!this.leader()) {
        this.timer = setTimeout(tick, Math.min(this.intervalSeconds, this.recheckSeconds) * 1000);
        return;
      }
      this.running = this.refreshAll().finally(() => {
        this.running = null;
        if (!this.stopped) this.timer = setTimeout(tick, this.intervalSeconds * 1000);
      });
    };
    this.timer = setTimeout(tick, 0);
  }

  async refreshAll(): Promise<void> {
    for (const url of this.urls) {
      if (this.stopped) return;
      try {
        const o = await importFeed(this.store, url);
        this.log.info('intel feed refreshed', { url, ...o });
      } catch (err) {
        this.log.warn('intel feed refresh failed; the stored advisories stay', { url, error: (err as Error).message });
      }
    }
  }

  async close(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
  }
}
