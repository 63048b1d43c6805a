/**
 * Decide and act: an alert of a rule with an `action` becomes a decision; a quarantine or
 * tighten becomes one MapSnapshot per service, submitted through the orchestrator targeted
 * at the alert's machine, always as a canary first (observe mode on the host: it drops
 * nothing, it counts would-drops). A periodic pass (AEGIS_DECISION_INTERVAL_SECONDS) then
 * judges each canary after its window (AEGIS_DECISION_CANARY_SECONDS): every target acked
 * it without errors and its would-drops hold nothing outside the action's intent → the
 * revisions are promoted to enforce; an error ack → rolled back at once; no ack within the
 * window → rolled back; drops outside the intent → rolled back and failed. A rule in
 * `mode: auto` starts its canary itself, but never while the customer's machines under
 * decisions (approved, canary, promoted) would exceed AEGIS_DECISION_MAX_FLEET_SHARE of its
 * active machines (at least one): such a decision stays proposed with the reason, and is
 * retried by the pass. A rollback restores, as a new and higher revision targeted at the
 * machine only, what the machine ran before (allow-everything when it ran nothing).
 * Every transition is audited with its evidence; webhooks decision.proposed,
 * decision.promoted and decision.rolled_back follow from the audit.
 *
 *   proposed → approved → canary → promoted | rolled_back | failed
 *   proposed → rejected;  notify: notified;  canary|promoted → (reject) rolled_back
 */
import type { Kysely, Selectable } from 'kysely';
import { AegisError, ALL_HOSTS, parseCidr, type MapSnapshot } from '../../../protocol/src/index.js';
import type { AuditLog } from '../audit.js';
import { iso, type Clock } from '../clock.js';
import type { Alert } from '../correlation/correlator.js';
import type { CorrelationRule, ManagementEdge, RuleAction } from '../correlation/rules.js';
import type { Database, DecisionsTable } from '../db/schema.js';
import { decodeTimeIdCursor, encodeTimeIdCursor } from '../pagination.js';
import { plan, propose } from '../proposer/index.js';
import type { Orchestrator } from '../rollout/orchestrator.js';

export const DECISION_STATES = ['proposed', 'approved', 'canary', 'promoted', 'rolled_back', 'failed', 'rejected', 'notified'] as const;
export type DecisionState = (typeof DECISION_STATES)[number];
/** States in which a decision acts on its machine (the fleet share counts them); these and proposed are open (one per rule and machine). */
const ACTING: readonly DecisionState[] = ['approved', 'canary', 'promoted'];

export interface DecisionSettings {
  /** How long a canary runs before the guard rails judge it (AEGIS_DECISION_CANARY_SECONDS). */
  canarySeconds: number;
  /** Largest share of a customer's active machines under decisions at once (AEGIS_DECISION_MAX_FLEET_SHARE); at least one machine. */
  maxFleetShare: number;
  /** Seconds between passes (AEGIS_DECISION_INTERVAL_SECONDS). */
  intervalSeconds: number;
}
export const DEFAULT_DECISION_SETTINGS: Readonly<DecisionSettings> = { canarySeconds: 300, maxFleetShare: 0.1, intervalSeconds: 5 };
/** The TTL of decision snapshots: renewed by every republication while current. */
const SNAPSHOT_TTL_SECONDS = 3600;

export interface DecisionRevision {
  service_id: number;
  /** The canary (later promoted) revision this decision produced. */
  revision: number;
  /** What the machine ran for the service before (null: nothing). */
  prior_revision: number | null;
  /** The revision that restored prior_revision, once rolled back. */
  restored_by: number | null;
}

export interface Decision {
  id: number;
  rule_id: string;
  alert_id: string;
  customer_id: string | null;
  machine_id: string;
  action: RuleAction;
  mode: 'propose' | 'auto';
  state: DecisionState;
  evidence: Record<string, unknown>;
  revisions: DecisionRevision[];
  reason: string | null;
  created_at: string;
  canary_started_at: string | null;
  decided_at: string | null;
  decided_by: string | null;
  updated_at: string;
}

export interface DecisionQuery {
  customer: string | null;
  state?: DecisionState;
  machine?: string;
  rule?: string;
  limit: number;
  cursor?: { at: string; id: number };
}

function toDecision(r: Selectable<DecisionsTable>): Decision {
  return {
    id: Number(r.id),
    rule_id: r.rule_id,
    alert_id: r.alert_id,
    customer_id: r.customer_id,
    machine_id: r.machine_id,
    action: JSON.parse(r.action) as RuleAction,
    mode: r.mode as Decision['mode'],
    state: r.state as DecisionState,
    evidence: JSON.parse(r.evidence) as Record<string, unknown>,
    revisions: JSON.parse(r.revisions) as DecisionRevision[],
    reason: r.reason,
    created_at: r.created_at,
    canary_started_at: r.canary_started_at,
    decided_at: r.decided_at,
    decided_by: r.decided_by,
    updated_at: r.updated_at,
  };
}

/** Whether `remote` (an address) lies in `cidr`. */
function inCidr(remote: string, cidr: string): boolean {
  let a, c;
  try {
    a = parseCidr(remote);
    c = parseCidr(cidr);
  } catch {
    return false;
  }
  if (a.family !== c.family) return false;
  for (let bit = 0; bit < c.prefixLen; bit++) {
    const byte = bit >> 3;
    const mask = 0x80 >> (bit & 7);
    if ((a.addr[byte]! & mask) !== (c.addr[byte]! & mask)) return false;
  }
  return true;
}

/** Whether a flow (direction, proto, remote, port) is one a management edge keeps. */
export function isManagementFlow(edges: readonly ManagementEdge[], f: { direction: string; proto: string; remote: string; port: number }): boolean {
  return edges.some(
    (e) =>
      (e.direction === 'both' || e.direction === f.direction) &&
      (e.proto === f.proto || (e.proto === 'any' && (e.port === 0 || f.proto === 'tcp' || f.proto === 'udp'))) &&
      (e.port === 0 || e.port === f.port) &&
      inCidr(f.remote, e.cidr),
  );
}

export class Decisions {
  private timer: NodeJS.Timeout | null = null;
  private chain: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly db: Kysely<Database>,
    private readonly clock: Clock,
    private readonly orchestrator: Orchestrator,
    private readonly audit: AuditLog,
    readonly settings: DecisionSettings,
    private readonly warn: (m: string, meta: Record<string, unknown>) => void,
  ) {}

  /** Runs `fn` after every mutation queued before it: passes and API calls never interleave. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn, fn);
    this.chain = run.catch(() => undefined);
    return run;
  }

  /** Runs the guard-rail pass every interval while `leader()` says this replica holds the singleton lease. */
  start(leader: () => boolean = () => true): void {
    this.timer = setInterval(() => {
      if (!leader()) return;
      this.advance().catch((e: unknown) => this.warn('decision pass failed', { error: (e as Error).message }));
    }, this.settings.intervalSeconds * 1000);
    this.timer.unref();
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.chain.catch(() => undefined);
  }

  private async row(id: number): Promise<Decision> {
    const r = await this.db.selectFrom('decisions').selectAll().where('id', '=', id).executeTakeFirst();
    if (!r) throw new AegisError('NOT_FOUND', 'no such decision');
    return toDecision(r);
  }

  /** One decision, if `customer` (null: any) may see it; else the unknown-id 404. */
  async get(id: number, customer: string | null): Promise<Decision> {
    const d = await this.db.selectFrom('decisions').selectAll().where('id', '=', id).executeTakeFirst();
    if (!d || (customer !== null && d.customer_id !== customer)) throw new AegisError('NOT_FOUND', 'no such decision');
    return toDecision(d);
  }

  async list(q: DecisionQuery): Promise<{ items: Decision[]; next_cursor: string | null }> {
    let s = this.db.selectFrom('decisions').selectAll();
    if (q.customer !== null) s = s.where('customer_id', '=', q.customer);
    if (q.state !== undefined) s = s.where('state', '=', q.state);
    if (q.machine !== undefined) s = s.where('machine_id', '=', q.machine);
    if (q.rule !== undefined) s = s.where('rule_id', '=', q.rule);
    const c = q.cursor;
    if (c !== undefined) s = s.where((eb) => eb.or([eb('created_at', '<', c.at), eb.and([eb('created_at', '=', c.at), eb('id', '<', c.id)])]));
    const rows = await s.orderBy('created_at', 'desc').orderBy('id', 'desc').limit(q.limit + 1).execute();
    const items = rows.slice(0, q.limit).map(toDecision);
    const last = items[items.length - 1];
    return { items, next_cursor: rows.length > q.limit && last ? encodeTimeIdCursor(last.created_at, last.id) : null };
  }

  static decodeCursor(text: string): { at: string; id: number } {
    return decodeTimeIdCursor(text);
  }

  private async record(d: Decision, event: string, actor: string, extra: Record<string, unknown> = {}, clientIp: string | null = null): Promise<void> {
    await this.audit.record({
      event_type: event,
      actor,
      customer_id: d.customer_id,
      machine_id: d.machine_id,
      client_ip: clientIp,
      reason: d.reason,
      data: { decision_id: d.id, rule_id: d.rule_id, alert_id: d.alert_id, machine_id: d.machine_id, action: d.action, mode: d.mode, state: d.state, revisions: d.revisions, evidence: d.evidence, ...extra },
    });
  }

  /** Compare-and-set: moves `d` from `from` to a new state; false when another caller moved it first. */
  private async move(d: Decision, from: DecisionState, patch: Partial<Omit<DecisionsTable, 'id'>>): Promise<boolean> {
    const r = await this.db
      .updateTable('decisions')
      .set({ ...patch, updated_at: iso(this.clock.now()) })
      .where('id', '=', d.id)
      .where('state', '=', from)
      .executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }

  /** The correlator raised `alert` for `rule`: a decision if the rule has an action (none while one is open for the rule and machine). */
  onAlert(alert: Alert, rule: CorrelationRule): Promise<Decision | null> {
    if (!rule.action) return Promise.resolve(null);
    return this.serial(() => this.create(alert, rule, rule.action!));
  }

  private async create(alert: Alert, rule: CorrelationRule, action: RuleAction): Promise<Decision | null> {
    const now = iso(this.clock.now());
    const notify = action.type === 'notify';
    const evidence = { alert: { id: alert.id, rule_title: alert.rule_title, level: alert.level, group: alert.group, first_event_at: alert.first_event_at, last_event_at: alert.last_event_at }, ...alert.evidence };
    const inserted = await this.db
      .insertInto('decisions')
      .values({
        rule_id: rule.id,
        alert_id: alert.id,
        customer_id: alert.customer_id,
        machine_id: alert.machine_id,
        action: JSON.stringify(action),
        mode: rule.mode ?? 'propose',
        state: notify ? 'notified' : 'proposed',
        evidence: JSON.stringify(evidence),
        revisions: '[]',
        open_key: notify ? null : JSON.stringify([rule.id, alert.machine_id]),
        canary_started_at: null,
        created_at: now,
        decided_at: notify ? now : null,
        decided_by: notify ? 'correlator' : null,
        reason: null,
        updated_at: now,
      })
      .onConflict((oc) => oc.column('open_key').doNothing())
      .returning('id')
      .executeTakeFirst();
    if (!inserted) return null; // one open decision per rule and machine
    const d = await this.row(Number(inserted.id));
    await this.record(d, notify ? 'decision.notified' : 'decision.proposed', 'correlator');
    if (!notify && d.mode === 'auto') return this.begin(d, 'guard-rails', true);
    return d;
  }

  /** Active machines of a customer, and how many of them decisions act on now (but `except`). */
  private async fleet(customer: string | null, except: number): Promise<{ machines: number; acting: number }> {
    let m = this.db
      .selectFrom('machines')
      .innerJoin('licenses', 'licenses.id', 'machines.license_id')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('machines.status', '=', 'active');
    m = customer === null ? m.where('licenses.customer_id', 'is', null) : m.where('licenses.customer_id', '=', customer);
    let a = this.db
      .selectFrom('decisions')
      .select('machine_id')
      .distinct()
      .where('state', 'in', [...ACTING])
      .where('id', '!=', except);
    a = customer === null ? a.where('customer_id', 'is', null) : a.where('customer_id', '=', customer);
    const [{ n }, acting] = await Promise.all([m.executeTakeFirstOrThrow(), a.execute()]);
    return { machines: Number(n), acting: acting.length };
  }

  /** Services machine `m` runs as far as the server knows: what is targeted at it (or every host), and what its agent reports. */
  private async servicesOf(machineId: string): Promise<number[]> {
    const cur = await this.db.selectFrom('seg_current').select('service_id').where((eb) => eb.or([eb('target', '=', machineId), eb('target', '=', ALL_HOSTS)])).execute();
    const out = new Set(cur.map((r) => Number(r.service_id)));
    const agent = await this.db.selectFrom('agents').select('status').where('machine_id', '=', machineId).executeTakeFirst();
    const status = agent ? (JSON.parse(agent.status) as { services?: Array<{ service_id?: unknown }> } | null) : null;
    for (const s of status?.services ?? []) if (Number.isInteger(s.service_id)) out.add(s.service_id as number);
    return [...out].sort((a, b) => a - b);
  }

  private async snapshotsFor(d: Decision): Promise<MapSnapshot[]> {
    const meta = { source: 'decision', decision_id: d.id, rule_id: d.rule_id, action: d.action.type };
    if (d.action.type === 'quarantine') {
      const allow = d.action.allow;
      const services = await this.servicesOf(d.machine_id);
      if (services.length === 0) throw new AegisError('CONFLICT', `machine ${d.machine_id} runs no service the server knows of (no snapshot targets it, its agent reported none)`);
      return services.map((service_id) => ({
        version: 1,
        service_id,
        edges: allow.filter((e) => e.direction !== 'ingress').map((e) => ({ dst_cidr: e.cidr, proto: e.proto, port: e.port })),
        allow_cidrs: allow.filter((e) => e.direction !== 'egress').map((e) => ({ cidr: e.cidr, proto: e.proto, port: e.port })),
        ttl_seconds: SNAPSHOT_TTL_SECONDS,
        meta,
      }));
    }
    if (d.action.type === 'tighten') {
      // What the machine's service was seen doing (allowed, or would-drop under observe): the segmenter's input.
      const rows = await this.db
        .selectFrom('flow_log')
        .select(['remote', 'proto', 'port', (eb) => eb.fn.sum<number>('count').as('count')])
        .where('machine_id', '=', d.machine_id)
        .where('service_id', '=', d.action.service_id)
        .where('direction', '=', 'egress')
        .where('verdict', 'in', ['allowed', 'would-drop'])
        .where('proto', 'in', ['tcp', 'udp'])
        .groupBy(['remote', 'proto', 'port'])
        .orderBy('remote')
        .execute();
      const flows = rows.map((r) => ({ dst: r.remote, proto: r.proto as 'tcp' | 'udp', port: Number(r.port), count: Number(r.count) }));
      const proposal = propose({ service_id: d.action.service_id, flows }, { now: () => this.clock.now() });
      return [plan({ proposal, ttl_seconds: SNAPSHOT_TTL_SECONDS, meta })].map((s) => ({ ...s, meta: { ...s.meta, ...meta } }));
    }
    return [];
  }

  /** proposed → approved → canary: the snapshots go out as canaries. With `auto`, only within the fleet share. */
  private async begin(d: Decision, actor: string, auto: boolean, clientIp: string | null = null): Promise<Decision> {
    if (auto) {
      const { machines, acting } = await this.fleet(d.customer_id, d.id);
      const cap = Math.max(1, Math.floor(this.settings.maxFleetShare * machines));
      if (acting + 1 > cap) {
        const reason = `held: ${acting} of the customer's ${machines} active machines are under decisions, at most ${cap} at once (AEGIS_DECISION_MAX_FLEET_SHARE ${this.settings.maxFleetShare})`;
        if (d.reason !== reason) {
          await this.db.updateTable('decisions').set({ reason, updated_at: iso(this.clock.now()) }).where('id', '=', d.id).where('state', '=', 'proposed').execute();
          const held = await this.row(d.id);
          await this.record(held, 'decision.held', actor);
          return held;
        }
        return d;
      }
    }
    const now = iso(this.clock.now());
    if (!(await this.move(d, 'proposed', { state: 'approved', decided_at: now, decided_by: actor, reason: null }))) throw new AegisError('CONFLICT', `decision ${d.id} is no longer proposed`);
    let cur = await this.row(d.id);
    await this.record(cur, 'decision.approved', actor, {}, clientIp);
    const revisions: DecisionRevision[] = [];
    try {
      for (const snap of await this.snapshotsFor(cur)) {
        const prior = await this.orchestrator.currentFor(snap.service_id, cur.machine_id);
        const res = await this.orchestrator.submit(snap, { targets: [cur.machine_id], stage: 'canary', actor: `decision:${cur.id}` });
        revisions.push({ service_id: res.service_id, revision: res.revision, prior_revision: prior, restored_by: null });
        await this.db.updateTable('decisions').set({ revisions: JSON.stringify(revisions) }).where('id', '=', cur.id).execute();
      }
    } catch (e) {
      const reason = `the action could not be submitted: ${(e as Error).message}`;
      await this.db.updateTable('decisions').set({ revisions: JSON.stringify(revisions) }).where('id', '=', cur.id).execute();
      return this.rollback(await this.row(cur.id), 'approved', 'failed', reason, actor);
    }
    await this.move(cur, 'approved', { state: 'canary', canary_started_at: iso(this.clock.now()), revisions: JSON.stringify(revisions) });
    cur = await this.row(d.id);
    await this.record(cur, 'decision.canary', actor);
    return cur;
  }

  /** Restores what the machine ran before each revision of `d`; then `state` with `reason`. */
  private async rollback(d: Decision, from: DecisionState, state: 'rolled_back' | 'failed', reason: string, actor: string, clientIp: string | null = null): Promise<Decision> {
    const revisions = d.revisions.map((r) => ({ ...r }));
    const problems: string[] = [];
    const notes: string[] = [];
    for (const r of revisions) {
      if (r.restored_by !== null) continue;
      try {
        // A newer revision for the machine (an operator's) replaced ours: it stays, nothing to undo.
        const runs = await this.orchestrator.currentFor(r.service_id, d.machine_id);
        if (runs !== r.revision) {
          notes.push(`service ${r.service_id}: left at revision ${runs ?? 'none'}, which replaced ${r.revision}`);
          continue;
        }
        const rev = await this.orchestrator.restore(r.service_id, r.prior_revision, [d.machine_id], `decision:${d.id}`, SNAPSHOT_TTL_SECONDS);
        r.restored_by = rev.revision;
      } catch (e) {
        problems.push(`service ${r.service_id}: ${(e as Error).message}`);
      }
    }
    let full = problems.length === 0 ? reason : `${reason}; restoring failed for ${problems.join('; ')}`;
    if (notes.length > 0) full = `${full}; ${notes.join('; ')}`;
    if (!(await this.move(d, from, { state, reason: full, revisions: JSON.stringify(revisions), open_key: null }))) throw new AegisError('CONFLICT', `decision ${d.id} is no longer ${from}`);
    const cur = await this.row(d.id);
    await this.record(cur, state === 'failed' ? 'decision.failed' : 'decision.rolled_back', actor, {}, clientIp);
    return cur;
  }

  private async promote(d: Decision, actor: string, reason: string, clientIp: string | null = null): Promise<Decision> {
    try {
      for (const r of d.revisions) await this.orchestrator.promoteOnTargets(r.service_id, r.revision);
    } catch (e) {
      // Half promoted is not a state: everything goes back.
      return this.rollback(d, 'canary', 'failed', `promoting failed: ${(e as Error).message}`, actor, clientIp);
    }
    if (!(await this.move(d, 'canary', { state: 'promoted', reason }))) throw new AegisError('CONFLICT', `decision ${d.id} is no longer a canary`);
    const cur = await this.row(d.id);
    await this.record(cur, 'decision.promoted', actor, {}, clientIp);
    return cur;
  }

  /** The acks of the machine for each revision: acked (ok), errored (with the error), or missing. */
  private async acks(d: Decision): Promise<{ missing: DecisionRevision[]; errors: string[] }> {
    const row = await this.db.selectFrom('agents').select('applied').where('machine_id', '=', d.machine_id).executeTakeFirst();
    const applied = row ? (JSON.parse(row.applied) as Record<string, { revision?: number; stage?: string; ok?: boolean; error?: string | null }>) : {};
    const missing: DecisionRevision[] = [];
    const errors: string[] = [];
    for (const r of d.revisions) {
      const a = applied[String(r.service_id)];
      if (!a || a.revision !== r.revision) missing.push(r);
      else if (a.ok !== true || (a.error !== null && a.error !== undefined)) errors.push(`service ${r.service_id} revision ${r.revision}: ${a.error ?? 'not ok'}`);
    }
    return { missing, errors };
  }

  /** Would-drops the canary counted that are outside the action's intent (each a short description). */
  private async outsideIntent(d: Decision): Promise<string[]> {
    const since = d.canary_started_at ?? d.created_at;
    const out: string[] = [];
    for (const r of d.revisions) {
      const drops = await this.db
        .selectFrom('flow_log')
        .select(['direction', 'proto', 'remote', 'port', (eb) => eb.fn.sum<number>('count').as('count')])
        .where('machine_id', '=', d.machine_id)
        .where('service_id', '=', r.service_id)
        .where('revision', '=', r.revision)
        .where('verdict', '=', 'would-drop')
        .where('received_at', '>=', since)
        .groupBy(['direction', 'proto', 'remote', 'port'])
        .execute();
      if (drops.length === 0) continue;
      let seen: Set<string> | null = null;
      if (d.action.type === 'tighten') {
        // Flows the machine's service was seen with around the window, before this canary.
        const from = iso(new Date(Date.parse(since) - this.settings.canarySeconds * 1000));
        const rows = await this.db
          .selectFrom('flow_log')
          .select(['direction', 'proto', 'remote', 'port'])
          .distinct()
          .where('machine_id', '=', d.machine_id)
          .where('service_id', '=', r.service_id)
          .where('received_at', '>=', from)
          .where((eb) => eb.or([eb('revision', 'is', null), eb('revision', '!=', r.revision)]))
          .where('verdict', 'in', ['allowed', 'would-drop'])
          .execute();
        seen = new Set(rows.map((x) => `${x.direction} ${x.proto} ${x.remote} ${Number(x.port)}`));
      }
      for (const f of drops) {
        const flow = { direction: f.direction, proto: f.proto, remote: f.remote, port: Number(f.port) };
        const key = `${flow.direction} ${flow.proto} ${flow.remote} ${flow.port}`;
        const outside = d.action.type === 'quarantine' ? isManagementFlow(d.action.allow, flow) : seen!.has(key);
        if (outside) out.push(`${Number(f.count)} ${key} (service ${r.service_id})`);
      }
    }
    return out;
  }

  /** One canary judged by the guard rails. */
  private async judge(d: Decision): Promise<Decision> {
    const { missing, errors } = await this.acks(d);
    if (errors.length > 0) return this.rollback(d, 'canary', 'rolled_back', `a target reported an error applying the canary: ${errors.join('; ')}`, 'guard-rails');
    const started = Date.parse(d.canary_started_at ?? d.created_at);
    if (this.clock.now().getTime() < started + this.settings.canarySeconds * 1000) return d;
    if (missing.length > 0) {
      return this.rollback(d, 'canary', 'rolled_back', `no ack within the ${this.settings.canarySeconds} s canary window for ${missing.map((r) => `service ${r.service_id} revision ${r.revision}`).join(', ')}`, 'guard-rails');
    }
    const outside = await this.outsideIntent(d);
    if (outside.length > 0) return this.rollback(d, 'canary', 'failed', `the canary would have dropped flows outside the action's intent: ${outside.slice(0, 10).join('; ')}`, 'guard-rails');
    return this.promote(d, 'guard-rails', `every target acked the canary without errors; no would-drop outside the ${d.action.type} intent in ${this.settings.canarySeconds} s`);
  }

  /** One pass: held auto decisions are retried, canaries judged. Returns how many changed state. */
  advance(): Promise<number> {
    return this.serial(async () => {
      let changed = 0;
      const rows = await this.db.selectFrom('decisions').selectAll().where('state', 'in', ['proposed', 'canary']).orderBy('created_at').orderBy('id').execute();
      for (const r of rows) {
        const d = toDecision(r);
        try {
          const after = d.state === 'proposed' ? (d.mode === 'auto' ? await this.begin(d, 'guard-rails', true) : d) : await this.judge(d);
          if (after.state !== d.state) changed++;
        } catch (e) {
          this.warn('advancing a decision failed', { decision_id: d.id, error: (e as Error).message });
        }
      }
      return changed;
    });
  }

  /** An operator approves: a proposed decision starts its canary; a canary is promoted now (unless a target reported an error). */
  approve(id: number, customer: string | null, actor: string, clientIp: string | null): Promise<Decision> {
    return this.serial(async () => {
      const d = await this.get(id, customer);
      if (d.state === 'proposed') {
        return this.begin(d, actor, false, clientIp);
      }
      if (d.state === 'canary') {
        const { missing, errors } = await this.acks(d);
        if (errors.length > 0) throw new AegisError('CONFLICT', `a target reported an error applying the canary (${errors.join('; ')}): reject it`);
        return this.promote(d, actor, missing.length > 0 ? 'promoted by the operator before every target acked' : 'promoted by the operator', clientIp);
      }
      throw new AegisError('CONFLICT', `decision ${id} is ${d.state}: only a proposed decision or a canary can be approved`);
    });
  }

  /** An operator rejects: a proposed decision is closed; an approved, canary or promoted one is rolled back. */
  reject(id: number, customer: string | null, actor: string, reason: string | undefined, clientIp: string | null): Promise<Decision> {
    return this.serial(async () => {
      const d = await this.get(id, customer);
      const why = reason ?? `rejected by ${actor}`;
      if (d.state === 'proposed') {
        const now = iso(this.clock.now());
        if (!(await this.move(d, 'proposed', { state: 'rejected', reason: why, open_key: null, decided_at: now, decided_by: actor }))) throw new AegisError('CONFLICT', `decision ${id} is no longer proposed`);
        const cur = await this.row(id);
        await this.record(cur, 'decision.rejected', actor, {}, clientIp);
        return cur;
      }
      if (d.state === 'approved' || d.state === 'canary' || d.state === 'promoted') {
        await this.db.updateTable('decisions').set({ decided_at: iso(this.clock.now()), decided_by: actor }).where('id', '=', id).execute();
        return this.rollback(await this.row(id), d.state, 'rolled_back', why, actor, clientIp);
      }
      throw new AegisError('CONFLICT', `decision ${id} is ${d.state}: nothing to reject`);
    });
  }
}
