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
