/** `?limit=&offset=` parsing shared by every list endpoint. */
import { ValidationError } from '../../protocol/src/index.js';

export const DEFAULT_LIMIT = 50;
export const MAX_LIMIT = 500;

export interface Page {
  limit: number;
  offset: number;
}

export function parsePage(query: URLSearchParams): Page {
  const problems = [];
  const limitText = query.get('limit');
  const offsetText = query.get('offset');
  let limit = DEFAULT_LIMIT;
  let offset = 0;
  if (limitText !== null) {
    if (!/^\d{1,4}$/.test(limitText) || Number(limitText) < 1 || Number(limitText) > MAX_LIMIT) {
      problems.push({ path: 'limit', message: `must be an integer from 1 to ${MAX_LIMIT}` });
    } else limit = Number(limitText);
  }
  if (offsetText !== null) {
    if (!/^\d{1,9}$/.test(offsetText)) problems.push({ path: 'offset', message: 'must be a non-negative integer' });
    else offset = Number(offsetText);
  }
  if (problems.length > 0) throw new ValidationError(problems);
  return { limit, offset };
}

const ISO_MS = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

/**
 * Keyset cursors of newest-first lists ordered by (time, id): the flow log and the events.
 * Opaque to clients (base64url JSON of the last row's position).
 */
export function encodeTimeIdCursor(at: string, id: number): string {
  return Buffer.from(JSON.stringify([at, id])).toString('base64url');
}

/** Reads a cursor this server handed out; anything else is a 400 naming `cursor`. */
export function decodeTimeIdCursor(text: string): { at: string; id: number } {
  const bad = () => new ValidationError([{ path: 'cursor', message: 'is not a cursor this server returned (pass next_cursor unchanged)' }]);
  if (text.length === 0 || text.length > 128 || !/^[A-Za-z0-9_-]+$/.test(text)) throw bad();
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(text, 'base64url').toString('utf8'));
  } catch {
    throw bad();
  }
  if (!Array.isArray(v) || v.length !== 2 || typeof v[0] !== 'string' || !ISO_MS.test(v[0]) || !Number.isSafeInteger(v[1]) || (v[1] as number) < 1) throw bad();
  return { at: v[0], id: v[1] as number };
}
