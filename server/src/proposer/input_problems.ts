/**
 * Collects the problems found in a request body and throws them as one ValidationError
 * with JSON Pointer paths. Capped so a 100,000-flow body full of mistakes yields a
 * readable error, not a megabyte of them.
 */
import { ValidationError, type FieldProblem } from '../../../protocol/src/index.js';

export const MAX_REPORTED_PROBLEMS = 100;

export class InputProblems {
  readonly #list: FieldProblem[] = [];
  #omitted = 0;

  add(path: string, message: string): void {
    if (this.#list.length < MAX_REPORTED_PROBLEMS) this.#list.push({ path: path || '/', message });
    else this.#omitted++;
  }

  get count(): number {
    return this.#list.length + this.#omitted;
  }

  throwIfAny(): void {
    if (this.count === 0) return;
    const problems = [...this.#list];
    if (this.#omitted > 0) problems.push({ path: '/', message: `${this.#omitted} more problems not listed` });
    throw new ValidationError(problems);
  }
}

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function isIntegerIn(v: unknown, min: number, max: number): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max;
}

export function describe(v: unknown): string {
  if (v === undefined) return 'nothing';
  let text: string;
  try {
    text = JSON.stringify(v) ?? String(v);
  } catch {
    text = String(v);
  }
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}
