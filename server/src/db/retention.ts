/**
 * Retention of an append-only, time-ordered table (the flow log, the events table): rows
 * older than the window go first, then the oldest rows beyond the row cap. Order is
 * (time column, id), the same key the tables are indexed and paged by, so a cap that falls
 * between rows of the same instant still removes exactly the oldest.
 */
import type { Kysely } from 'kysely';

export interface Retention {
  days: number;
  maxRows: number;
}

/** Drops `table`'s rows with `timeColumn` before `now - days`, then all but the newest `maxRows`. */
export async function pruneByAgeAndRows(db: Kysely<any>, table: string, timeColumn: string, retention: Retention, now: Date): Promise<{ expired: number; over_cap: number }> {
  const cutoff = new Date(now.getTime() - retention.days * 86_400_000).toISOString();
  const expired = await db.deleteFrom(table).where(timeColumn, '<', cutoff).executeTakeFirst();
  let overCap = 0n;
  const edge = await db.selectFrom(table).select([timeColumn, 'id']).orderBy(timeColumn, 'desc').orderBy('id', 'desc').offset(retention.maxRows).limit(1).executeTakeFirst();
  if (edge) {
    const at = String(edge[timeColumn]);
    const id = Number(edge.id);
    const r = await db
      .deleteFrom(table)
      .where((eb) => eb.or([eb(timeColumn, '<', at), eb.and([eb(timeColumn, '=', at), eb('id', '<=', id)])]))
      .executeTakeFirst();
    overCap = r.numDeletedRows;
  }
  return { expired: Number(expired.numDeletedRows), over_cap: Number(overCap) };
}
