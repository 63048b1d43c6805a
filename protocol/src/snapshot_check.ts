/**
 * The one MapSnapshot checker: the JSON Schema, then CIDRs that parse with no host bits
 * (naming the canonical form), duplicate entries refused, and the datapath's per-service
 * capacity counted after `any` and `icmp` expand (rulesForEntry), ICMP types up to 255. The server checks what it accepts
 * with it, the agent's control API what it is given, and the datapath what it encodes,
 * so a snapshot one of them accepts is accepted by all. Every problem is reported with a
 * JSON Pointer path (`/edges/0/dst_cidr`).
 */
import { Ajv, type ValidateFunction } from 'ajv';
import { parseCidr } from './cidr.js';
import { ValidationError, type FieldProblem } from './errors.js';
import { problemsOf } from './schema_problems.js';
import { MAP_SNAPSHOT_SCHEMA, MAX_RULES_PER_SERVICE, rulesForEntry, type MapSnapshot, type Proto } from './snapshot.js';

/** What checking a snapshot (or just its rule lists) found. */
export interface SnapshotCheck {
  /** Every problem found, in document order; a capacity problem, if any, comes last. */
  problems: FieldProblem[];
  /** Datapath rules the entries need once `any` and `icmp` are expanded (rulesForEntry). */
  rules: number;
  /** The per-service capacity the rule count was checked against. */
  capacity: number;
  /** True when `rules` exceeds `capacity` (then `problems` ends with that problem). */
  overCapacity: boolean;
}

/** The rule lists alone: what the datapath enforces, validated as in a MapSnapshot. */
const POLICY_RULES_SCHEMA = {
  type: 'object',
  properties: {
    edges: MAP_SNAPSHOT_SCHEMA.properties.edges,
    allow_cidrs: MAP_SNAPSHOT_SCHEMA.properties.allow_cidrs,
  },
} as const;

// Compiled on first use: importing protocol must stay cheap for code that never checks.
let snapshotValidator: ValidateFunction | undefined;
let rulesValidator: ValidateFunction | undefined;

function compile(schema: object): ValidateFunction {
  return new Ajv({ allErrors: true, strict: false }).compile(schema);
}

interface RuleEntry {
  cidr: string;
  proto: Proto;
  port: number;
  field: 'dst_cidr' | 'cidr';
}

/** Checks the entries of schema-valid rule lists: CIDRs, duplicates, capacity. */
function checkEntries(snap: Pick<MapSnapshot, 'edges' | 'allow_cidrs'>, capacity: number): SnapshotCheck {
  const problems: FieldProblem[] = [];
  let rules = 0;
  const lists: Array<{ name: string; items: RuleEntry[] }> = [
    { name: 'edges', items: (snap.edges ?? []).map((e) => ({ cidr: e.dst_cidr, proto: e.proto, port: e.port, field: 'dst_cidr' })) },
    { name: 'allow_cidrs', items: (snap.allow_cidrs ?? []).map((a) => ({ cidr: a.cidr, proto: a.proto, port: a.port, field: 'cidr' })) },
  ];
  for (const { name, items } of lists) {
    const seen = new Map<string, number>();
    items.forEach((it, i) => {
      const path = `/${name}/${i}/${it.field}`;
      // For icmp the port is the ICMP type, one byte on the wire.
      if (it.proto === 'icmp' && it.port > 255) {
        problems.push({ path: `/${name}/${i}/port`, message: `an icmp entry's port is the ICMP type (0-255, 0 = every type), got ${it.port}` });
        return;
      }
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
      // Same network (canonical form), protocol and port: the entry says nothing new, and
      // a repeated entry is usually a mistake in whatever produced the snapshot.
      const key = `${canonical}|${it.proto}|${it.port}`;
      const first = seen.get(key);
      if (first !== undefined) problems.push({ path: `/${name}/${i}`, message: `duplicate of /${name}/${first} (${canonical} ${it.proto} ${it.port})` });
      else seen.set(key, i);
      rules += rulesForEntry(it.proto, it.port);
    });
  }
  const overCapacity = rules > capacity;
  if (overCapacity) {
    problems.push({ path: '/edges', message: `${rules} rules (after expanding "any" to tcp and udp) exceed the per-service capacity of ${capacity}` });
  }
  return { problems, rules, capacity, overCapacity };
}

function schemaFailure(validate: ValidateFunction, capacity: number): SnapshotCheck {
  return { problems: problemsOf(validate.errors), rules: 0, capacity, overCapacity: false };
}

function notAnObject(body: unknown): boolean {
  return body === null || typeof body !== 'object' || Array.isArray(body);
}

/**
 * Checks a whole MapSnapshot and reports every problem without throwing. Entry checks run
 * only once the schema holds (until then the entries' types are unknown).
 */
export function inspectMapSnapshot(body: unknown, capacity: number = MAX_RULES_PER_SERVICE): SnapshotCheck {
  if (notAnObject(body)) {
    return { problems: [{ path: '/', message: 'a MapSnapshot JSON object is required' }], rules: 0, capacity, overCapacity: false };
  }
  snapshotValidator ??= compile(MAP_SNAPSHOT_SCHEMA);
  if (!snapshotValidator(body)) return schemaFailure(snapshotValidator, capacity);
  return checkEntries(body as MapSnapshot, capacity);
}

/**
 * Checks only a snapshot's rule lists (`edges`, `allow_cidrs`), with the same rules and
 * paths as inspectMapSnapshot: what the datapath needs before it encodes a policy.
 */
export function inspectPolicyRules(body: unknown, capacity: number = MAX_RULES_PER_SERVICE): SnapshotCheck {
  if (notAnObject(body)) {
    return { problems: [{ path: '/', message: 'a policy object (edges, allow_cidrs) is required' }], rules: 0, capacity, overCapacity: false };
  }
  rulesValidator ??= compile(POLICY_RULES_SCHEMA);
  if (!rulesValidator(body)) return schemaFailure(rulesValidator, capacity);
  return checkEntries(body as Pick<MapSnapshot, 'edges' | 'allow_cidrs'>, capacity);
}

/** Validates a MapSnapshot; throws ValidationError naming every failing path. */
export function checkMapSnapshot(body: unknown, capacity: number = MAX_RULES_PER_SERVICE): MapSnapshot {
  const r = inspectMapSnapshot(body, capacity);
  if (r.problems.length > 0) throw new ValidationError(r.problems);
  return body as MapSnapshot;
}
