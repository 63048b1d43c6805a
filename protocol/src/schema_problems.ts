/**
 * JSON Schema (ajv) failures as FieldProblems: one conversion, so every validator in Aegis
 * names a failing field the same way (JSON Pointer paths such as `/edges/0/port`).
 */
import type { ErrorObject } from 'ajv';
import type { FieldProblem } from './errors.js';

function problemOf(e: ErrorObject): FieldProblem {
  const base = e.instancePath || '';
  // A missing or unknown property is named by its own path, not by its parent's.
  if (e.keyword === 'required') {
    return { path: `${base}/${(e.params as { missingProperty: string }).missingProperty}`, message: 'is required' };
  }
  if (e.keyword === 'additionalProperties') {
    return { path: `${base}/${(e.params as { additionalProperty: string }).additionalProperty}`, message: 'is not a known field' };
  }
  return { path: base || '/', message: e.message ?? 'is invalid' };
}

/** Converts ajv's errors to FieldProblems (JSON Pointer paths), dropping repeats. */
export function problemsOf(errors: ErrorObject[] | null | undefined): FieldProblem[] {
  const seen = new Set<string>();
  const out: FieldProblem[] = [];
  for (const e of errors ?? []) {
    const p = problemOf(e);
    const k = `${p.path}\u0000${p.message}`;
    if (!seen.has(k)) {
      seen.add(k);
      out.push(p);
    }
  }
  return out;
}
