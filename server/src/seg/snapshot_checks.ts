/**
 * MapSnapshot validation beyond the seed's JSON Schema: CIDRs that parse, no host bits
 * (saying which), no duplicate edges, and the datapath's capacity per service.
 */
import { Ajv } from 'ajv';
import {
  MAP_SNAPSHOT_SCHEMA,
  MAX_RULES_PER_SERVICE,
  ValidationError,
  parseCidr,
  type FieldProblem,
  type MapSnapshot,
} from '../../../protocol/src/index.js';
import { problemsOf } from '../validation.js';

const validateSchema = new Ajv({ allErrors: true, strict: false }).compile(MAP_SNAPSHOT_SCHEMA);

/** Validates a MapSnapshot body; throws ValidationError naming every failing path. */
export function checkMapSnapshot(body: unknown, capacity = MAX_RULES_PER_SERVICE): MapSnapshot {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new ValidationError([{ path: '/', message: 'a MapSnapshot JSON object is required' }]);
  }
  if (!validateSchema(body)) throw new ValidationError(problemsOf(validateSchema.errors));
  const snap = body as MapSnapshot;
  const problems: FieldProblem[] = [];
  let rules = 0;
  const lists = [
    { name: 'edges', items: (snap.edges ?? []).map((e) => ({ cidr: e.dst_cidr, proto: e.proto, port: e.port, field: 'dst_cidr' })) },
    { name: 'allow_cidrs', items: (snap.allow_cidrs ?? []).map((a) => ({ cidr: a.cidr, proto: a.proto, port: a.port, field: 'cidr' })) },
  ];
  for (const { name, items } of lists) {
    const seen = new Map<string, number>();
    items.forEach((it, i) => {
      const path = `/${name}/${i}/${it.field}`;
      let canonical: string;
      try {
        const c = parseCidr(it.cidr);
        if (c.hostBitsSet) {
          problems.push({ path, message: `${it.cidr} has host bits set beyond /${c.prefixLen}; did you mean ${c.canonical}?` });
          return;
        }
        canonical = c.canonical;
      } catch (e) {
        problems.push({ path, message: (e as Error).message });
        return;
      }
      const key = `${canonical}|${it.proto}|${it.port}`;
      const first = seen.get(key);
      if (first !== undefined) problems.push({ path: `/${name}/${i}`, message: `duplicate of /${name}/${first} (${canonical} ${it.proto} ${it.port})` });
      else seen.set(key, i);
      rules += it.proto === 'any' ? 2 : 1;
    });
  }
  if (rules > capacity) {
    problems.push({ path: '/edges', message: `${rules} rules (after expanding "any" to tcp and udp) exceed the per-service capacity of ${capacity}` });
  }
  if (problems.length > 0) throw new ValidationError(problems);
  return snap;
}
