/**
 * Request validation with ajv: one compiled validator per schema, and failures turned
 * into a ValidationError that names every failing field (JSON Pointer paths).
 */
import { Ajv, type SchemaObject } from 'ajv';
import { ValidationError, problemsOf } from '../../protocol/src/index.js';

const ajv = new Ajv({ allErrors: true, strict: false, coerceTypes: false, useDefaults: false });

/** A compiled request check, carrying the schema it checks against (the API document publishes it). */
export interface Validator<T> {
  (value: unknown): T;
  readonly schema: SchemaObject;
}

/** Compiles a schema into a function that returns the value typed, or throws ValidationError. */
export function validator<T>(schema: SchemaObject): Validator<T> {
  const validate = ajv.compile(schema);
  const check = (value: unknown): T => {
    if (value === null || value === undefined) {
      throw new ValidationError([{ path: '/', message: 'a JSON object body is required' }]);
    }
    if (!validate(value)) throw new ValidationError(problemsOf(validate.errors));
    return value as T;
  };
  return Object.assign(check, { schema });
}

export { ajv };
