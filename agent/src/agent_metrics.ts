/**
 * aegis-agent's Prometheus metrics (prom-client, one registry per agent). Nothing is
 * polled: every family is filled by a collect callback when it is scraped. The callbacks
 * of one scrape share a single read of their sources (the datapath's per-service and
 * per-rule counters, the license, NATS, the flow log), so the kernel maps are read once
 * per scrape whatever the number of families.
 *
 * Label values are integer service ids, rule indexes and fixed words (verdicts,
 * directions, license states, modes): never hostnames, addresses or other text. The
 * families are documented in docs/observability.md, and a test holds the two equal.
 */
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { ServiceMetricsView } from './policy.js';

/** Per-rule series kept per service at one scrape (the busiest first); the rest are counted as omitted. */
export const MAX_RULE_SERIES_PER_SERVICE = 256;

/** The license states the agent can be in (licensing.ts), each exported 1 or 0. */
export const LICENSE_STATES = ['licensed', 'grace', 'community', 'activating'] as const;
const MODES = ['enforce', 'observe'] as const;

/** What one scrape reads. */
export interface AgentMetricsSnapshot {
  services: ServiceMetricsView[];
  /** null: the datapath stats could not be read at this scrape. */
  datapathError: boolean;
  datapathAvailable: boolean;
  license: {
    state: (typeof LICENSE_STATES)[number];
    /** Licensed by this host's own license or its fleet's. */
    licensed: boolean;
    /** Unix seconds at which the kernel token expires; null: no token. */
    kernelTokenExpiry: number | null;
  };
  nats: { configured: boolean; connected: boolean };
  /** Unix ms of the last status report handed to NATS; null: never. */
  lastReportAt: number | null;
  flowLog: { added: number; overwritten: number; reportLinesDropped: number };
}

export interface AgentMetricsDeps {
  version: string;
  read(): Promise<AgentMetricsSnapshot>;
}

const svc = (id: number): string => String(id);

export class AgentMetrics {
  readonly registry = new Registry();
  /** The read the current scrape's callbacks share (null between scrapes). */
  private inflight: Promise<AgentMetricsSnapshot> | null = null;

  constructor(private readonly d: AgentMetricsDeps) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    const self = this;
    /** A gauge filled from the scrape's snapshot. */
    const gauge = <L extends string>(name: string, help: string, labelNames: L[], fill: (g: Gauge<L>, s: AgentMetricsSnapshot) => void): void => {
      new Gauge<L>({
        name,
        help,
        labelNames,
        registers,
        async collect() {
          const s = await self.snapshot();
          this.reset();
          fill(this, s);
        },
      });
    };
    /**
     * A counter whose value is kept elsewhere (the kernel's maps, the agent's own tallies):
     * reset and set to the source's total at each scrape. A source that starts over (a
     * policy of a new generation, an agent restart for the agent's tallies) is a counter
     * reset, which rate() handles.
     */
    const counter = <L extends string>(name: string, help: string, labelNames: L[], fill: (set: (labels: Partial<Record<L, string>>, v: number) => void, s: AgentMetricsSnapshot) => void): void => {
      new Counter<L>({
        name,
        help,
        labelNames,
        registers,
        async collect() {
          const s = await self.snapshot();
          this.reset();
          fill((labels, v) => this.inc(labels as never, Math.max(0, v)), s);
        },
      });
    };
    const perService = (s: AgentMetricsSnapshot) => s.services.filter((v) => v.counters !== null);

    gauge('aegis_agent_info', 'Always 1; the version label names the running agent.', ['version'], (g) => g.set({ version: d.version }, 1));
    gauge('aegis_agent_license_state', 'The agent\'s own license state: 1 for the current one, 0 for the others.', ['state'], (g, s) => {
      for (const st of LICENSE_STATES) g.set({ state: st }, s.license.state === st ? 1 : 0);
    });
    gauge('aegis_agent_licensed', '1 when this host is licensed (its own license or its fleet\'s), 0 for the community edition.', [], (g, s) => g.set(s.license.licensed ? 1 : 0));
    gauge('aegis_agent_kernel_token_expiry_seconds', 'Unix time at which the current kernel token expires (NaN: no token).', [], (g, s) => g.set(s.license.kernelTokenExpiry ?? NaN));
    gauge('aegis_agent_last_report_timestamp_seconds', 'Unix time of the last status report handed to NATS (0: none yet).', [], (g, s) => g.set(s.lastReportAt === null ? 0 : s.lastReportAt / 1000));
    gauge('aegis_agent_nats_configured', '1 when NATS is configured (nats_url).', [], (g, s) => g.set(s.nats.configured ? 1 : 0));
    gauge('aegis_agent_nats_connected', '1 while connected to nats-server.', [], (g, s) => g.set(s.nats.connected ? 1 : 0));
    gauge('aegis_agent_datapath_available', '1 when the eBPF datapath is open (enforcement possible).', [], (g, s) => g.set(s.datapathAvailable ? 1 : 0));
    gauge('aegis_agent_snapshot_revision', 'Revision of the snapshot each service runs (absent: none).', ['service'], (g, s) => {
      for (const v of s.services) if (v.revision !== null) g.set({ service: svc(v.service_id) }, v.revision);
    });
    gauge('aegis_agent_snapshot_mode', 'The mode of each service\'s snapshot: 1 for the current mode (enforce or observe), 0 for the other.', ['service', 'mode'], (g, s) => {
      for (const v of s.services) if (v.mode !== null) for (const m of MODES) g.set({ service: svc(v.service_id), mode: m }, v.mode === m ? 1 : 0);
    });
    gauge('aegis_agent_snapshot_ttl_seconds', 'Seconds left before each service\'s current snapshot lapses.', ['service'], (g, s) => {
      for (const v of s.services) if (v.ttl_left_s !== null) g.set({ service: svc(v.service_id) }, v.ttl_left_s);
    });
    gauge('aegis_agent_last_apply_duration_seconds', 'Duration of the last policy apply into the datapath (build beside, swap in), per service.', ['service'], (g, s) => {
      for (const v of s.services) if (v.last_apply_seconds !== null) g.set({ service: svc(v.service_id) }, v.last_apply_seconds);
    });
    gauge('aegis_agent_service_bound', '1 when the service\'s cgroup is bound to the datapath.', ['service'], (g, s) => {
      for (const v of s.services) g.set({ service: svc(v.service_id) }, v.bound ? 1 : 0);
    });
    counter('aegis_agent_service_packets_total', 'Packets judged against policy per service: allow (first packets of new flows a rule allowed), deny (dropped), would_deny (observe mode let through).', ['service', 'verdict'], (set, s) => {
      for (const v of perService(s)) {
        const c = v.counters!;
        set({ service: svc(v.service_id), verdict: 'allow' }, c.allowed);
        set({ service: svc(v.service_id), verdict: 'deny' }, c.dropped);
        set({ service: svc(v.service_id), verdict: 'would_deny' }, c.wouldDrop);
      }
    });
    counter('aegis_agent_service_tracked_packets_total', 'Packets passed without judging: of a tracked flow (kind flow) or its replies (kind reply).', ['service', 'kind'], (set, s) => {
      for (const v of perService(s)) {
        set({ service: svc(v.service_id), kind: 'flow' }, v.counters!.bypassed);
        set({ service: svc(v.service_id), kind: 'reply' }, v.counters!.replies);
      }
    });
    const serviceCounter = (name: string, help: string, pick: (c: NonNullable<ServiceMetricsView['counters']>) => number): void =>
      counter(name, help, ['service'], (set, s) => {
        for (const v of perService(s)) set({ service: svc(v.service_id) }, pick(v.counters!));
      });
    serviceCounter('aegis_agent_service_expired_packets_total', 'Packets seen while the service\'s policy was past its expiry.', (c) => c.expired);
    serviceCounter('aegis_agent_service_flows_cut_total', 'Tracked flows a policy of a newer generation no longer allowed.', (c) => c.cut);
    serviceCounter('aegis_agent_service_unparsed_packets_total', 'Packets whose headers could not be walked (also in the deny or would_deny count).', (c) => c.unparsed);
    serviceCounter('aegis_agent_flow_events_total', 'Flow events the datapath emitted to the ring buffer, per service.', (c) => c.events);
    serviceCounter('aegis_agent_flow_events_lost_total', 'Flow events suppressed by the rate cap or a full ring buffer, per service.', (c) => c.eventsLost);
    serviceCounter('aegis_agent_rule_counts_lost_total', 'New flows the full per-rule counter map could not count, per service.', (c) => c.ruleCountsLost);
    counter('aegis_agent_rule_flows_total', 'New flows per deciding rule under the policy generation in force (a new generation starts over): direction egress (index in edges) or ingress (index in allow_cidrs).', ['service', 'direction', 'rule'], (set, s) => {
      for (const v of s.services) {
        for (const r of keptRules(v)) set({ service: svc(v.service_id), direction: r.direction, rule: String(r.index) }, r.count);
      }
    });
    counter('aegis_agent_rule_unmatched_flows_total', 'New flows no rule allowed (denied, or would-drop in observe) under the policy generation in force.', ['service'], (set, s) => {
      for (const v of s.services) if (v.rules && v.rules.generation !== null) set({ service: svc(v.service_id) }, v.rules.noRule);
    });
    gauge('aegis_agent_metrics_series_omitted', 'Series left out of a bounded family at this scrape (rule_flows: past the per-service bound).', ['family'], (g, s) => {
      g.set({ family: 'rule_flows' }, s.services.reduce((n, v) => n + Math.max(0, (v.rules?.rules.length ?? 0) - MAX_RULE_SERIES_PER_SERVICE), 0));
    });
    gauge('aegis_agent_metrics_datapath_read_failed', '1 when reading the datapath counters failed at this scrape (its families are then empty).', [], (g, s) => g.set(s.datapathError ? 1 : 0));
    counter('aegis_agent_flow_log_entries_total', 'Flow events the agent received into its flow log since start.', [], (set, s) => set({}, s.flowLog.added));
    counter('aegis_agent_flow_log_overwritten_total', 'Flow log entries pushed out of the bounded ring since start.', [], (set, s) => set({}, s.flowLog.overwritten));
    counter('aegis_agent_flow_report_lines_dropped_total', 'Flow report lines left out (over the per-report cap or the interval\'s key bound) since start.', [], (set, s) => set({}, s.flowLog.reportLinesDropped));
  }

  /** The sources, read once for every callback of the scrape in progress. */
  private snapshot(): Promise<AgentMetricsSnapshot> {
    if (this.inflight) return this.inflight;
    const p = this.d.read();
    this.inflight = p;
    const done = (): void => {
      if (this.inflight === p) this.inflight = null;
    };
    p.then(done, done);
    return p;
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The exposition text: every family's collect callback runs now. */
  scrape(): Promise<string> {
    return this.registry.metrics();
  }
}

/** A service's per-rule counts, the busiest MAX_RULE_SERIES_PER_SERVICE. */
function keptRules(v: ServiceMetricsView): Array<{ direction: string; index: number; count: number }> {
  const rules = v.rules?.rules ?? [];
  if (rules.length <= MAX_RULE_SERIES_PER_SERVICE) return rules;
  return [...rules].sort((a, b) => b.count - a.count).slice(0, MAX_RULE_SERIES_PER_SERVICE);
}
