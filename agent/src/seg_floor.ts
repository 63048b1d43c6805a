/**
 * The replay floor for server-signed snapshot messages: per service, the newest
 * (revision, stage, iat) this host has accepted, kept in <state>/seg_floor.json (0600,
 * written atomically) so it survives restarts and outlives the snapshot itself (TTL expiry,
 * withdrawal). A message is obeyed only when it is strictly newer than the floor in
 * (revision, stage with canary < enforce, iat): a recorded canary message of a revision
 * since promoted, or any older revision, is refused as a replay.
 *
 * Only server-signed messages move the floor: a local snapshot (control socket PUT) lives in
 * its own namespace and can neither raise nor lower it.
 */
import type { Stage } from '../../protocol/src/index.js';
import type { StateStore } from './state_store.js';

export const SEG_FLOOR_FILE = 'seg_floor.json';

export interface FloorEntry {
  revision: number;
  stage: Stage;
  iat: number;
}

interface FloorDoc {
  version: 1;
  services: Record<string, FloorEntry>;
}

const STAGE_RANK: Record<Stage, number> = { canary: 0, enforce: 1 };

/** Negative when a is older than b, 0 when equal, positive when newer. */
export function compareFloor(a: FloorEntry, b: FloorEntry): number {
  if (a.revision !== b.revision) return a.revision - b.revision;
  if (a.stage !== b.stage) return STAGE_RANK[a.stage] - STAGE_RANK[b.stage];
  return a.iat - b.iat;
}

function checkDoc(v: unknown): string | null {
  const d = v as Partial<FloorDoc> | null;
  if (!d || typeof d !== 'object' || d.version !== 1 || !d.services || typeof d.services !== 'object') return 'not a floor document';
  for (const [id, e] of Object.entries(d.services)) {
    if (!/^\d+$/.test(id)) return `bad service id ${id}`;
    if (!e || !Number.isInteger(e.revision) || !Number.isInteger(e.iat) || (e.stage !== 'canary' && e.stage !== 'enforce')) return `bad entry for service ${id}`;
  }
  return null;
}

export class SegFloor {
  private readonly entries = new Map<number, FloorEntry>();
  /** Serializes writes so the file always holds the newest floor. */
  private writing: Promise<void> = Promise.resolve();

  /** Loads the saved floor (synchronously: before any message can arrive). */
  constructor(private readonly store: StateStore) {
    const doc = store.read<FloorDoc>(SEG_FLOOR_FILE, checkDoc);
    if (doc) for (const [id, e] of Object.entries(doc.services)) this.entries.set(Number(id), { revision: e.revision, stage: e.stage, iat: e.iat });
  }

  get(id: number): FloorEntry | null {
    return this.entries.get(id) ?? null;
  }

  /**
   * Lifts the floor in memory to what the policy cache holds: a cache written before the
   * floor existed, or an agent stopped between applying a message and saving the floor
   * (the cache then says enforce while the floor still says the canary of that revision).
   * Never lowers it; the next raise() saves it.
   */
  seed(id: number, e: FloorEntry): void {
    const prev = this.entries.get(id);
    if (!prev || compareFloor(e, prev) > 0) this.entries.set(id, e);
  }

  /** Raises the floor for a service (never lowers it) and saves it before returning. */
  async raise(id: number, e: FloorEntry): Promise<void> {
    const prev = this.entries.get(id);
    if (prev && compareFloor(e, prev) <= 0) return;
    this.entries.set(id, { ...e });
    const doc: FloorDoc = { version: 1, services: Object.fromEntries([...this.entries].map(([k, v]) => [String(k), v])) };
    const next = this.writing.then(() => this.store.write(SEG_FLOOR_FILE, doc));
    this.writing = next.catch(() => undefined);
    await next;
  }
}
