/**
 * The usable license in SQL, in one place: not revoked (status `active`) and not past its
 * expiry at `now` (no expiry, or one later than now). It is statusOf() (licenses.ts)
 * answering `active`, for queries that count, list or target usable licenses. Columns are
 * qualified (`licenses.`), so it fits a query on licenses alone or joined with machines.
 */
import { sql, type RawBuilder, type SqlBool } from 'kysely';

/** `now`: an ISO 8601 instant (iso(clock.now())), compared as the stored expires_at text is. */
export function usableLicense(now: string): RawBuilder<SqlBool> {
  const status = sql.ref('licenses.status');
  const expires = sql.ref('licenses.expires_at');
  return sql<SqlBool>`(${status} = ${'active'} and (${expires} is null or ${expires} > ${now}))`;
}
