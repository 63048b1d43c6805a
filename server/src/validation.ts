/**
 * Request validation with ajv: one compiled validator per schema, and failures turned
 * into a ValidationError that names every failing field (JSON Pointer paths).
 */
import { Ajv, type ErrorObject, type SchemaObject } from 'ajv';
import { ValidationError, type FieldProblem } from '../../protocol/src/index.js';

const ajv = new Ajv({ allErrors: true, strict: false, coerceTypes: false, useDefaults: false });

function problemOf(e: ErrorObject): FieldProblem {
  const base = e.instancePath || '';
  if (e.keyword === 'required') {
    return { path: `${base}/${(e.params as { missingProperty: string }).missingProperty}`, message: 'is required' };
  }
  if (e.keyword === 'additionalProperties') {
    return { path: `${base}/${(e.params as { additionalProperty: string }).additionalProperty}`, message: 'is not a known field' };
  }
  return { path: base || '/', message: e.message ?? 'is invalid' };
}

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

/** Compiles a schema into a function that returns the value typed, or throws ValidationError. */
export function validator<T>(schema: SchemaObject): (value: unknown) => T {
  const validate = ajv.compile(schema);
  return (value: unknown): T => {
    if (value === null || value === undefined) {
      throw new ValidationError([{ path: '/', message: 'a JSON object body is required' }]);
    }
    if (!validate(value)) throw new ValidationError(problemsOf(validate.errors));
    return value as T;
  };
}

export { ajv };
