/**
 * Segmentation policy from the control plane: signed snapshot messages arrive over NATS
 * (aegis.seg.maps.<host>.<svc> and _all.<svc>, last values via Direct Get) or, when NATS
 * is unreachable, from the server's HTTP fallback. Both paths end in accept(): verify
 * the signature against the server's keys, check the target and exp, order by
 * (revision, stage, iat) against the saved floor (seg_floor.ts) so nothing older than what
 * was last accepted is obeyed, even after a restart, then apply, renew or withdraw, and ack.
 *
 * Also reports to the server: status every interval, acks per applied revision, and every
 * verdict of the datapath (allowed with its rule, denied, would-drop, cut, unparsed; both
 * directions, every protocol), aggregated per interval, for the segmenter and the flow view.
 */
import {
  ALL_HOSTS,
  AUD_SEG_MAP,
  AUD_SNAPSHOTS_PROOF,
  SEG_EXP_LEEWAY_SECONDS,
  signHostProof,
  type AgentAck,
  type AgentFlowLine,
  type AgentStatusReport,
  type MapSnapshot,
  type SegMapClaims,
  type Stage,
} from '../../protocol/src/index.js';
import { entryOf } from './flow_log.js';
import type { JwksCache } from './jwks_cache.js';
import type { LicenseManager } from './licensing.js';
import type { Logger } from './logger.js';
import type { AgentBus } from './nats/agent_bus.js';
import type { AttributedFlowEvent, PolicyManager } from './policy.js';
import type { ServerLink } from './server_link.js';
import { compareFloor, SegFloor, type FloorEntry } from './seg_floor.js';
import type { StateStore } from './state_store.js';

export interface SegClientDeps {
  /** This host's hostname: a label in reports (the machine id is the identity). */
  host: string;
  /** The HTTP fallback for snapshots goes through the agent's one link to the server. */
  link: ServerLink;
  policy: PolicyManager;
  /** Holds the replay floor (seg_floor.json). */
  store: StateStore;
  jwks: JwksCache;
  license: LicenseManager;
  edition: () => { edition: 'licensed' | 'community'; tier: AgentStatusReport['tier'] };
  log: Logger;
  /** Whether the host clock was set back (clock_guard.ts), for the status report. */
  clock?: () => { clock_tampered: boolean; behind_seconds: number };
  agentVersion: string;
  statusIntervalMs: number;
  fallbackIntervalMs: number;
  /** Lines per flow report (one report per service and revision); default MAX_FLOW_LINES_PER_REPORT. */
  maxFlowLines?: number;
}

/** Lines one flow report carries at most; the rest of an interval's distinct flows are counted in flowLinesDropped. */
export const MAX_FLOW_LINES_PER_REPORT = 1000;
/** Distinct aggregation keys held per interval (all services together). */
const MAX_FLOW_KEYS = 10_000;

interface FlowKey {
  service_id: number;
  revision: number | null;
  line: Omit<AgentFlowLine, 'count'>;
}

/** Snapshot messages in (NATS or the HTTP fallback), acks, status and denied flows out. */
export class SegClient {
  private bus: AgentBus | null = null;
  private readonly floor: SegFloor;
  private statusTimer: NodeJS.Timeout | null = null;
  private fallbackTimer: NodeJS.Timeout | null = null;
  private flowCounts = new Map<string, { key: FlowKey; count: number }>();
  private flowIntervalStart = new Date();
  /** Flow lines left out since start: over the per-report cap, or past the key bound of an interval. */
  flowLinesDropped = 0;
  private stopFlows: (() => void) | null = null;
  lastSource: 'nats' | 'http' | null = null;
  /** When the last status report was handed to NATS without error (ms since the epoch); null: never. */
  lastReportAt: number | null = null;
  lastFallbackAt: string | null = null;
  lastFallbackError: string | null = null;

  constructor(private readonly d: SegClientDeps) {
    this.floor = new SegFloor(d.store);
    // The policy cache lifts the floor where it is ahead (a cache older than the floor file,
    // or a stop between applying a message and saving the floor); a local snapshot (control
    // socket) never does.
    for (const id of d.policy.configuredServiceIds()) {
      const r = d.policy.record(id);
      if (r && r.source !== 'local') this.floor.seed(id, { revision: r.revision, stage: r.stage, iat: 0 });
    }
  }

  /** Handles one signed message from either path. Never throws: bad input is logged. */
  async accept(jws: string, source: 'nats' | 'http'): Promise<void> {
    let c: Partial<SegMapClaims>;
    try {
      c = (await this.d.jwks.verify(jws)) as Partial<SegMapClaims>;
    } catch (e) {
      this.d.log.warn('rejected a snapshot message: signature', { source, reason: (e as Error).message });
      return;
    }
    const reject = (reason: string): void => {
      this.d.log.warn('rejected a snapshot message', { source, reason, service_id: c.service_id, revision: c.revision });
    };
    if (c.aud !== AUD_SEG_MAP) return reject('not a snapshot message');
    // Addressed by machine id: a message for another machine (even one of the same hostname) is refused.
    if (c.target !== ALL_HOSTS && (c.target === undefined || c.target !== this.d.license.machineId)) return reject(`addressed to ${String(c.target)}`);
    if (!Number.isInteger(c.service_id) || !Number.isInteger(c.revision) || !Number.isInteger(c.iat)) return reject('incomplete claims');
    if (typeof c.exp !== 'number' || !Number.isFinite(c.exp)) return reject('no exp: a message that never expires is refused');
    const now = Math.floor(Date.now() / 1000);
    if (now > c.exp + SEG_EXP_LEEWAY_SECONDS) return reject(`expired at ${new Date(c.exp * 1000).toISOString()} (${now - c.exp} s ago): replay refused`);
    if (c.stage !== 'canary' && c.stage !== 'enforce') return reject('bad stage');
    const id = c.service_id as number;
    if (!this.d.policy.configuredServiceIds().includes(id)) return; // not a service of this host
    if (c.snapshot !== null && (typeof c.snapshot !== 'object' || c.snapshot?.service_id !== id)) return reject('snapshot does not match its service');
    const prev = this.floor.get(id);
    const revision = c.revision as number;
    const iat = c.iat as number;
    const entry: FloorEntry = { revision, stage: c.stage, iat };
    if (prev) {
      const cmp = compareFloor(entry, prev);
      // The very message already accepted (a NATS redelivery, a second fallback answer within
      // the same second): nothing new, nothing to refuse loudly.
      if (cmp === 0) return;
      if (cmp < 0) return reject(`not newer than the last accepted (revision ${prev.revision} ${prev.stage}, iat ${prev.iat}): replay or rollback refused`);
    }
    this.lastSource = source;
    const rec = this.d.policy.record(id);
    // A local snapshot is its own namespace: a server message never "renews" it.
    const current = rec && rec.source !== 'local' ? rec : null;
    try {
      if (c.snapshot === null) {
        await this.d.policy.withdraw(id);
      } else if (current && current.revision === revision && current.stage === c.stage) {
        await this.d.policy.renew(id);
      } else {
        await this.d.policy.accept(c.snapshot as MapSnapshot, { revision, stage: c.stage as Stage, source });
      }
      await this.floor.raise(id, entry);
      if (!current || current.revision !== revision || current.stage !== c.stage) await this.ack(id, revision, c.stage as Stage, null);
    } catch (e) {
      this.d.log.error('cannot apply snapshot', { service_id: id, revision, error: (e as Error).message });
      await this.ack(id, revision, c.stage as Stage, (e as Error).message);
    }
  }

  private async ack(serviceId: number, revision: number, stage: Stage, error: string | null): Promise<void> {
    const rec = this.d.policy.record(serviceId);
    const ack: AgentAck = {
      host: this.d.host,
      service_id: serviceId,
      revision,
      stage,
      mode: rec ? this.d.policy.modeOf(rec) : 'observe',
      ok: error === null,
      error,
      applied_at: new Date().toISOString(),
    };
    if (this.bus?.machine) await this.bus.publishAck(ack).catch(() => undefined);
  }

  /** Attaches a (connected or reconnecting) NATS bus: subscriptions and last values. */
  async attachBus(bus: AgentBus): Promise<void> {
    this.bus = bus;
    await bus.watchSegMaps(this.d.policy.configuredServiceIds(), (_subject, data) => void this.accept(data, 'nats'));
  }

  /** The bus is being replaced (new credentials): stop using it. */
  async detachBus(): Promise<void> {
    this.bus = null;
  }

  async servicesChanged(): Promise<void> {
    await this.bus?.setServiceIds(this.d.policy.configuredServiceIds());
  }

  /** The HTTP fallback: only when NATS is not connected, and only for an activated host. */
  async pollFallback(): Promise<void> {
    if (this.bus?.isConnected()) return;
    const identity = this.d.license.proofMaterial();
    const machineId = this.d.license.machineId;
    if (!identity || machineId === null) return;
    try {
      // The mTLS agent listener first (the link decides); the host-proof route stays the fallback.
      const body = await this.d.link.snapshots(machineId, () => signHostProof(identity.privateKey, { aud: AUD_SNAPSHOTS_PROOF, hwid: identity.hardwareId }));
      for (const m of body.messages) if (typeof m === 'string') await this.accept(m, 'http');
      this.lastFallbackAt = new Date().toISOString();
      this.lastFallbackError = null;
    } catch (e) {
      if (this.lastFallbackError !== (e as Error).message) this.d.log.warn('HTTP snapshot fallback failed', { error: (e as Error).message });
      this.lastFallbackError = (e as Error).message;
    }
  }

  /** Counts one verdict under (service, revision, direction, verdict, proto, remote, port, rule, reason). */
  onFlow(e: AttributedFlowEvent): void {
    const en = entryOf(e);
    const line: FlowKey['line'] = { dst: en.remote, proto: en.proto, port: en.port, verdict: en.verdict, direction: en.direction, rule: en.rule, reason: en.reason };
    const k = JSON.stringify([en.service_id, en.revision, line.direction, line.verdict, line.proto, line.dst, line.port, line.rule, line.reason]);
    const cur = this.flowCounts.get(k);
    if (cur) cur.count++;
    else if (this.flowCounts.size < MAX_FLOW_KEYS) this.flowCounts.set(k, { key: { service_id: en.service_id, revision: en.revision, line }, count: 1 });
    else this.flowLinesDropped++;
  }

  /** The interval's aggregate, one report per (service, revision), each capped; resets the interval. */
  takeFlowReports(now = new Date()): Array<{ service_id: number; revision: number | null; interval: { start: string; end: string }; flows: AgentFlowLine[] }> {
    const interval = { start: this.flowIntervalStart.toISOString(), end: now.toISOString() };
    const groups = new Map<string, { service_id: number; revision: number | null; flows: AgentFlowLine[] }>();
    for (const { key, count } of this.flowCounts.values()) {
      const g = `${key.service_id}|${key.revision}`;
      const group = groups.get(g) ?? { service_id: key.service_id, revision: key.revision, flows: [] };
      group.flows.push({ ...key.line, count });
      groups.set(g, group);
    }
    this.flowCounts = new Map();
    this.flowIntervalStart = now;
    const cap = this.d.maxFlowLines ?? MAX_FLOW_LINES_PER_REPORT;
    return [...groups.values()].map((g) => {
      // Over the cap the busiest lines stay: they say the most about the interval.
      if (g.flows.length > cap) {
        g.flows.sort((a, b) => b.count - a.count);
        this.flowLinesDropped += g.flows.length - cap;
        g.flows = g.flows.slice(0, cap);
      }
      return { ...g, interval };
    });
  }

  async report(): Promise<void> {
    const bus = this.bus;
    // Reports are filed under the machine id the bus speaks for; before activation there is none.
    if (!bus || !bus.isConnected() || bus.machine === null) return;
    const views = await this.d.policy.snapshotViews();
    const e = this.d.edition();
    const status: AgentStatusReport = {
      host: this.d.host,
      machine_id: this.d.license.machineId,
      agent_version: this.d.agentVersion,
      edition: e.edition,
      tier: e.tier,
      datapath: { available: this.d.policy.datapathAvailable, reason: this.d.policy.datapathAvailable ? null : this.d.policy.datapathReason },
      services: views.map((v) => ({ service_id: v.service_id, revision: v.revision, stage: v.stage, mode: v.mode, ttl_left_s: v.ttl_left_s, counters: v.counters })),
      license_state: this.d.license.state,
      grace_ends_at: this.d.license.graceEndsAt?.toISOString() ?? null,
      ...(this.d.clock ? { clock: this.d.clock() } : {}),
      sent_at: new Date().toISOString(),
    };
    await bus.publishStatus(status).then(
      () => {
        this.lastReportAt = Date.now();
      },
      () => undefined,
    );
    if (this.flowCounts.size === 0) return;
    const before = this.flowLinesDropped;
    for (const r of this.takeFlowReports()) {
      await bus.publishFlows({ host: this.d.host, ...r, sent_at: new Date().toISOString() }).catch(() => undefined);
    }
    if (this.flowLinesDropped > before) this.d.log.warn('flow report lines over the cap were left out', { dropped: this.flowLinesDropped - before, total: this.flowLinesDropped });
  }

  start(): void {
    this.flowIntervalStart = new Date();
    this.stopFlows = this.d.policy.onFlow((e) => this.onFlow(e));
    this.statusTimer = setInterval(() => void this.report(), this.d.statusIntervalMs);
    this.statusTimer.unref();
    this.fallbackTimer = setInterval(() => void this.pollFallback(), this.d.fallbackIntervalMs);
    this.fallbackTimer.unref();
  }

  async stop(): Promise<void> {
    if (this.statusTimer) clearInterval(this.statusTimer);
    if (this.fallbackTimer) clearInterval(this.fallbackTimer);
    this.stopFlows?.();
    const bus = this.bus;
    this.bus = null;
    await bus?.close().catch(() => undefined);
  }
}
