/**
 * The one check of request text at the edge, before any of it reaches a handler or the
 * database: path parameters, query parameters and every string of a JSON body. PostgreSQL
 * refuses NUL in text (and would answer a 500), SQLite would store it, and a control
 * character in an id or filter is never honest input; so all are refused here as
 * 400 VALIDATION_FAILED naming the field, the same on every backend.
 */
import { ValidationError, type FieldProblem } from '../../../protocol/src/index.js';

/** C0 control characters and DEL: never part of an id, a filter or a query. */
const CONTROL = /[\u0000-\u001f\u007f]/;
/** Longer than any id the server issues or accepts (UUIDs, host ids of 128, service ids). */
export const MAX_PATH_PARAM_CHARS = 256;
/** Longer than any filter value (names and emails included). */
export const MAX_QUERY_VALUE_CHARS = 1024;
/** A body with many bad strings names the first few, not all. */
const MAX_PROBLEMS = 20;

function decoded(raw: string): string | null {
  try {
    return decodeURIComponent(raw);
  } catch {
    return null;
  }
}

function textProblem(field: string, value: string | null, max: number): FieldProblem | null {
  if (value === null) return { path: field, message: 'is not valid percent-encoded UTF-8' };
  if (value.includes('\uFFFD')) return { path: field, message: 'is not valid UTF-8' };
  if (CONTROL.test(value)) return { path: field, message: 'must not contain NUL or other control characters' };
  if (value.length > max) return { path: field, message: `must be at most ${max} characters` };
  return null;
}

/** A path parameter, percent-decoded; throws ValidationError naming it when it is not plain text. */
export function pathParam(name: string, raw: string): string {
  const value = decoded(raw);
  const problem = textProblem(name, value, MAX_PATH_PARAM_CHARS);
  if (problem) throw new ValidationError([problem]);
  return value!;
}

/**
 * Checks a raw query string (without `?`, still percent-encoded) as URLSearchParams will
 * read it: names and values must decode to UTF-8 without control characters.
 * URLSearchParams would quietly turn bad encoding into U+FFFD; this refuses it instead.
 */
export function checkQuery(rawQuery: string): void {
  const problems: FieldProblem[] = [];
  for (const pair of rawQuery.split('&')) {
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    const rawName = (eq < 0 ? pair : pair.slice(0, eq)).replace(/\+/g, ' ');
    const rawValue = (eq < 0 ? '' : pair.slice(eq + 1)).replace(/\+/g, ' ');
    const name = decoded(rawName);
    const field = name ?? rawName;
    const problem = textProblem(field, name, MAX_QUERY_VALUE_CHARS) ?? textProblem(field, decoded(rawValue), MAX_QUERY_VALUE_CHARS);
    if (problem) problems.push(problem);
    if (problems.length >= MAX_PROBLEMS) break;
  }
  if (problems.length > 0) throw new ValidationError(problems);
}

function pointer(parent: string, key: string | number): string {
  return `${parent}/${String(key).replace(/~/g, '~0').replace(/\//g, '~1')}`;
}

/**
 * Refuses NUL in any string or object key of a parsed JSON body, naming each by JSON
 * pointer. Other control characters stay allowed in bodies (a reason may hold a newline);
 * the schemas of id fields constrain them further. Walks without recursion, so a deeply
 * nested body cannot exhaust the stack.
 */
export function checkBodyText(body: unknown): void {
  const problems: FieldProblem[] = [];
  const stack: Array<{ value: unknown; path: string }> = [{ value: body, path: '' }];
  while (stack.length > 0 && problems.length < MAX_PROBLEMS) {
    const { value, path } = stack.pop()!;
    if (typeof value === 'string') {
      if (value.includes('\u0000')) problems.push({ path: path || '/', message: 'must not contain NUL characters' });
    } else if (Array.isArray(value)) {
      for (let i = value.length - 1; i >= 0; i--) stack.push({ value: value[i], path: pointer(path, i) });
    } else if (value !== null && typeof value === 'object') {
      const entries = Object.entries(value as Record<string, unknown>);
      for (let i = entries.length - 1; i >= 0; i--) {
        const [key, child] = entries[i]!;
        const at = pointer(path, key);
        if (key.includes('\u0000')) problems.push({ path: at, message: 'a member name must not contain NUL characters' });
        else stack.push({ value: child, path: at });
      }
    }
  }
  if (problems.length > 0) throw new ValidationError(problems);
}
