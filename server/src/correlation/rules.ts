/**
 * Correlation rules, in the shape of Sigma's correlation rules: `event_count`,
 * `value_count`, `temporal` and `temporal_ordered` over selectors that pick events by source
 * and field equality, grouped by fields, within a timespan. A rule that does not parse, or
 * names a field this server does not know, is refused with every problem named (a 400
 * naming the path); nothing is kept.
 *
 *   id: exposed-critical-then-egress-burst
 *   title: Critical exposed finding and a burst of denied egress
 *   type: temporal
 *   rules:
 *     - {source: finding, severity: critical, exposed: true}
 *     - {source: flow, verdict: dropped, direction: egress, condition: {gt: 20, field: remote}}
 *   group-by: [machine_id]
 *   timespan: 10m
 *   level: critical
 *
 * In temporal rules a selector may carry its own `condition` (gt/gte only: "at least"),
 * counting events or, with `field`, distinct values; without one a single event satisfies it.
 */
import { CidrError, parseCidr, ValidationError, type FieldProblem } from '../../../protocol/src/index.js';

export const RULE_TYPES = ['event_count', 'value_count', 'temporal', 'temporal_ordered'] as const;
export type RuleType = (typeof RULE_TYPES)[number];
export const RULE_LEVELS = ['informational', 'low', 'medium', 'high', 'critical'] as const;
export const SELECTOR_SOURCES = ['threat', 'file_verdict', 'telemetry', 'flow', 'finding'] as const;
export type SelectorSource = (typeof SELECTOR_SOURCES)[number];
export const GROUP_BY_FIELDS = ['machine_id', 'customer_id'] as const;
const OPS = ['gt', 'gte', 'lt', 'lte', 'eq'] as const;
type Op = (typeof OPS)[number];

/** Fields a selector (and a value_count `field`) may name, per source. Event sources also take `body.<key>`. */
export const SOURCE_FIELDS: Readonly<Record<SelectorSource, readonly string[]>> = {
  threat: ['machine_id', 'kind', 'severity'],
  file_verdict: ['machine_id', 'kind', 'severity'],
  telemetry: ['machine_id', 'kind', 'severity'],
  flow: ['machine_id', 'direction', 'verdict', 'proto', 'remote', 'port', 'rule', 'reason', 'service_id'],
  finding: ['machine_id', 'severity', 'exposed', 'package', 'advisory', 'source_package'],
};

/** Bounds: a rule is small, a window is at most a week, a selector list is short. */
export const MAX_RULE_BYTES = 16 * 1024;
export const MAX_SELECTORS = 10;
export const MAX_SELECTOR_FIELDS = 16;
export const MIN_TIMESPAN_SECONDS = 1;
export const MAX_TIMESPAN_SECONDS = 7 * 86400;
export const MAX_THRESHOLD = 1_000_000;

export type Scalar = string | number | boolean;

export interface Condition {
  op: Op;
  value: number;
  field?: string;
}

export interface Selector {
  source: SelectorSource;
  /** Field → the value it must equal. */
  match: Record<string, Scalar>;
  /** Temporal rules only: how much of this selector the window must hold (default: one event). */
  condition?: Condition;
}

export interface CorrelationRule {
  id: string;
  title: string;
  type: RuleType;
  rules: Selector[];
  group_by: string[];
  timespan: string;
  timespan_seconds: number;
  /** event_count and value_count only. */
  condition?: Condition;
  level: (typeof RULE_LEVELS)[number];
  description?: string;
  /** What an alert of this rule decides (server/src/decisions); absent: alerts only. */
  action?: RuleAction;
  /** propose (default): an operator approves; auto: the guard rails act. Only with an action. */
  mode?: DecisionMode;
}

export const ACTION_TYPES = ['quarantine', 'tighten', 'notify'] as const;
export const DECISION_MODES = ['propose', 'auto'] as const;
export type DecisionMode = (typeof DECISION_MODES)[number];
export const EDGE_PROTOS = ['tcp', 'udp', 'icmp', 'any'] as const;
export const EDGE_DIRECTIONS = ['egress', 'ingress', 'both'] as const;
/** Management edges a quarantine keeps, at most. */
export const MAX_MANAGEMENT_EDGES = 64;

/** A management edge: traffic to (egress) or from (ingress) `cidr` on `proto`/`port` that a quarantine keeps. */
export interface ManagementEdge {
  cidr: string;
  proto: (typeof EDGE_PROTOS)[number];
  port: number;
  direction: (typeof EDGE_DIRECTIONS)[number];
}

export type RuleAction =
  | { type: 'quarantine'; allow: ManagementEdge[] }
  | { type: 'tighten'; service_id: number }
  | { type: 'notify' };

function parseAction(v: unknown, problems: FieldProblem[]): RuleAction | undefined {
  if (!isObj(v)) {
    problems.push({ path: 'action', message: `must be an object with a type (${ACTION_TYPES.join(', ')})` });
    return undefined;
  }
  const type = v.type;
  if (typeof type !== 'string' || !(ACTION_TYPES as readonly string[]).includes(type)) {
    problems.push({ path: 'action.type', message: `must be one of ${ACTION_TYPES.join(', ')}` });
    return undefined;
  }
  const allowed = type === 'quarantine' ? ['type', 'allow'] : type === 'tighten' ? ['type', 'service_id'] : ['type'];
  for (const k of Object.keys(v)) if (!allowed.includes(k)) problems.push({ path: `action.${k}`, message: `is not a field of a ${type} action (${allowed.join(', ')})` });
  if (type === 'notify') return { type: 'notify' };
  if (type === 'tighten') {
    if (!Number.isSafeInteger(v.service_id) || (v.service_id as number) < 0 || (v.service_id as number) > 0xffffffff) {
      problems.push({ path: 'action.service_id', message: 'must be an integer from 0 to 4294967295' });
      return undefined;
    }
    return { type: 'tighten', service_id: v.service_id as number };
  }
  if (!Array.isArray(v.allow) || v.allow.length > MAX_MANAGEMENT_EDGES) {
    problems.push({ path: 'action.allow', message: `must be a list of at most ${MAX_MANAGEMENT_EDGES} management edges {cidr, proto, port, direction?} (an empty list cuts everything)` });
    return undefined;
  }
  const allow: ManagementEdge[] = [];
  const seen = new Set<string>();
  v.allow.forEach((e, i) => {
    const path = `action.allow[${i}]`;
    if (!isObj(e)) {
      problems.push({ path, message: 'must be an object {cidr, proto, port, direction?}' });
      return;
    }
    for (const k of Object.keys(e)) if (!['cidr', 'proto', 'port', 'direction'].includes(k)) problems.push({ path: `${path}.${k}`, message: 'is not a field of a management edge (cidr, proto, port, direction)' });
    let cidr: string | null = null;
    try {
      const c = parseCidr(e.cidr as string);
      if (c.hostBitsSet) problems.push({ path: `${path}.cidr`, message: `${String(e.cidr)} has host bits set beyond /${c.prefixLen}; did you mean ${c.canonical}?` });
      else cidr = c.canonical;
    } catch (err) {
      if (!(err instanceof CidrError)) throw err;
      problems.push({ path: `${path}.cidr`, message: err.message });
    }
    if (!(EDGE_PROTOS as readonly unknown[]).includes(e.proto)) problems.push({ path: `${path}.proto`, message: `must be one of ${EDGE_PROTOS.join(', ')}` });
    if (!Number.isInteger(e.port) || (e.port as number) < 0 || (e.port as number) > 65535) problems.push({ path: `${path}.port`, message: 'must be an integer from 0 to 65535' });
    if (e.direction !== undefined && !(EDGE_DIRECTIONS as readonly unknown[]).includes(e.direction)) problems.push({ path: `${path}.direction`, message: `must be one of ${EDGE_DIRECTIONS.join(', ')}` });
    if (cidr === null || !(EDGE_PROTOS as readonly unknown[]).includes(e.proto) || !Number.isInteger(e.port)) return;
    const edge: ManagementEdge = { cidr, proto: e.proto as ManagementEdge['proto'], port: e.port as number, direction: (e.direction as ManagementEdge['direction'] | undefined) ?? 'both' };
    const key = JSON.stringify(edge);
    if (seen.has(key)) problems.push({ path, message: 'is listed twice' });
    seen.add(key);
    allow.push(edge);
  });
  return { type: 'quarantine', allow };
}

const ID = /^[a-z0-9][a-z0-9_.-]{0,63}$/;
const TIMESPAN = /^([1-9][0-9]{0,6})(s|m|h|d)$/;
const UNIT: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400 };
const BODY_KEY = /^body\.[A-Za-z0-9_]{1,64}$/;

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function fieldAllowed(source: SelectorSource, f: string): boolean {
  if (SOURCE_FIELDS[source].includes(f)) return true;
  return source !== 'flow' && source !== 'finding' && BODY_KEY.test(f);
}

function parseCondition(v: unknown, path: string, problems: FieldProblem[], source: SelectorSource | null, atLeastOnly: boolean): Condition | undefined {
  if (!isObj(v)) {
    problems.push({ path, message: 'must be an object with one of gt, gte, lt, lte, eq' });
    return undefined;
  }
  let cond: Condition | undefined;
  for (const [k, val] of Object.entries(v)) {
    if (k === 'field') continue;
    if (!(OPS as readonly string[]).includes(k)) {
      problems.push({ path: `${path}.${k}`, message: 'is not a condition operator (gt, gte, lt, lte, eq, field)' });
      continue;
    }
    if (cond) {
      problems.push({ path: `${path}.${k}`, message: 'only one operator per condition' });
      continue;
    }
    if (!Number.isSafeInteger(val) || (val as number) < 0 || (val as number) > MAX_THRESHOLD) {
      problems.push({ path: `${path}.${k}`, message: `must be an integer from 0 to ${MAX_THRESHOLD}` });
      continue;
    }
    if (atLeastOnly && k !== 'gt' && k !== 'gte') {
      problems.push({ path: `${path}.${k}`, message: 'a temporal selector\'s condition is "at least": gt or gte only' });
      continue;
    }
    cond = { op: k as Op, value: val as number };
  }
  if (!cond && !problems.some((p) => p.path.startsWith(path))) problems.push({ path, message: 'needs one of gt, gte, lt, lte, eq' });
  if (v.field !== undefined) {
    if (typeof v.field !== 'string' || (source !== null && !fieldAllowed(source, v.field))) {
      problems.push({ path: `${path}.field`, message: source ? `is not a field of ${source} events (${SOURCE_FIELDS[source].join(', ')})` : 'must be a field name' });
    } else if (cond) cond.field = v.field;
  }
  return cond;
}

function parseSelector(v: unknown, path: string, problems: FieldProblem[], temporal: boolean): Selector | undefined {
  if (!isObj(v)) {
    problems.push({ path, message: 'a selector must be an object with a source' });
    return undefined;
  }
  const source = v.source;
  if (typeof source !== 'string' || !(SELECTOR_SOURCES as readonly string[]).includes(source)) {
    problems.push({ path: `${path}.source`, message: `must be one of ${SELECTOR_SOURCES.join(', ')}` });
    return undefined;
  }
  const src = source as SelectorSource;
  const keys = Object.keys(v).filter((k) => k !== 'source' && k !== 'condition');
  if (keys.length > MAX_SELECTOR_FIELDS) problems.push({ path, message: `at most ${MAX_SELECTOR_FIELDS} fields` });
  const match: Record<string, Scalar> = {};
  for (const k of keys) {
    const val = v[k];
    if (!fieldAllowed(src, k)) {
      problems.push({ path: `${path}.${k}`, message: `is not a field of ${src} events (${SOURCE_FIELDS[src].join(', ')}${src === 'flow' || src === 'finding' ? '' : ', body.<key>'})` });
      continue;
    }
    if (!(typeof val === 'string' && val.length <= 256) && !(typeof val === 'number' && Number.isFinite(val)) && typeof val !== 'boolean') {
      problems.push({ path: `${path}.${k}`, message: 'must be a string (at most 256 characters), number or boolean' });
      continue;
    }
    // The flow log says dropped/allowed; deny/allow are accepted for them.
    match[k] = src === 'flow' && k === 'verdict' && val === 'deny' ? 'dropped' : src === 'flow' && k === 'verdict' && val === 'allow' ? 'allowed' : val;
  }
  const sel: Selector = { source: src, match };
  if (v.condition !== undefined) {
    if (!temporal) problems.push({ path: `${path}.condition`, message: 'only selectors of temporal rules carry a condition' });
    else {
      const c = parseCondition(v.condition, `${path}.condition`, problems, src, true);
      if (c) sel.condition = c;
    }
  }
  return sel;
}

const TOP_KEYS = ['id', 'title', 'type', 'rules', 'group-by', 'timespan', 'condition', 'level', 'description', 'action', 'mode'];

/** Parses a rule (already decoded from JSON or YAML); throws a ValidationError naming every problem. */
export function parseRule(v: unknown): CorrelationRule {
  const problems: FieldProblem[] = [];
  if (!isObj(v)) throw new ValidationError([{ path: '', message: 'a rule must be an object' }]);
  if (JSON.stringify(v).length > MAX_RULE_BYTES) throw new ValidationError([{ path: '', message: `a rule is at most ${MAX_RULE_BYTES} bytes` }]);
  for (const k of Object.keys(v)) if (!TOP_KEYS.includes(k)) problems.push({ path: k, message: `is not a rule field (${TOP_KEYS.join(', ')})` });
  if (typeof v.id !== 'string' || !ID.test(v.id)) problems.push({ path: 'id', message: 'must be 1 to 64 of a-z 0-9 _ . - (starting with a letter or digit)' });
  if (typeof v.title !== 'string' || v.title.trim().length === 0 || v.title.length > 200) problems.push({ path: 'title', message: 'must be a non-empty string of at most 200 characters' });
  if (v.description !== undefined && (typeof v.description !== 'string' || v.description.length > 2000)) problems.push({ path: 'description', message: 'must be a string of at most 2000 characters' });
  const type = v.type as RuleType;
  if (!(RULE_TYPES as readonly string[]).includes(v.type as string)) problems.push({ path: 'type', message: `must be one of ${RULE_TYPES.join(', ')}` });
  const temporal = type === 'temporal' || type === 'temporal_ordered';
  const selectors: Selector[] = [];
  if (!Array.isArray(v.rules) || v.rules.length === 0 || v.rules.length > MAX_SELECTORS) problems.push({ path: 'rules', message: `must be a list of 1 to ${MAX_SELECTORS} selectors` });
  else {
    v.rules.forEach((s, i) => {
      const sel = parseSelector(s, `rules[${i}]`, problems, temporal);
      if (sel) selectors.push(sel);
    });
    if (temporal && v.rules.length < 2) problems.push({ path: 'rules', message: 'a temporal rule correlates at least two selectors' });
  }
  const groupBy = v['group-by'];
  if (!Array.isArray(groupBy) || !groupBy.every((g) => typeof g === 'string' && (GROUP_BY_FIELDS as readonly string[]).includes(g)) || new Set(groupBy).size !== groupBy.length || !groupBy.includes('machine_id')) {
    problems.push({ path: 'group-by', message: `must list distinct fields of ${GROUP_BY_FIELDS.join(', ')}, including machine_id (alerts are filed under a machine)` });
  }
  let seconds = 0;
  const m = typeof v.timespan === 'string' ? TIMESPAN.exec(v.timespan) : null;
  if (!m) problems.push({ path: 'timespan', message: 'must be a number and a unit: 30s, 10m, 2h, 1d' });
  else {
    seconds = Number(m[1]) * UNIT[m[2]!]!;
    if (seconds < MIN_TIMESPAN_SECONDS || seconds > MAX_TIMESPAN_SECONDS) problems.push({ path: 'timespan', message: `must be from ${MIN_TIMESPAN_SECONDS}s to ${MAX_TIMESPAN_SECONDS / 86400}d` });
  }
  let condition: Condition | undefined;
  if (temporal) {
    if (v.condition !== undefined) problems.push({ path: 'condition', message: 'temporal rules need every selector; put counts in a selector\'s condition' });
  } else if (v.condition === undefined) problems.push({ path: 'condition', message: 'is required for event_count and value_count' });
  else {
    // value_count's field is checked against every selector's source.
    condition = parseCondition(v.condition, 'condition', problems, null, false);
    if (type === 'value_count') {
      if (!condition?.field) problems.push({ path: 'condition.field', message: 'value_count counts distinct values of a field: name it' });
      else for (const s of selectors) if (!fieldAllowed(s.source, condition.field)) problems.push({ path: 'condition.field', message: `is not a field of ${s.source} events` });
    } else if (condition?.field !== undefined) problems.push({ path: 'condition.field', message: 'only value_count takes a field' });
  }
  if (!(RULE_LEVELS as readonly string[]).includes(v.level as string)) problems.push({ path: 'level', message: `must be one of ${RULE_LEVELS.join(', ')}` });
  const action = v.action === undefined ? undefined : parseAction(v.action, problems);
  if (v.mode !== undefined) {
    if (!(DECISION_MODES as readonly unknown[]).includes(v.mode)) problems.push({ path: 'mode', message: `must be one of ${DECISION_MODES.join(', ')}` });
    else if (v.action === undefined) problems.push({ path: 'mode', message: 'only a rule with an action has a mode' });
  }
  if (problems.length > 0) throw new ValidationError(problems);
  const rule: CorrelationRule = {
    id: v.id as string,
    title: (v.title as string).trim(),
    type,
    rules: selectors,
    group_by: groupBy as string[],
    timespan: v.timespan as string,
    timespan_seconds: seconds,
    level: v.level as CorrelationRule['level'],
  };
  if (condition) rule.condition = condition;
  if (v.description !== undefined) rule.description = v.description as string;
  if (action) {
    rule.action = action;
    rule.mode = (v.mode as DecisionMode | undefined) ?? 'propose';
  }
  return rule;
}

/** The rule back in its written shape (what GET returns and what is stored). */
export function ruleToJson(r: CorrelationRule): Record<string, unknown> {
  const cond = (c: Condition) => ({ [c.op]: c.value, ...(c.field !== undefined ? { field: c.field } : {}) });
  const out: Record<string, unknown> = {
    id: r.id,
    title: r.title,
    type: r.type,
    rules: r.rules.map((s) => ({ source: s.source, ...s.match, ...(s.condition ? { condition: cond(s.condition) } : {}) })),
    'group-by': r.group_by,
    timespan: r.timespan,
    level: r.level,
  };
  if (r.condition) out.condition = cond(r.condition);
  if (r.description !== undefined) out.description = r.description;
  if (r.action) {
    out.action = r.action;
    out.mode = r.mode ?? 'propose';
  }
  return out;
}

export function compare(c: Condition, n: number): boolean {
  switch (c.op) {
    case 'gt':
      return n > c.value;
    case 'gte':
      return n >= c.value;
    case 'lt':
      return n < c.value;
    case 'lte':
      return n <= c.value;
    case 'eq':
      return n === c.value;
  }
}
