/**
 * `POST /segment/plan`: a proposal (possibly edited by an operator) in, a MapSnapshot out,
 * ready for `POST /seg/maps`. Everything is re-validated: the proposal may have made a
 * round trip through a person's editor.
 */
import {
  CidrError,
  MAX_RULES_PER_SERVICE,
  PROTOS,
  parseCidr,
  type AllowCidr,
  type Edge,
  type MapSnapshot,
  type Proto,
} from '../../../protocol/src/index.js';
import { InputProblems, describe, isIntegerIn, isPlainObject } from './input_problems.js';
import { MAX_SERVICE_ID, type Proposal } from './propose.js';
import { bytesToBigint } from './prefix_collapse.js';

export interface PlanInput {
  proposal: Proposal;
  /** Snapshot lifetime without renewal; default 1800, at least 60. */
  ttl_seconds?: number;
  /** Snapshot format version; default 1. */
  version?: number;
  /** Ingress allowances (by source CIDR and local port), copied into the snapshot. */
  allow_cidrs?: Array<{ cidr: string; proto: 'tcp' | 'udp' | 'any'; port: number }>;
  /** Extra metadata; the segmenter's own keys (source, generated_at, max_unseen_ratio) win. */
  meta?: Record<string, unknown>;
}

export const DEFAULT_TTL_SECONDS = 1800;
export const MIN_TTL_SECONDS = 60;
export const DEFAULT_SNAPSHOT_VERSION = 1;

interface Rule {
  cidr: string;
  family: 4 | 6;
  base: bigint;
  prefixLen: number;
  proto: Proto;
  port: number;
}

const PROTO_ORDER: Record<Proto, number> = { tcp: 0, udp: 1, icmp: 2, any: 3 };

function compareRules(x: Rule, y: Rule): number {
  return (
    x.family - y.family ||
    (x.base < y.base ? -1 : x.base > y.base ? 1 : 0) ||
    x.prefixLen - y.prefixLen ||
    PROTO_ORDER[x.proto] - PROTO_ORDER[y.proto] ||
    x.port - y.port
  );
}

/** Validates a list of {cidr, proto, port} items; returns the valid ones. */
function readRules(list: unknown, at: string, cidrField: 'dst_cidr' | 'cidr', problems: InputProblems): Rule[] {
  const rules: Rule[] = [];
  if (!Array.isArray(list)) {
    problems.add(at, `must be an array of {${cidrField}, proto, port}, got ${describe(list)}`);
    return rules;
  }
  // Each item is at least one rule; far past capacity there is no point parsing.
  if (list.length > 2 * MAX_RULES_PER_SERVICE) {
    problems.add(at, `has ${list.length} items; a service holds at most ${MAX_RULES_PER_SERVICE} rules`);
    return rules;
  }
  list.forEach((item: unknown, i) => {
    const p = `${at}/${i}`;
    if (!isPlainObject(item)) {
      problems.add(p, `must be an object {${cidrField}, proto, port}, got ${describe(item)}`);
      return;
    }
    let ok = true;
    let cidr;
    const text = item[cidrField];
    try {
      cidr = parseCidr(text as string);
      if (cidr.hostBitsSet) {
        problems.add(`${p}/${cidrField}`, `${describe(text)} has host bits set below the prefix; did you mean ${cidr.canonical}?`);
        ok = false;
      }
    } catch (e) {
      problems.add(`${p}/${cidrField}`, e instanceof CidrError ? e.message : String(e));
      ok = false;
    }
    if (typeof item.proto !== 'string' || !(PROTOS as readonly string[]).includes(item.proto)) {
      problems.add(`${p}/proto`, `must be one of ${PROTOS.join(', ')}, got ${describe(item.proto)}`);
      ok = false;
    }
    if (!isIntegerIn(item.port, 0, 65535)) {
      problems.add(`${p}/port`, `must be an integer from 0 (any port) to 65535, got ${describe(item.port)}`);
      ok = false;
    }
    if (!ok || !cidr) return;
    rules.push({
      cidr: cidr.canonical,
      family: cidr.family,
      base: bytesToBigint(cidr.addr),
      prefixLen: cidr.prefixLen,
      proto: item.proto as Proto,
      port: item.port as number,
    });
  });
  return rules;
}

/**
 * Drops exact duplicates and tcp/udp rules already implied by an `any` rule with the same
 * prefix and port (the orchestrator refuses duplicate edges), then sorts. Returns the
 * rules and how many datapath entries they take once `any` is expanded.
 */
function normalize(rules: Rule[]): { rules: Rule[]; expanded: number } {
  const byKey = new Map<string, Rule>();
  for (const r of rules) byKey.set(`${r.cidr}|${r.port}|${r.proto}`, r);
  const out: Rule[] = [];
  let expanded = 0;
  for (const r of byKey.values()) {
    if (r.proto !== 'any' && byKey.has(`${r.cidr}|${r.port}|any`)) continue;
    out.push(r);
    expanded += r.proto === 'any' ? 2 : 1;
  }
  out.sort(compareRules);
  return { rules: out, expanded };
}

/**
 * Validates `input` (throwing ValidationError with a JSON Pointer per problem) and turns
 * its proposal into a MapSnapshot: CIDRs canonical and free of host bits, duplicates
 * removed, edges plus allow_cidrs within MAX_RULES_PER_SERVICE after `any` expansion
 * (the datapath's count), and meta recording where the policy came from.
 */
export function plan(input: unknown): MapSnapshot {
  const problems = new InputProblems();
  if (!isPlainObject(input)) {
    problems.add('/', `must be an object like {"proposal": {...}}, got ${describe(input)}`);
    problems.throwIfAny();
  }
  const body = input as Record<string, unknown>;

  const ttl = body.ttl_seconds ?? DEFAULT_TTL_SECONDS;
  if (!isIntegerIn(ttl, MIN_TTL_SECONDS, Number.MAX_SAFE_INTEGER)) {
    problems.add('/ttl_seconds', `must be an integer of at least ${MIN_TTL_SECONDS}, got ${describe(body.ttl_seconds)}`);
  }
  const version = body.version ?? DEFAULT_SNAPSHOT_VERSION;
  if (!isIntegerIn(version, 1, Number.MAX_SAFE_INTEGER)) {
    problems.add('/version', `must be an integer of at least 1, got ${describe(body.version)}`);
  }
  if (body.meta !== undefined && !isPlainObject(body.meta)) {
    problems.add('/meta', `must be an object, got ${describe(body.meta)}`);
  }
  const allows = body.allow_cidrs === undefined ? [] : readRules(body.allow_cidrs, '/allow_cidrs', 'cidr', problems);

  let edges: Rule[] = [];
  const proposal = body.proposal;
  if (!isPlainObject(proposal)) {
    problems.add('/proposal', `must be the object POST /segment/propose returned, got ${describe(proposal)}`);
  } else {
    if (!isIntegerIn(proposal.service_id, 0, MAX_SERVICE_ID)) {
      problems.add('/proposal/service_id', `must be an integer from 0 to ${MAX_SERVICE_ID}, got ${describe(proposal.service_id)}`);
    }
    if (proposal.generated_at !== undefined && typeof proposal.generated_at !== 'string') {
      problems.add('/proposal/generated_at', `must be a timestamp string, got ${describe(proposal.generated_at)}`);
    }
    const r = proposal.max_unseen_ratio;
    if (r !== undefined && (typeof r !== 'number' || !(r >= 0 && r <= 1))) {
      problems.add('/proposal/max_unseen_ratio', `must be a number from 0 to 1, got ${describe(r)}`);
    }
    edges = readRules(proposal.edges, '/proposal/edges', 'dst_cidr', problems);
  }
  problems.throwIfAny();

  const e = normalize(edges);
  const a = normalize(allows);
  if (e.expanded + a.expanded > MAX_RULES_PER_SERVICE) {
    problems.add(
      '/proposal/edges',
      `needs ${e.expanded} edge rules and ${a.expanded} allow rules once "any" is expanded to tcp and udp, ` +
        `more than a service holds (${MAX_RULES_PER_SERVICE}); propose again with a higher max_unseen_ratio or min_count`,
    );
    problems.throwIfAny();
  }

  const p = proposal as Record<string, unknown>;
  const meta: Record<string, unknown> = { ...((body.meta as Record<string, unknown> | undefined) ?? {}), source: 'segmenter' };
  if (p.generated_at !== undefined) meta.generated_at = p.generated_at;
  if (p.max_unseen_ratio !== undefined) meta.max_unseen_ratio = p.max_unseen_ratio;

  return {
    version: version as number,
    service_id: p.service_id as number,
    edges: e.rules.map((r): Edge => ({ dst_cidr: r.cidr, proto: r.proto, port: r.port })),
    allow_cidrs: a.rules.map((r): AllowCidr => ({ cidr: r.cidr, proto: r.proto, port: r.port })),
    ttl_seconds: ttl as number,
    meta,
  };
}
