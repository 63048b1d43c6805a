/**
 * Segmentation policy on this host: the configured services (service_id → cgroup), the
 * snapshot each one runs, and the datapath that enforces them.
 *
 * Snapshots are cached in <state>/snapshots/<service_id>.json and re-applied at start,
 * before READY, so enforcement never waits for the network. The mode a snapshot runs in
 * is derived, never stored: `enforce` only when its stage is enforce *and* the license
 * carries `segmentation_enforce`; otherwise `observe` (the community edition).
 * A snapshot whose TTL runs out without renewal is withdrawn.
 */
import { mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { DatapathMode, Feature, MapSnapshot, Stage } from '../../protocol/src/index.js';
import { cgroup2Mount, open, probe, type Datapath, type FlowEvent, type RuleCounters, type ServiceCounters, type ServiceStats } from './datapath/index.js';
import type { AgentConfig } from './config.js';
import { resolveCgroupPath } from './config.js';
import { AgentError } from './errors.js';
import type { Logger } from './logger.js';
import type { StateStore } from './state_store.js';

export interface SnapshotRecord {
  snapshot: MapSnapshot;
  revision: number;
  stage: Stage;
  /** When this host received it (ISO); the TTL counts from here. */
  received_at: string;
  source: string;
}

/** A datapath verdict with the snapshot revision whose generation decided it (null: unknown). */
export type AttributedFlowEvent = FlowEvent & { revision: number | null };

/** Generations kept per service for attributing events that were in flight during a swap. */
const GENERATIONS_KEPT = 8;

export interface ServiceView {
  service_id: number;
  cgroup: string;
  bound: boolean;
  error: string | null;
}

export interface SnapshotView {
  service_id: number;
  cgroup: string | null;
  revision: number | null;
  stage: Stage | null;
  mode: DatapathMode | null;
  ttl_left_s: number | null;
  counters: { allowed: number; dropped: number; would_drop: number } | null;
}

/** One service as the metrics see it (policy.metricsViews()). */
export interface ServiceMetricsView {
  service_id: number;
  bound: boolean;
  revision: number | null;
  stage: Stage | null;
  mode: DatapathMode | null;
  /** Seconds left before the snapshot lapses (fractional); null without one. */
  ttl_left_s: number | null;
  counters: ServiceCounters | null;
  rules: RuleCounters | null;
  last_apply_seconds: number | null;
}

function checkRecord(v: unknown): string | null {
  const r = v as Partial<SnapshotRecord> | null;
  if (!r || typeof r !== 'object') return 'not an object';
  if (!r.snapshot || typeof r.snapshot !== 'object' || typeof r.snapshot.service_id !== 'number') return 'no snapshot';
  if (typeof r.revision !== 'number' || (r.stage !== 'canary' && r.stage !== 'enforce')) return 'bad revision or stage';
  if (typeof r.received_at !== 'string' || Number.isNaN(Date.parse(r.received_at))) return 'bad received_at';
  return null;
}

export class PolicyManager {
  private datapath: Datapath | null = null;
  datapathReason: string | null = 'not opened';
  private services = new Map<number, ServiceView>();
  /** Services whose current record this process has put into the kernel (or withdrawn as expired). */
  private settled = new Set<number>();
  private records = new Map<number, SnapshotRecord>();
  private expiryTimers = new Map<number, NodeJS.Timeout>();
  private features: Feature[] = [];
  /**
   * What each service's policy in the kernel is, and which revision each recent generation
   * stood for. A generation is allocated per (snapshot, mode) put into the kernel, never
   * reused: a swap to anything else (a new snapshot, even one with the same revision number
   * from another source, or observe → enforce) re-judges the tracked flows and starts the
   * per-rule counts afresh, while a renewal (same snapshot, same mode) keeps both.
   */
  private applied = new Map<number, { snapshot: MapSnapshot; mode: DatapathMode; generation: number }>();
  private generationRevisions = new Map<number, Map<number, number>>();
  private lastGeneration = 0;
  /** Wall time of the last datapath apply per service (build, swap and the serialised wait), for the metrics. */
  private lastApply = new Map<number, { seconds: number; at: number }>();

  constructor(
    private config: AgentConfig,
    private readonly store: StateStore,
    private readonly log: Logger,
  ) {
    mkdirSync(join(store.dir, 'snapshots'), { recursive: true, mode: 0o700 });
  }

  /** Opens the datapath (reusing pins left by an earlier run) and binds the configured services. */
  async open(): Promise<void> {
    const p = await probe({ pinRoot: this.config.pin_root });
    if (!p.ok) {
      this.datapathReason = p.reasons.join('; ');
      this.log.warn(`datapath unavailable: ${this.datapathReason}`);
    } else {
      try {
        this.datapath = await open({ pinRoot: this.config.pin_root });
        this.datapathReason = null;
        // Generations continue past whatever an earlier run left in force.
        for (const s of await this.datapath.stats()) this.lastGeneration = Math.max(this.lastGeneration, s.policy?.generation ?? 0);
        // Still enforcing, only a denied connect times out instead of failing with EPERM.
        if (!this.datapath.connectHooks) this.log.warn(`datapath is skb-only: ${this.datapath.connectHooksReason}`);
      } catch (e) {
        this.datapathReason = (e as Error).message;
        this.log.error(`datapath unavailable: ${this.datapathReason}`);
      }
    }
    await this.bindAll();
  }

  /** Re-reads the service map (SIGHUP): binds new or moved services. */
  async reconfigure(config: AgentConfig): Promise<void> {
    this.config = config;
    await this.bindAll();
    await this.reapplyAll();
  }

  private async bindAll(): Promise<void> {
    const mount = cgroup2Mount();
    const next = new Map<number, ServiceView>();
    for (const [idText, path] of Object.entries(this.config.services)) {
      const id = Number(idText);
      const cgroup = mount ? resolveCgroupPath(path, mount) : path;
      const view: ServiceView = { service_id: id, cgroup, bound: false, error: null };
      if (!this.datapath) view.error = `datapath unavailable: ${this.datapathReason}`;
      else {
        try {
          await this.datapath.bindService(id, cgroup);
          view.bound = true;
        } catch (e) {
          view.error = (e as Error).message;
          this.log.error('cannot bind service', { service_id: id, cgroup, error: view.error });
        }
      }
      next.set(id, view);
    }
    this.services = next;
  }

  /** Restores cached snapshots (at start, before READY). Damaged files are discarded. */
  async restore(): Promise<void> {
    const dir = join(this.store.dir, 'snapshots');
    for (const f of readdirSync(dir)) {
      const m = /^(\d+)\.json$/.exec(f);
      if (!m) continue;
      const rec = this.store.read<SnapshotRecord>(join('snapshots', f), checkRecord);
      if (!rec) continue;
      this.records.set(Number(m[1]), rec);
    }
    await this.reapplyAll();
    await this.retireOlderLayoutWhenSettled();
  }

  /**
   * After an upgrade the older layout's programs keep judging beside this one's (both must
   * pass a packet), so nothing runs unenforced while this layout is filled. They are
   * retired once every configured service is bound here and has its policy applied; a
   * service that failed to bind or apply, or has no policy yet, keeps the old layout in
   * place (stricter, never looser) until it does.
   */
  private async retireOlderLayoutWhenSettled(): Promise<void> {
    const dp = this.datapath;
    if (!dp || dp.olderLayout === null) return;
    const waiting = [...this.services.values()].filter((v) => !v.bound || !this.settled.has(v.service_id)).map((v) => v.service_id);
    if (waiting.length > 0) {
      this.log.warn('older datapath layout kept beside this one until every service is enforced here', { older_layout: dp.olderLayout, waiting_services: waiting });
      return;
    }
    const older = dp.olderLayout;
    try {
      const links = await dp.retireOlderLayout();
      this.log.info('older datapath layout retired', { older_layout: older, links_detached: links });
    } catch (e) {
      this.log.error('cannot retire the older datapath layout', { older_layout: older, error: (e as Error).message });
    }
  }

  setFeatures(features: Feature[]): Promise<void> {
    this.features = features;
    return this.reapplyAll();
  }

  modeOf(rec: SnapshotRecord): DatapathMode {
    return rec.stage === 'enforce' && this.features.includes('segmentation_enforce') ? 'enforce' : 'observe';
  }

  private expiresAt(rec: SnapshotRecord): number {
    return Date.parse(rec.received_at) + rec.snapshot.ttl_seconds * 1000;
  }

  private async reapplyAll(): Promise<void> {
    for (const rec of [...this.records.values()]) {
      try {
        await this.enforce(rec);
      } catch (e) {
        this.log.error('cannot apply cached snapshot', { service_id: rec.snapshot.service_id, error: (e as Error).message });
      }
    }
  }

  /** Puts a record into the kernel (or withdraws it if its TTL already ran out). */
  private async enforce(rec: SnapshotRecord): Promise<void> {
    const id = rec.snapshot.service_id;
    const expiresAt = this.expiresAt(rec);
    if (expiresAt <= Date.now()) {
      await this.expire(id);
      this.settled.add(id);
      return;
    }
    this.armExpiry(id, expiresAt);
    if (!this.datapath || !this.services.get(id)?.bound) return;
    const mode = this.modeOf(rec);
    const prev = this.applied.get(id);
    const generation = prev && prev.snapshot === rec.snapshot && prev.mode === mode ? prev.generation : this.newGeneration();
    const started = performance.now();
    await this.datapath.apply(id, rec.snapshot, { mode, expiresAt, generation, onExpiry: this.config.expiry_behaviour });
    this.lastApply.set(id, { seconds: (performance.now() - started) / 1000, at: Date.now() });
    this.applied.set(id, { snapshot: rec.snapshot, mode, generation });
    const gens = this.generationRevisions.get(id) ?? new Map<number, number>();
    gens.delete(generation);
    gens.set(generation, rec.revision);
    while (gens.size > GENERATIONS_KEPT) gens.delete(gens.keys().next().value as number);
    this.generationRevisions.set(id, gens);
    this.settled.add(id);
  }

  /** Unique and increasing across restarts (milliseconds since the epoch, or one more than the last). */
  private newGeneration(): number {
    this.lastGeneration = Math.max(Date.now(), this.lastGeneration + 1);
    return this.lastGeneration;
  }

  /** The snapshot revision a service's policy of `generation` was (null: not one this agent applied). */
  revisionOf(serviceId: number, generation: number): number | null {
    return this.generationRevisions.get(serviceId)?.get(generation) ?? null;
  }

  /** New flows per deciding rule under the service's policy in force (null without a datapath). */
  async ruleCounters(serviceId: number): Promise<RuleCounters | null> {
    return this.datapath ? this.datapath.ruleCounters(serviceId) : null;
  }

  /** Accepts a new snapshot for a configured service: applied first, then cached. */
  async accept(snapshot: MapSnapshot, opts: { revision?: number; stage: Stage; source: string }): Promise<SnapshotRecord> {
    const id = snapshot.service_id;
    if (!this.services.has(id)) {
      throw new AgentError('BAD_REQUEST', `service ${id} is not configured on this host (configured: ${[...this.services.keys()].join(', ') || 'none'})`, { status: 404 });
    }
    const prev = this.records.get(id);
    const revision = opts.revision ?? (prev?.revision ?? 0) + 1;
    const rec: SnapshotRecord = { snapshot, revision, stage: opts.stage, received_at: new Date().toISOString(), source: opts.source };
    // Apply before caching: a snapshot the datapath rejects never replaces the cached one.
    await this.enforce(rec);
    await this.store.write(join('snapshots', `${id}.json`), rec);
    this.records.set(id, rec);
    this.log.info('snapshot applied', { service_id: id, revision, stage: rec.stage, mode: this.modeOf(rec), source: opts.source });
    await this.retireOlderLayoutWhenSettled();
    return rec;
  }

  /** The record a service runs now (for ordering incoming messages). */
  record(id: number): SnapshotRecord | null {
    return this.records.get(id) ?? null;
  }

  configuredServiceIds(): number[] {
    return [...this.services.keys()];
  }

  /**
   * The same revision published again: the TTL starts over (the server republishes what
   * is current, and that is the renewal). Nothing changes in the kernel but the expiry.
   */
  async renew(id: number): Promise<void> {
    const rec = this.records.get(id);
    if (!rec) return;
    const renewed: SnapshotRecord = { ...rec, received_at: new Date().toISOString() };
    await this.enforce(renewed);
    await this.store.write(join('snapshots', `${id}.json`), renewed);
    this.records.set(id, renewed);
  }

  /** Flow verdicts from the datapath with their revision (nothing when it is unavailable). */
  onFlow(cb: (e: AttributedFlowEvent) => void): () => void {
    return this.datapath ? this.datapath.onFlow((e) => cb({ ...e, revision: this.revisionOf(e.serviceId, e.generation) })) : () => undefined;
  }

  private armExpiry(id: number, at: number): void {
    const old = this.expiryTimers.get(id);
    if (old) clearTimeout(old);
    const t = setTimeout(() => void this.expire(id), Math.min(Math.max(0, at - Date.now()), 2 ** 31 - 1));
    t.unref();
    this.expiryTimers.set(id, t);
  }

  /** TTL ran out without renewal: the snapshot leaves the kernel and the cache. */
  async expire(id: number): Promise<void> {
    const t = this.expiryTimers.get(id);
    if (t) clearTimeout(t);
    this.expiryTimers.delete(id);
    const rec = this.records.get(id);
    this.records.delete(id);
    this.store.remove(join('snapshots', `${id}.json`));
    this.applied.delete(id);
    if (this.datapath) await this.datapath.withdraw(id).catch(() => false);
    if (rec) this.log.info('snapshot TTL expired; policy withdrawn', { service_id: id, revision: rec.revision });
  }

  async withdraw(id: number): Promise<boolean> {
    const had = this.records.has(id);
    await this.expire(id);
    return had;
  }

  serviceViews(): ServiceView[] {
    return [...this.services.values()];
  }

  async snapshotViews(): Promise<SnapshotView[]> {
    let stats: ServiceStats[] = [];
    if (this.datapath) stats = await this.datapath.stats().catch(() => []);
    const ids = new Set([...this.services.keys(), ...this.records.keys()]);
    return [...ids].sort((a, b) => a - b).map((id) => {
      const rec = this.records.get(id);
      const c = stats.find((s) => s.serviceId === id)?.counters;
      return {
        service_id: id,
        cgroup: this.services.get(id)?.cgroup ?? null,
        revision: rec?.revision ?? null,
        stage: rec?.stage ?? null,
        mode: rec ? this.modeOf(rec) : null,
        ttl_left_s: rec ? Math.max(0, Math.round((this.expiresAt(rec) - Date.now()) / 1000)) : null,
        counters: c ? { allowed: c.allowed, dropped: c.dropped, would_drop: c.wouldDrop } : null,
      };
    });
  }

  /**
   * What the metrics read at scrape time, per configured or recorded service: the record in
   * force, the kernel's counters and the per-rule counts of the generation in force (both
   * null without a datapath), and the last apply's duration.
   */
  async metricsViews(): Promise<{ services: ServiceMetricsView[]; datapathError: boolean }> {
    let stats: ServiceStats[] = [];
    let datapathError = false;
    if (this.datapath) {
      try {
        stats = await this.datapath.stats();
      } catch (e) {
        datapathError = true;
        this.log.warn('metrics: cannot read the datapath counters', { error: (e as Error).message });
      }
    }
    const ids = [...new Set([...this.services.keys(), ...this.records.keys()])].sort((a, b) => a - b);
    const out: ServiceMetricsView[] = [];
    for (const id of ids) {
      const rec = this.records.get(id);
      const st = stats.find((s) => s.serviceId === id);
      let rules: RuleCounters | null = null;
      if (this.datapath && st?.policy) {
        try {
          rules = await this.datapath.ruleCounters(id);
        } catch (e) {
          datapathError = true;
          this.log.warn('metrics: cannot read rule counters', { service_id: id, error: (e as Error).message });
        }
      }
      out.push({
        service_id: id,
        bound: this.services.get(id)?.bound ?? false,
        revision: rec?.revision ?? null,
        stage: rec?.stage ?? null,
        mode: rec ? this.modeOf(rec) : null,
        ttl_left_s: rec ? Math.max(0, (this.expiresAt(rec) - Date.now()) / 1000) : null,
        counters: st?.counters ?? null,
        rules,
        last_apply_seconds: this.lastApply.get(id)?.seconds ?? null,
      });
    }
    return { services: out, datapathError };
  }

  get datapathAvailable(): boolean {
    return this.datapath !== null;
  }

  /** Leaves pins (and so enforcement) in place for the next run. */
  async close(): Promise<void> {
    for (const t of this.expiryTimers.values()) clearTimeout(t);
    this.expiryTimers.clear();
    if (this.datapath) await this.datapath.close();
    this.datapath = null;
  }
}
