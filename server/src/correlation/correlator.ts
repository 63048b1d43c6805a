/**
 * The correlator: a periodic evaluator (every AEGIS_RULES_INTERVAL_SECONDS, and on demand)
 * over each rule's window [now - timespan, now] by the server clock. Candidates come from
 * indexed range queries: the events table by (source, at), the flow log by received_at
 * (its (machine_id, received_at) and (received_at) indexes), and findings as standing
 * events: a finding open at evaluation time matches whatever its first_seen_at (its time,
 * for ordering, is first_seen_at). Flow lines count with their `count`.
 * One alert per rule, group and window: a group that already has an alert for the rule
 * created within the last timespan is not alerted again.
 */
import { randomUUID } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Kysely } from 'kysely';
import { AegisError, ValidationError } from '../../../protocol/src/index.js';
import type { Database } from '../db/schema.js';
import { iso, type Clock } from '../clock.js';
import { compare, parseRule, ruleToJson, type Condition, type CorrelationRule, type Selector } from './rules.js';

/** Candidate rows read per selector and pass: a bound on one pass's memory. */
export const MAX_CANDIDATES = 50_000;
export const MAX_RULES = 500;

interface Candidate {
  ref: string; // e:<id> | f:<id> | finding:<machine>/<advisory>/<package>
  machine_id: string;
  customer_id: string | null;
  at: string;
  weight: number;
  fields: Record<string, unknown>;
}

export interface Alert {
  id: string;
  rule_id: string;
  rule_title: string;
  level: string;
  group: Record<string, string | null>;
  machine_id: string;
  customer_id: string | null;
  first_event_at: string;
  last_event_at: string;
  evidence: { refs: string[]; counts: number[] };
  created_at: string;
}

export interface StoredRule {
  rule: Record<string, unknown>;
  origin: 'file' | 'api';
  created_by: string | null;
  created_at: string | null;
}

export interface AlertQuery {
  customer: string | null;
  rule?: string;
  machine?: string;
  since?: string;
  limit: number;
}

/** Reads *.json, *.yaml and *.yml rule files (one rule each); any bad file stops the start, naming it. */
export async function loadRuleDir(dir: string): Promise<CorrelationRule[]> {
  const out: CorrelationRule[] = [];
  const names = readdirSync(dir).filter((n) => /\.(json|ya?ml)$/.test(n)).sort();
  let yaml: typeof import('yaml') | null = null;
  for (const n of names) {
    const text = readFileSync(join(dir, n), 'utf8');
    let doc: unknown;
    try {
      if (n.endsWith('.json')) doc = JSON.parse(text);
      else {
        yaml ??= await import('yaml');
        doc = yaml.parse(text, { maxAliasCount: 10 });
      }
      out.push(parseRule(doc));
    } catch (e) {
      const detail = e instanceof ValidationError ? e.problems.map((p) => `${p.path}: ${p.message}`).join('; ') : (e as Error).message;
      throw new Error(`correlation rule file ${join(dir, n)}: ${detail}`);
    }
  }
  return out;
}

export class Correlator {
  private readonly fileRules = new Map<string, CorrelationRule>();
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<number> | null = null;
  /** Called with each alert raised (the app audits it, which queues the webhook). */
  onAlert: ((a: Alert, rule: CorrelationRule) => Promise<void>) | null = null;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly clock: Clock,
    fileRules: CorrelationRule[] = [],
  ) {
    for (const r of fileRules) {
      if (this.fileRules.has(r.id)) throw new Error(`correlation rule ${r.id} is defined twice in AEGIS_RULES_DIR`);
      this.fileRules.set(r.id, r);
    }
  }

  start(intervalSeconds: number, warn: (m: string, meta: Record<string, unknown>) => void, leader: () => boolean = () => true): void {
    this.timer = setInterval(() => {
      if (!leader()) return;
      this.evaluate().catch((e: unknown) => warn('correlation pass failed', { error: (e as Error).message }));
    }, intervalSeconds * 1000);
    this.timer.unref();
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.running?.catch(() => undefined);
  }

  async listRules(): Promise<StoredRule[]> {
    const rows = await this.db.selectFrom('correlation_rules').selectAll().orderBy('id').execute();
    const files: StoredRule[] = [...this.fileRules.values()].map((r) => ({ rule: ruleToJson(r), origin: 'file', created_by: null, created_at: null }));
    return [...files, ...rows.map((r) => ({ rule: JSON.parse(r.body) as Record<string, unknown>, origin: 'api' as const, created_by: r.created_by, created_at: r.created_at }))].sort((a, b) => String(a.rule.id).localeCompare(String(b.rule.id)));
  }

  async addRule(body: unknown, actor: string): Promise<StoredRule> {
    const rule = parseRule(body);
    if (this.fileRules.has(rule.id)) throw new AegisError('CONFLICT', `rule ${rule.id} is defined in AEGIS_RULES_DIR`);
    const count = await this.db.selectFrom('correlation_rules').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
    if (Number(count.n) + this.fileRules.size >= MAX_RULES) throw new AegisError('CONFLICT', `at most ${MAX_RULES} rules`);
    const created_at = iso(this.clock.now());
    const json = ruleToJson(rule);
    const inserted = await this.db
      .insertInto('correlation_rules')
      .values({ id: rule.id, title: rule.title, type: rule.type, body: JSON.stringify(json), created_by: actor, created_at })
      .onConflict((oc) => oc.column('id').doNothing())
      .returning('id')
      .executeTakeFirst();
    if (!inserted) throw new AegisError('CONFLICT', `rule ${rule.id} exists`);
    return { rule: json, origin: 'api', created_by: actor, created_at };
  }

  async deleteRule(id: string): Promise<StoredRule> {
    if (this.fileRules.has(id)) throw new AegisError('CONFLICT', `rule ${id} is defined in AEGIS_RULES_DIR: remove the file and restart`);
    const row = await this.db.deleteFrom('correlation_rules').where('id', '=', id).returningAll().executeTakeFirst();
    if (!row) throw new AegisError('NOT_FOUND', 'no such rule');
    return { rule: JSON.parse(row.body) as Record<string, unknown>, origin: 'api', created_by: row.created_by, created_at: row.created_at };
  }

  private async rules(): Promise<CorrelationRule[]> {
    const rows = await this.db.selectFrom('correlation_rules').select('body').execute();
    return [...this.fileRules.values(), ...rows.map((r) => parseRule(JSON.parse(r.body)))];
  }

  /** One pass over every rule; returns the number of alerts raised. Passes never overlap. */
  async evaluate(): Promise<number> {
    while (this.running) await this.running.catch(() => undefined);
    this.running = this.pass();
    try {
      return await this.running;
    } finally {
      this.running = null;
    }
  }

  private async pass(): Promise<number> {
    const now = this.clock.now();
    let raised = 0;
    for (const rule of await this.rules()) raised += await this.evaluateRule(rule, now);
    return raised;
  }

  private async candidates(sel: Selector, since: string, until: string): Promise<Candidate[]> {
    const eq = (c: Candidate) => Object.entries(sel.match).every(([k, v]) => c.fields[k] === v);
    if (sel.source === 'flow') {
      let q = this.db.selectFrom('flow_log').selectAll().where('received_at', '>=', since).where('received_at', '<=', until);
      for (const k of ['machine_id', 'direction', 'proto', 'remote', 'reason'] as const) if (typeof sel.match[k] === 'string') q = q.where(k, '=', sel.match[k] as string);
      const rows = await q.orderBy('received_at').limit(MAX_CANDIDATES).execute();
      const customers = await this.customersOf([...new Set(rows.map((r) => r.machine_id))]);
      return rows
        .map((r) => ({
          ref: `f:${r.id}`,
          machine_id: r.machine_id,
          customer_id: customers.get(r.machine_id) ?? null,
          at: r.received_at,
          weight: Number(r.count),
          fields: { machine_id: r.machine_id, direction: r.direction, verdict: r.verdict, proto: r.proto, remote: r.remote, port: Number(r.port), rule: r.rule === null ? null : Number(r.rule), reason: r.reason, service_id: Number(r.service_id) },
        }))
        .filter(eq);
    }
    if (sel.source === 'finding') {
      let q = this.db.selectFrom('findings').selectAll().where('first_seen_at', '<=', until);
      if (typeof sel.match.machine_id === 'string') q = q.where('machine_id', '=', sel.match.machine_id);
      if (typeof sel.match.severity === 'string') q = q.where('severity_level', '=', sel.match.severity);
      const rows = await q.orderBy('first_seen_at').limit(MAX_CANDIDATES).execute();
      const customers = await this.customersOf([...new Set(rows.map((r) => r.machine_id))]);
      return rows
        .map((r) => ({
          ref: `finding:${r.machine_id}/${r.advisory_id}/${r.package}`,
          machine_id: r.machine_id,
          customer_id: customers.get(r.machine_id) ?? null,
          at: r.first_seen_at,
          weight: 1,
          fields: { machine_id: r.machine_id, severity: r.severity_level, exposed: Number(r.exposed) === 1, package: r.package, advisory: r.advisory_id, source_package: r.source },
        }))
        .filter(eq);
    }
    let q = this.db.selectFrom('events').selectAll().where('source', '=', sel.source).where('at', '>=', since).where('at', '<=', until);
    for (const k of ['machine_id', 'kind', 'severity'] as const) if (typeof sel.match[k] === 'string') q = q.where(k, '=', sel.match[k] as string);
    const rows = await q.orderBy('at').orderBy('id').limit(MAX_CANDIDATES).execute();
    return rows
      .map((r) => {
        const body = JSON.parse(r.body) as Record<string, unknown>;
        const fields: Record<string, unknown> = { machine_id: r.machine_id, kind: r.kind, severity: r.severity };
        for (const [k, v] of Object.entries(body)) fields[`body.${k}`] = v;
        return { ref: `e:${r.id}`, machine_id: r.machine_id, customer_id: r.customer_id, at: r.at, weight: 1, fields };
      })
      .filter(eq);
  }

  private async customersOf(machines: string[]): Promise<Map<string, string | null>> {
    const out = new Map<string, string | null>();
    for (let i = 0; i < machines.length; i += 500) {
      const rows = await this.db
        .selectFrom('machines')
        .innerJoin('licenses', 'licenses.id', 'machines.license_id')
        .select(['machines.id', 'licenses.customer_id'])
        .where('machines.id', 'in', machines.slice(i, i + 500))
        .execute();
      for (const r of rows) out.set(r.id, r.customer_id);
    }
    return out;
  }

  private async evaluateRule(rule: CorrelationRule, now: Date): Promise<number> {
    const until = iso(now);
    const since = iso(new Date(now.getTime() - rule.timespan_seconds * 1000));
    const perSelector = await Promise.all(rule.rules.map((s) => this.candidates(s, since, until)));
    const keyOf = (c: Candidate) => JSON.stringify(Object.fromEntries(rule.group_by.map((g) => [g, g === 'customer_id' ? c.customer_id : c.machine_id])));
    // group key → per selector candidates
    const groups = new Map<string, Candidate[][]>();
    perSelector.forEach((list, i) => {
      for (const c of list) {
        const k = keyOf(c);
        let g = groups.get(k);
        if (!g) groups.set(k, (g = rule.rules.map(() => [])));
        g[i]!.push(c);
      }
    });
    let raised = 0;
    for (const [key, lists] of groups) {
      const hit = fires(rule, lists);
      if (!hit) continue;
      const dup = await this.db.selectFrom('alerts').select('id').where('rule_id', '=', rule.id).where('group_key', '=', key).where('created_at', '>', since).executeTakeFirst();
      if (dup) continue;
      const used = hit.flat();
      const first = used.reduce((a, c) => (c.at < a ? c.at : a), used[0]!.at);
      const last = used.reduce((a, c) => (c.at > a ? c.at : a), used[0]!.at);
      const group = JSON.parse(key) as Record<string, string | null>;
      const alert: Alert = {
        id: randomUUID(),
        rule_id: rule.id,
        rule_title: rule.title,
        level: rule.level,
        group,
        machine_id: used[0]!.machine_id,
        customer_id: used[0]!.customer_id,
        first_event_at: first,
        last_event_at: last,
        evidence: { refs: used.slice(0, 200).map((c) => c.ref), counts: hit.map((l) => l.reduce((n, c) => n + c.weight, 0)) },
        created_at: until,
      };
      await this.db
        .insertInto('alerts')
        .values({
          id: alert.id,
          rule_id: alert.rule_id,
          rule_title: alert.rule_title,
          level: alert.level,
          group_key: key,
          machine_id: alert.machine_id,
          customer_id: alert.customer_id,
          first_event_at: alert.first_event_at,
          last_event_at: alert.last_event_at,
          evidence: JSON.stringify(alert.evidence),
          created_at: alert.created_at,
        })
        .execute();
      raised++;
      if (this.onAlert) await this.onAlert(alert, rule);
    }
    return raised;
  }

  async alerts(q: AlertQuery): Promise<Alert[]> {
    let s = this.db.selectFrom('alerts').selectAll();
    if (q.customer !== null) s = s.where('customer_id', '=', q.customer);
    if (q.rule !== undefined) s = s.where('rule_id', '=', q.rule);
    if (q.machine !== undefined) s = s.where('machine_id', '=', q.machine);
    if (q.since !== undefined) s = s.where('created_at', '>=', q.since);
    const rows = await s.orderBy('created_at', 'desc').orderBy('id', 'desc').limit(q.limit).execute();
    return rows.map((r) => {
      return {
        id: r.id,
        rule_id: r.rule_id,
        rule_title: r.rule_title,
        level: r.level,
        group: JSON.parse(r.group_key) as Record<string, string | null>,
        machine_id: r.machine_id,
        customer_id: r.customer_id,
        first_event_at: r.first_event_at,
        last_event_at: r.last_event_at,
        evidence: JSON.parse(r.evidence) as Alert['evidence'],
        created_at: r.created_at,
      };
    });
  }
}

/** The events that make the rule fire for one group (per selector), or null. */
function fires(rule: CorrelationRule, lists: Candidate[][]): Candidate[][] | null {
  if (rule.type === 'event_count' || rule.type === 'value_count') {
    const all = lists.flat();
    const n = rule.type === 'event_count' ? all.reduce((a, c) => a + c.weight, 0) : new Set(all.map((c) => JSON.stringify(c.fields[rule.condition!.field!] ?? null))).size;
    return compare(rule.condition!, n) ? lists : null;
  }
  const out: Candidate[][] = [];
  let after = '';
  for (let i = 0; i < lists.length; i++) {
    const list = [...lists[i]!].sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : 0));
    const from = rule.type === 'temporal_ordered' ? list.filter((c) => c.at >= after) : list;
    const reached = satisfiedAt(rule.rules[i]!.condition, from);
    if (reached === null) return null;
    out.push(from.slice(0, reached + 1));
    after = from[reached]!.at;
  }
  return out;
}

/** Index of the event at which an "at least" condition (default: one event) is first met, or null. */
function satisfiedAt(c: Condition | undefined, list: Candidate[]): number | null {
  const cond: Condition = c ?? { op: 'gte', value: 1 };
  let n = 0;
  const seen = new Set<string>();
  for (let i = 0; i < list.length; i++) {
    const e = list[i]!;
    if (cond.field !== undefined) seen.add(JSON.stringify(e.fields[cond.field] ?? null));
    else n += e.weight;
    if (compare(cond, cond.field !== undefined ? seen.size : n)) return i;
  }
  return null;
}
