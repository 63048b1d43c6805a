/**
 * The server's Prometheus metrics (prom-client, one registry per server). Counters move
 * as requests are answered (HTTP by route pattern, validations, activations,
 * deactivations); gauges are read at scrape time from readiness, the NATS bus and the
 * database. Every label value is from a fixed vocabulary (codes, methods, route
 * patterns) or an id of a fixed shape (license UUID, machine id, integer service id):
 * never free text such as a customer's name or a raw path. Per-entity families are
 * bounded to `maxSeries` series each; aegis_server_metrics_series_omitted says how many
 * were left out. An unlabelled gauge whose source could not be read is NaN (unknown), not 0.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { sql, type Kysely } from 'kysely';
import { ALL_HOSTS, VALIDATION_CODES, isMachineId, type ErrorCode, type ValidationCode } from '../../protocol/src/index.js';
import type { Database } from './db/schema.js';
import { iso, type Clock } from './clock.js';
import { DEFAULT_METRICS_MAX_SERIES } from './config.js';
import type { Health, Readiness } from './health.js';
import { UNMATCHED_ROUTE, type RequestObserver } from './http/http_server.js';
import { STATUS_OF } from './http/status.js';
import type { LifecycleObserver } from './machine_lifecycle.js';
import type { BusErrorCode, PublishKind } from './nats/server_bus.js';
import { usableLicense } from './usable_license.js';

/** The label value standing for anything outside a label's vocabulary. */
export const OTHER_LABEL = 'OTHER';

const METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);
const VALIDATION_CODE_SET: ReadonlySet<string> = new Set(VALIDATION_CODES);
const ERROR_CODE_SET: ReadonlySet<string> = new Set(Object.keys(STATUS_OF));
/** What a route pattern is made of: path segments and `:name` parameters, nothing else. */
const ROUTE_PATTERN = /^\/[A-Za-z0-9._~:/-]{0,199}$/;
const LICENSE_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

const inVocabulary = (value: string, vocabulary: ReadonlySet<string>): string => (vocabulary.has(value) ? value : OTHER_LABEL);

/** The NATS bus as the metrics see it: configured, connected, and its failed publishes so far. */
export interface BusState {
  configured: boolean;
  connected: boolean;
  publishFailures: Array<{ kind: PublishKind; code: BusErrorCode; count: number }>;
}

export interface MetricsDeps {
  db: Kysely<Database>;
  clock: Clock;
  health: Health;
  bus: () => BusState;
  version: string;
  maxSeries?: number;
}

/** The bounded per-entity families. */
type Family = 'license_seats' | 'agent_last_seen' | 'snapshot_services';

export class ServerMetrics implements LifecycleObserver {
  readonly registry = new Registry();
  private readonly maxSeries: number;

  private readonly httpRequests: Counter<'method' | 'route' | 'status'>;
  private readonly httpDuration: Histogram<'method' | 'route'>;
  private readonly validations: Counter<'code'>;
  private readonly activations: Counter<'outcome'>;
  private readonly deactivations: Counter<'outcome'>;
  private readonly natsPublishErrors: Counter<'kind' | 'code'>;
  private readonly collectionFailures: Counter<'source'>;
  private readonly gauges: Record<string, Gauge<string>> = {};

  constructor(private readonly d: MetricsDeps) {
    this.maxSeries = d.maxSeries ?? DEFAULT_METRICS_MAX_SERIES;
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.httpRequests = new Counter({ name: 'aegis_server_http_requests_total', help: 'HTTP requests answered, by method, route pattern and status.', labelNames: ['method', 'route', 'status'], registers });
    this.httpDuration = new Histogram({
      name: 'aegis_server_http_request_duration_seconds',
      help: 'Time from a request arriving to its reply being written, by method and route pattern.',
      labelNames: ['method', 'route'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.validations = new Counter({ name: 'aegis_server_license_validations_total', help: 'License token validations (POST /api/v1/licenses/validate), by result code.', labelNames: ['code'], registers });
    this.activations = new Counter({ name: 'aegis_server_activations_total', help: 'Activations, by outcome: created, reactivated, or the refusal code.', labelNames: ['outcome'], registers });
    this.deactivations = new Counter({ name: 'aegis_server_deactivations_total', help: 'Machine deactivations, by outcome: ok, or the refusal code.', labelNames: ['outcome'], registers });
    this.natsPublishErrors = new Counter({ name: 'aegis_server_nats_publish_errors_total', help: 'Failed NATS publishes, by what was published (seg_map, license) and the bus error code.', labelNames: ['kind', 'code'], registers });
    this.collectionFailures = new Counter({ name: 'aegis_server_metrics_collection_failures_total', help: 'Scrapes whose reading of a source failed (its gauges are absent from that scrape).', labelNames: ['source'], registers });
    // Every code exists from the start, so rate() and ratios are defined before the first event.
    for (const c of VALIDATION_CODES) this.validations.inc({ code: c }, 0);
    for (const o of ['created', 'reactivated']) this.activations.inc({ outcome: o }, 0);
    this.deactivations.inc({ outcome: 'ok' }, 0);

    const gauge = (name: string, help: string, labelNames: string[] = []): void => {
      this.gauges[name] = new Gauge({ name, help, labelNames, registers });
    };
    gauge('aegis_server_info', 'Always 1; the version label names the running server.', ['version']);
    gauge('aegis_server_ready', '1 when every readiness check passes (what /readyz answers 200 for), else 0.');
    gauge('aegis_server_readiness_check', 'Each readiness check: 1 passing, 0 failing.', ['check']);
    gauge('aegis_server_database_up', '1 when the database answered a ping within the readiness timeout.');
    gauge('aegis_server_database_ping_duration_seconds', 'Duration of the scrape-time database ping (NaN when it failed).');
    gauge('aegis_server_migrations_pending', 'Migrations this server knows that the database has not run.');
    gauge('aegis_server_signing_key_loaded', '1 when the active signing key loads.');
    gauge('aegis_server_signing_key_age_seconds', 'Seconds since the active signing key was created.');
    gauge('aegis_server_nats_configured', '1 when NATS is configured (NATS_URL).');
    gauge('aegis_server_nats_connected', '1 while connected to nats-server.');
    gauge('aegis_server_license_seats_used', 'Active machines on a license (the licenses fullest by used/limit, at most max-series).', ['license']);
    gauge('aegis_server_license_seats_limit', 'Seat limit (max_machines) of the licenses in aegis_server_license_seats_used.', ['license']);
    gauge('aegis_server_seats_used', 'Active machines over every usable license (aggregate, never truncated).');
    gauge('aegis_server_seats_limit', 'Seat limits summed over every usable license (aggregate, never truncated).');
    gauge('aegis_server_agent_last_seen_timestamp_seconds', 'Unix time of the last report of an active machine\'s agent (the stalest agents, at most max-series).', ['machine']);
    gauge('aegis_server_agents_reporting', 'Active machines whose agent has reported at least once.');
    gauge('aegis_server_snapshot_targets', 'Current snapshot targets (a machine, or every host) per service and rollout stage.', ['service', 'stage']);
    gauge('aegis_server_snapshot_unacked', 'Targeted agents that have not acknowledged applying their service\'s current revision.', ['service']);
    gauge('aegis_server_snapshot_last_published_timestamp_seconds', 'Unix time of the oldest last publication among a service\'s current targets (TTL renewal).', ['service']);
    gauge('aegis_server_metrics_series_omitted', 'Series left out of a bounded family at the last scrape.', ['family']);
    this.gauges.aegis_server_info!.set({ version: d.version }, 1);
  }

  // --- events -------------------------------------------------------------------------

  /** The HTTP listeners' hook: one observation per answered request. */
  readonly observeRequest: RequestObserver = ({ method, route, status, seconds }) => {
    const m = inVocabulary(method.toUpperCase(), METHODS);
    const r = route === UNMATCHED_ROUTE || ROUTE_PATTERN.test(route) ? route : OTHER_LABEL;
    const s = Number.isInteger(status) && status >= 100 && status <= 599 ? String(status) : OTHER_LABEL;
    this.httpRequests.inc({ method: m, route: r, status: s });
    this.httpDuration.observe({ method: m, route: r }, seconds);
  };

  validated(code: ValidationCode): void {
    this.validations.inc({ code: inVocabulary(code, VALIDATION_CODE_SET) });
  }

  activated(outcome: 'created' | 'reactivated' | ErrorCode): void {
    this.activations.inc({ outcome: outcome === 'created' || outcome === 'reactivated' ? outcome : inVocabulary(outcome, ERROR_CODE_SET) });
  }

  deactivated(outcome: 'ok' | ErrorCode): void {
    this.deactivations.inc({ outcome: outcome === 'ok' ? outcome : inVocabulary(outcome, ERROR_CODE_SET) });
  }

  // --- scrape -------------------------------------------------------------------------

  get contentType(): string {
    return this.registry.contentType;
  }

  /** Reads the scrape-time sources, then renders the exposition text. */
  async scrape(): Promise<string> {
    const readiness = await this.d.health.readiness();
    this.setReadiness(readiness);
    this.setBus();
    for (const name of [
      'aegis_server_license_seats_used',
      'aegis_server_license_seats_limit',
      'aegis_server_seats_used',
      'aegis_server_seats_limit',
      'aegis_server_agent_last_seen_timestamp_seconds',
      'aegis_server_agents_reporting',
      'aegis_server_snapshot_targets',
      'aegis_server_snapshot_unacked',
      'aegis_server_snapshot_last_published_timestamp_seconds',
      'aegis_server_metrics_series_omitted',
    ]) {
      this.gauges[name]!.reset();
    }
    for (const name of ['aegis_server_seats_used', 'aegis_server_seats_limit', 'aegis_server_agents_reporting']) this.gauges[name]!.set(NaN);
    // Without the database its gauges are left out, not shown stale.
    if (readiness.checks.database.ok) {
      await this.fromDatabase('seats', () => this.setSeats());
      await this.fromDatabase('agents', () => this.setAgents());
      await this.fromDatabase('snapshots', () => this.setSnapshots());
    }
    return this.registry.metrics();
  }

  private async fromDatabase(source: string, read: () => Promise<void>): Promise<void> {
    try {
      await read();
    } catch {
      this.collectionFailures.inc({ source });
    }
  }

  private omitted(family: Family, n: number): void {
    this.gauges.aegis_server_metrics_series_omitted!.set({ family }, Math.max(0, n));
  }

  private setReadiness(r: Readiness): void {
    const g = this.gauges;
    g.aegis_server_ready!.set(r.ready ? 1 : 0);
    for (const [check, c] of Object.entries(r.checks)) g.aegis_server_readiness_check!.set({ check }, c.ok ? 1 : 0);
    g.aegis_server_database_up!.set(r.checks.database.ok ? 1 : 0);
    g.aegis_server_database_ping_duration_seconds!.set(r.databasePingSeconds ?? NaN);
    g.aegis_server_migrations_pending!.set(r.pendingMigrations ?? NaN);
    g.aegis_server_signing_key_loaded!.set(r.checks.signing_key.ok ? 1 : 0);
    g.aegis_server_signing_key_age_seconds!.set(r.signingKeyAgeSeconds ?? NaN);
  }

  private setBus(): void {
    const b = this.d.bus();
    this.gauges.aegis_server_nats_configured!.set(b.configured ? 1 : 0);
    this.gauges.aegis_server_nats_connected!.set(b.connected ? 1 : 0);
    // The bus keeps monotonic counts; the counter is set to them (reset, then add).
    this.natsPublishErrors.reset();
    for (const f of b.publishFailures) {
      this.natsPublishErrors.inc({ kind: f.kind, code: f.code }, f.count);
    }
  }

  /** Usable licenses: not revoked, not past their expiry. */
  private usable(now: string) {
    return this.d.db.selectFrom('licenses').where(usableLicense(now));
  }

  private async setSeats(): Promise<void> {
    const now = iso(this.d.clock.now());
    const limits = await this.usable(now)
      .select((eb) => [eb.fn.coalesce(eb.fn.sum<number>('licenses.max_machines'), sql<number>`0`).as('limit'), eb.fn.countAll<number>().as('n')])
      .executeTakeFirstOrThrow();
    const byLicense = this.usable(now)
      .innerJoin('machines', 'machines.license_id', 'licenses.id')
      .where('machines.status', '=', 'active');
    const used = await byLicense.select((eb) => eb.fn.countAll<number>().as('used')).executeTakeFirstOrThrow();
    const holding = await byLicense.select((eb) => eb.fn.count<number>('licenses.id').distinct().as('n')).executeTakeFirstOrThrow();
    // The fullest licenses first: those are the ones about to refuse activations.
    const top = await byLicense
      .select(['licenses.id as id', 'licenses.max_machines as max_machines', (eb) => eb.fn.countAll<number>().as('used')])
      .groupBy(['licenses.id', 'licenses.max_machines'])
      .orderBy(sql`count(*) * 1.0 / licenses.max_machines`, 'desc')
      .orderBy('licenses.id')
      .limit(this.maxSeries)
      .execute();
    this.gauges.aegis_server_seats_used!.set(Number(used.used));
    this.gauges.aegis_server_seats_limit!.set(Number(limits.limit));
    let shown = 0;
    for (const row of top) {
      if (!LICENSE_ID.test(row.id)) continue;
      this.gauges.aegis_server_license_seats_used!.set({ license: row.id }, Number(row.used));
      this.gauges.aegis_server_license_seats_limit!.set({ license: row.id }, Number(row.max_machines));
      shown++;
    }
    this.omitted('license_seats', Number(holding.n) - shown);
  }

  private async setAgents(): Promise<void> {
    const active = this.d.db
      .selectFrom('agents')
      .innerJoin('machines', 'machines.id', 'agents.machine_id')
      .where('machines.status', '=', 'active');
    const { n } = await active.select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
    // The stalest first: a silent agent is always among the series kept.
    const rows = await active
      .select(['agents.machine_id as machine_id', 'agents.last_seen_at as last_seen_at'])
      .orderBy('agents.last_seen_at')
      .orderBy('agents.machine_id')
      .limit(this.maxSeries)
      .execute();
    let shown = 0;
    for (const r of rows) {
      const t = new Date(r.last_seen_at).getTime();
      if (!isMachineId(r.machine_id) || Number.isNaN(t)) continue;
      this.gauges.aegis_server_agent_last_seen_timestamp_seconds!.set({ machine: r.machine_id }, t / 1000);
      shown++;
    }
    this.gauges.aegis_server_agents_reporting!.set(Number(n));
    this.omitted('agent_last_seen', Number(n) - shown);
  }

  private async setSnapshots(): Promise<void> {
    const current = await this.d.db
      .selectFrom('seg_current')
      .innerJoin('seg_revisions', (j) => j.onRef('seg_revisions.service_id', '=', 'seg_current.service_id').onRef('seg_revisions.revision', '=', 'seg_current.revision'))
      .select(['seg_current.service_id as service_id', 'seg_current.target as target', 'seg_current.revision as revision', 'seg_revisions.stage as stage', 'seg_current.published_at as published_at'])
      .execute();
    const services = [...new Set(current.map((c) => Number(c.service_id)))].filter((s) => Number.isSafeInteger(s) && s >= 0).sort((a, b) => a - b);
    const kept = new Set(services.slice(0, this.maxSeries));
    this.omitted('snapshot_services', services.length - kept.size);
    if (kept.size === 0) return;
    // What every active machine's agent last acknowledged, per service.
    const agents = await this.d.db
      .selectFrom('agents')
      .innerJoin('machines', 'machines.id', 'agents.machine_id')
      .where('machines.status', '=', 'active')
      .select(['agents.machine_id as machine_id', 'agents.applied as applied'])
      .execute();
    const applied = new Map<string, Record<string, { revision?: unknown; ok?: unknown }>>();
    for (const a of agents) {
      try {
        applied.set(a.machine_id, JSON.parse(a.applied) as Record<string, { revision?: unknown; ok?: unknown }>);
      } catch {
        applied.set(a.machine_id, {});
      }
    }
    const activeMachines = new Set(
      (await this.d.db.selectFrom('machines').select('id').where('status', '=', 'active').execute()).map((m) => m.id),
    );
    const acked = (machine: string, service: number, revision: number): boolean => {
      const a = applied.get(machine)?.[String(service)];
      return a !== undefined && a.ok === true && typeof a.revision === 'number' && a.revision >= revision;
    };
    const targets = new Map<string, number>();
    const unacked = new Map<number, number>();
    const oldestPublished = new Map<number, number>();
    for (const c of current) {
      const service = Number(c.service_id);
      if (!kept.has(service)) continue;
      const stage = c.stage === 'canary' || c.stage === 'enforce' ? c.stage : OTHER_LABEL;
      const key = `${service}/${stage}`;
      targets.set(key, (targets.get(key) ?? 0) + 1);
      const revision = Number(c.revision);
      // Every host: each reporting active machine; one machine: it, if still active.
      const machines = c.target === ALL_HOSTS ? [...applied.keys()] : activeMachines.has(c.target) ? [c.target] : [];
      const missing = machines.filter((m) => !acked(m, service, revision)).length;
      unacked.set(service, (unacked.get(service) ?? 0) + missing);
      const published = c.published_at === null ? 0 : new Date(c.published_at).getTime() / 1000;
      oldestPublished.set(service, Math.min(oldestPublished.get(service) ?? Infinity, Number.isNaN(published) ? 0 : published));
    }
    for (const [key, n] of targets) {
      const [service, stage] = key.split('/') as [string, string];
      this.gauges.aegis_server_snapshot_targets!.set({ service, stage }, n);
    }
    for (const [service, n] of unacked) this.gauges.aegis_server_snapshot_unacked!.set({ service: String(service) }, n);
    for (const [service, t] of oldestPublished) this.gauges.aegis_server_snapshot_last_published_timestamp_seconds!.set({ service: String(service) }, t);
  }
}
