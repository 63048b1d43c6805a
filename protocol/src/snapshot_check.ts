/**
 * The one MapSnapshot checker: the JSON Schema, then CIDRs that parse with no host bits
 * (naming the canonical form), duplicate entries refused, and the datapath's per-service
 * capacity counted after `any` and `icmp` expand (rulesForEntry), ICMP types up to 255. The server checks what it accepts
 * with it, the agent's control API what it is given, and the datapath what it encodes,
 * so a snapshot one of them accepts is accepted by all. Every problem is reported with a
 * JSON Pointer path (`/edges/0/dst_cidr`).
 */
import { Ajv, type ValidateFunction } from 'ajv';
import { parseCidr, type ParsedCidr } from './cidr.js';
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

/**
 * One checked entry as the datapath encodes it: its parsed network, and which of the
 * records it expands to an earlier entry of the same list already made (first wins).
 * Only `any` on a port beside `tcp`/`udp` on the same network and port repeats a record.
 */
export interface CheckedEntry {
  cidr: ParsedCidr;
  proto: Proto;
  port: number;
  /** SKIP_TCP / SKIP_UDP: that record was made by an earlier entry. */
  skip: number;
}
export const SKIP_TCP = 1;
export const SKIP_UDP = 2;

/** The entries of rule lists that passed, in list order, for the encoder. */
export interface CheckedRules {
  edges: CheckedEntry[];
  allow_cidrs: CheckedEntry[];
}

const PROTO_CODE: Record<Proto, number> = { tcp: 0, udp: 1, icmp: 2, any: 3 };

/**
 * First index of each (network, protocol, port) of a list. IPv4 keys (address, length,
 * protocol, port) live in an open-addressing table of typed arrays: a 100,000-entry list
 * builds no key strings and no map entries. IPv6 keys are canonical strings in a Map.
 */
class DuplicateIndex {
  #addr = new Int32Array(0);
  /** prefix length << 18 | protocol << 16 | port, + 1 (0 = empty slot). */
  #meta = new Int32Array(0);
  #index = new Int32Array(0);
  #used = 0;
  #text = new Map<string, number>();

  /** Sized for `expected` IPv4 keys without growing. */
  constructor(expected: number) {
    let size = 1024;
    while (size < expected * 2) size *= 2;
    this.#addr = new Int32Array(size);
    this.#meta = new Int32Array(size);
    this.#index = new Int32Array(size);
  }

  #slot(addr: number, meta: number): number {
    const mask = this.#meta.length - 1;
    let h = Math.imul(addr ^ Math.imul(meta, 0x9e3779b1), 0x85ebca6b);
    h ^= h >>> 13;
    let i = h & mask;
    while (this.#meta[i] !== 0 && (this.#meta[i] !== meta || this.#addr[i] !== addr)) i = (i + 1) & mask;
    return i;
  }

  #grow(): void {
    const old = { addr: this.#addr, meta: this.#meta, index: this.#index };
    const size = old.meta.length * 2;
    this.#addr = new Int32Array(size);
    this.#meta = new Int32Array(size);
    this.#index = new Int32Array(size);
    for (let j = 0; j < old.meta.length; j++) {
      if (old.meta[j] === 0) continue;
      const i = this.#slot(old.addr[j]!, old.meta[j]!);
      this.#addr[i] = old.addr[j]!;
      this.#meta[i] = old.meta[j]!;
      this.#index[i] = old.index[j]!;
    }
  }

  get(c: ParsedCidr, proto: Proto, port: number): number | undefined {
    const pp = (PROTO_CODE[proto] << 16) | port;
    if (c.v4 === undefined) return this.#text.get(`${c.canonical}|${pp}`);
    if (this.#used === 0) return undefined;
    const i = this.#slot(c.v4 | 0, ((c.prefixLen << 18) | pp) + 1);
    return this.#meta[i] === 0 ? undefined : this.#index[i];
  }

  /** Records the first index of a key not yet present (callers check with get first). */
  set(c: ParsedCidr, proto: Proto, port: number, index: number): void {
    const pp = (PROTO_CODE[proto] << 16) | port;
    if (c.v4 === undefined) {
      this.#text.set(`${c.canonical}|${pp}`, index);
      return;
    }
    if ((this.#used + 1) * 2 > this.#meta.length) this.#grow();
    const meta = ((c.prefixLen << 18) | pp) + 1;
    const i = this.#slot(c.v4 | 0, meta);
    if (this.#meta[i] !== 0) return;
    this.#addr[i] = c.v4 | 0;
    this.#meta[i] = meta;
    this.#index[i] = index;
    this.#used++;
  }
}

/** Checks the entries of schema-valid rule lists: CIDRs, duplicates, capacity. */
function checkEntries(snap: Pick<MapSnapshot, 'edges' | 'allow_cidrs'>, capacity: number, out?: CheckedRules): SnapshotCheck {
  const problems: FieldProblem[] = [];
  let rules = 0;
  for (const name of ['edges', 'allow_cidrs'] as const) {
    const field = name === 'edges' ? 'dst_cidr' : 'cidr';
    const items: ReadonlyArray<{ proto: Proto; port: number; dst_cidr?: string; cidr?: string }> = snap[name] ?? [];
    const collected: CheckedEntry[] | undefined = out ? (out[name] = new Array<CheckedEntry>(items.length)) : undefined;
    // `any` on a port repeats a tcp/udp record only when the list has such an entry.
    let anyOnPort = false;
    for (let i = 0; i < items.length; i++) if (items[i]!.proto === 'any' && items[i]!.port !== 0) anyOnPort = true;
    const seen = new DuplicateIndex(items.length);
    for (let i = 0; i < items.length; i++) {
      const it = items[i]!;
      const text = (name === 'edges' ? it.dst_cidr : it.cidr)!;
      // For icmp the port is the ICMP type, one byte on the wire.
      if (it.proto === 'icmp' && it.port > 255) {
        problems.push({ path: `/${name}/${i}/port`, message: `an icmp entry's port is the ICMP type (0-255, 0 = every type), got ${it.port}` });
        continue;
      }
      let c: ParsedCidr;
      try {
        c = parseCidr(text);
      } catch (e) {
        problems.push({ path: `/${name}/${i}/${field}`, message: (e as Error).message });
        continue;
      }
      if (c.hostBitsSet) {
        problems.push({ path: `/${name}/${i}/${field}`, message: `${text} has host bits set beyond /${c.prefixLen}; did you mean ${c.canonical}?` });
        continue;
      }
      const canonical = c.canonical;
      // Same network (canonical form), protocol and port: the entry says nothing new, and
      // a repeated entry is usually a mistake in whatever produced the snapshot.
      const first = seen.get(c, it.proto, it.port);
      if (first !== undefined) problems.push({ path: `/${name}/${i}`, message: `duplicate of /${name}/${first} (${canonical} ${it.proto} ${it.port})` });
      else seen.set(c, it.proto, it.port, i);
      rules += rulesForEntry(it.proto, it.port);
      if (collected) {
        let skip = 0;
        if (anyOnPort && it.port !== 0) {
          if (it.proto === 'any') {
            if (seen.get(c, 'tcp', it.port) !== undefined) skip |= SKIP_TCP;
            if (seen.get(c, 'udp', it.port) !== undefined) skip |= SKIP_UDP;
          } else if ((it.proto === 'tcp' || it.proto === 'udp') && (seen.get(c, 'any', it.port) ?? i) < i) {
            skip = it.proto === 'tcp' ? SKIP_TCP : SKIP_UDP;
          }
        }
        collected[i] = { cidr: c, proto: it.proto, port: it.port, skip };
      }
    }
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
export function inspectPolicyRules(body: unknown, capacity: number = MAX_RULES_PER_SERVICE, entries?: CheckedRules): SnapshotCheck {
  if (notAnObject(body)) {
    return { problems: [{ path: '/', message: 'a policy object (edges, allow_cidrs) is required' }], rules: 0, capacity, overCapacity: false };
  }
  rulesValidator ??= compile(POLICY_RULES_SCHEMA);
  if (!rulesValidator(body)) return schemaFailure(rulesValidator, capacity);
  return checkEntries(body as Pick<MapSnapshot, 'edges' | 'allow_cidrs'>, capacity, entries);
}

/** Validates a MapSnapshot; throws ValidationError naming every failing path. */
export function checkMapSnapshot(body: unknown, capacity: number = MAX_RULES_PER_SERVICE): MapSnapshot {
  const r = inspectMapSnapshot(body, capacity);
  if (r.problems.length > 0) throw new ValidationError(r.problems);
  return body as MapSnapshot;
}
